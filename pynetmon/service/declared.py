"""The declarative config of `pynetmon serve --config FILE`: what this node must run, read from YAML or
JSON, checked, and expanded into the cubes it means on the interfaces there are.

    monitors:                       # ready monitors (pynetmon/monitors), by entry name
      flows: {kind: flows, interfaces: ["eth*", "veth*"], options: {max_entries: 65536}}
      tcp:   {kind: tcp}            # a monitor on global hooks: one cube, no interface
    dynmon:                         # Polycube dataplane configs, inline or from a file
      udp:   {type: TC, interfaces: ["${NODE_IFACE}"], dataplane-config-file: udp.json}
    captures:
      web:   {interfaces: [eth0], filter: "tcp port 80", snaplen: 128}

Text flows top to bottom: file bytes → YAML (no anchors, no duplicate keys) → `${VAR}` substituted in
every string value (never evaluated by a shell; an unknown variable is an error naming it) → validated
model (ConfigError with JSON paths) → `expand()`: one `Desired` cube per entry and matching interface,
named `ENTRY.INTERFACE` (or `ENTRY` for a monitor without interface).

An interface written as a name is declared whether it exists or not (the cube waits for it); a glob
pattern (`*`, `?`, `[...]`) matches the interfaces that exist in the daemon's namespace now.
"""
from __future__ import annotations

import errno
import fnmatch
import hashlib
import json
import os
import re
import stat
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from ..errors import ConfigError
from ..validation import problems_of
from .models import MONITOR_NETNS_PATTERN, Capture, CubeType

MAX_FILE_BYTES = 4 << 20  # a config with inline C code is a few KiB; a dataplane file the same
ENTRY_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_-]{0,39}$"  # no '.': it separates entry and interface in cube names
ENTRY_RE = re.compile(ENTRY_PATTERN)
SECTIONS = ("monitors", "dynmon", "captures")
SERVICE_OF = {"monitors": "monitor", "dynmon": "dynmon", "captures": "packetcapture"}
_VARIABLE = re.compile(r"\$(\$)?\{([^}]*)\}")
_VARIABLE_NAME = re.compile(r"^([A-Za-z_][A-Za-z0-9_]*)(:-(.*))?$", re.DOTALL)

Interface = Annotated[str, Field(min_length=1, max_length=15, pattern=r"^[^/\s:]+$",
                                 description="an interface name, or a glob pattern (eth*, veth*, en[ops]*)")]


class _Entry(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid", populate_by_name=True, frozen=True)


class MonitorEntry(_Entry):
    """A ready monitor of `kind` on each interface (none for kinds on global hooks: tcp, drops)."""

    kind: str = Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")
    interfaces: list[Interface] | None = Field(None, min_length=1, max_length=64)
    netns: str | None = Field(None, pattern=MONITOR_NETNS_PATTERN)
    options: dict[str, Any] = Field(default_factory=dict)


class DynmonEntry(_Entry):
    """A Dynmon dataplane (Polycube's dataplane-config) on each interface."""

    type: CubeType = CubeType.TC
    interfaces: list[Interface] = Field(min_length=1, max_length=64)
    dataplane_config: dict[str, Any] | None = Field(None, alias="dataplane-config")
    dataplane_config_file: str | None = Field(None, alias="dataplane-config-file", min_length=1, max_length=4096,
                                              description="JSON or YAML file, relative to the config file")

    @model_validator(mode="after")
    def _one_source(self) -> DynmonEntry:
        if (self.dataplane_config is None) == (self.dataplane_config_file is None):
            raise ValueError("give exactly one of dataplane-config (inline) and dataplane-config-file")
        return self


class CaptureEntry(_Entry):
    """A packet capture on each interface, written to `--capture-dir`/DIR/CUBE-NAME (or kept for network
    clients with `networkmode`)."""

    interfaces: list[Interface] = Field(min_length=1, max_length=64)
    capture: Capture = Capture.bidirectional
    filter: str = Field("all", max_length=4096)
    snaplen: int | None = Field(None, ge=1, le=65535)
    networkmode: bool = False
    dir: str | None = Field(None, min_length=1, max_length=1024,
                            description="directory inside the capture directory for this entry's files")

    @field_validator("capture", mode="before")
    @classmethod
    def _capture(cls, value: Any) -> Any:
        if value is False:  # YAML 1.1 reads a bare `off` as false
            return Capture.off.value
        return value.lower() if isinstance(value, str) else value


class DeclaredConfig(_Entry):
    """The whole file: entries by name in each section (entry names are unique across the sections)."""

    version: Literal[1] = 1
    monitors: dict[str, MonitorEntry] = Field(default_factory=dict)
    dynmon: dict[str, DynmonEntry] = Field(default_factory=dict)
    captures: dict[str, CaptureEntry] = Field(default_factory=dict)

    def entries(self) -> list[tuple[str, str, Any]]:
        """(section, name, entry) for every entry."""
        return [(s, n, e) for s in SECTIONS for n, e in getattr(self, s).items()]


@dataclass(frozen=True)
class Desired:
    """One cube the config asks for: made by `operations.create_*` with `body`, attached to `interface`."""

    name: str
    service: str
    entry: str          # "monitors.flows": its place in the file, for errors and GET /config
    interface: str | None
    body: Mapping[str, Any] = field(compare=False)
    config_field: str = "dataplane-config"  # where a dynmon entry's dataplane is written (inline or a file)
    key: str = field(default="")  # canonical JSON of what the cube is: equal keys, unchanged cube

    def __post_init__(self):
        object.__setattr__(self, "key", json.dumps([self.service, self.interface, self.body], sort_keys=True))


@dataclass(frozen=True)
class LoadedConfig:
    """A checked config file: the model, the sha256 of its bytes, and the dataplane files it read."""

    path: Path
    config: DeclaredConfig
    sha256: str
    dataplanes: dict[str, dict[str, Any]]  # entry name → its dataplane-config (inline or read from its file)
    files: tuple[Path, ...]                # the dataplane files it names (watched with the config file)


# -- reading ------------------------------------------------------------------------------------
class _Loader(yaml.SafeLoader):
    """YAML without anchors/aliases (a few lines of aliases expand to billions of nodes) and without
    duplicate keys (YAML keeps the last one silently: a second `flows:` would hide the first)."""

    def compose_node(self, parent, index):  # PyYAML is untyped
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            raise yaml.MarkedYAMLError("while composing", None, "aliases (*name) are not supported",
                                       event.start_mark)
        event = self.peek_event()
        if getattr(event, "anchor", None) is not None:
            raise yaml.MarkedYAMLError("while composing", None, "anchors (&name) are not supported", event.start_mark)
        return super().compose_node(parent, index)

    def construct_mapping(self, node, deep=False):
        seen: set[Any] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            if isinstance(key, str) and key in seen:
                raise yaml.MarkedYAMLError("while constructing a mapping", node.start_mark,
                                           f"duplicate key {key!r}", key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep)


def read_bounded(path: Path, what: str) -> bytes:
    """The bytes of `path` (a regular file of at most MAX_FILE_BYTES); ConfigError naming `what`.
    Opened without blocking: a FIFO or device planted at the path is refused, not waited on."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as exc:
        if exc.errno == errno.EISDIR:
            raise ConfigError([(what, f"{str(path)!r} is not a regular file")]) from None
        raise ConfigError([(what, f"cannot read {str(path)!r}: {exc.strerror}")]) from None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise ConfigError([(what, f"{str(path)!r} is not a regular file")])
        with os.fdopen(fd, "rb", closefd=False) as f:
            data = f.read(MAX_FILE_BYTES + 1)
    except OSError as exc:
        raise ConfigError([(what, f"cannot read {str(path)!r}: {exc.strerror}")]) from None
    finally:
        os.close(fd)
    if len(data) > MAX_FILE_BYTES:
        raise ConfigError([(what, f"{str(path)!r} is larger than {MAX_FILE_BYTES >> 20} MiB")])
    return data


def parse_text(data: bytes, where: str = "") -> Any:
    """YAML (JSON is YAML too) → Python values; ConfigError with the line and column of a syntax error."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError([(where, f"not UTF-8 text (byte {exc.start})")]) from None
    try:
        return yaml.load(text, Loader=_Loader)  # _Loader is a SafeLoader
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        at = f" at line {mark.line + 1} column {mark.column + 1}" if mark is not None else ""
        raise ConfigError([(where, f"not valid YAML or JSON: {exc.problem}{at}")]) from None
    except (yaml.YAMLError, RecursionError) as exc:
        raise ConfigError([(where, f"not valid YAML or JSON: {exc}")]) from None


def substitute(value: Any, environ: Mapping[str, str], path: str = "") -> Any:
    """`value` with `${NAME}` (or `${NAME:-default}`) in every string replaced by the variable's value,
    and `$${` by a literal `${`. Only strings change: a value never becomes YAML, a number or a command.
    ConfigError naming the JSON path and the variable when it is not set."""
    if isinstance(value, str):
        def replace(m: re.Match) -> str:
            if m.group(1):  # $${...}: escaped
                return "${" + m.group(2) + "}"
            spec = _VARIABLE_NAME.match(m.group(2))
            if spec is None:
                reason = (f"${{{m.group(2)}}} is not a variable reference (${{NAME}} or ${{NAME:-default}}; "
                          "write $${ for a literal ${)")
                raise ConfigError([(path, reason)])
            name, default = spec.group(1), spec.group(3)
            if name in environ:
                return environ[name]
            if spec.group(2) is not None:
                return default or ""
            raise ConfigError([(path, f"unknown environment variable {name} (in ${{{name}}}); set it in the "
                                      "daemon's environment, give a default as ${" + name + ":-VALUE}, or "
                                      "write $${ for a literal ${")])
        return _VARIABLE.sub(replace, value)
    if isinstance(value, list):
        return [substitute(v, environ, f"{path}[{i}]") for i, v in enumerate(value)]
    if isinstance(value, dict):
        return {k: substitute(v, environ, f"{path}.{k}" if path else str(k)) for k, v in value.items()}
    return value


def check(doc: Any, environ: Mapping[str, str]) -> DeclaredConfig:
    """The validated config of a parsed document; ConfigError listing every problem with its JSON path."""
    if doc is None:
        doc = {}
    if not isinstance(doc, dict):
        raise ConfigError([("", f"the config must be a mapping (monitors:, dynmon:, captures:), not {type(doc).__name__}")])
    problems: list[tuple[str, str]] = []
    owner: dict[str, str] = {}
    for section in SECTIONS:
        entries = doc.get(section)
        if entries is None:
            continue
        if not isinstance(entries, dict):
            problems.append((section, f"must be a mapping of entry names to entries, not {type(entries).__name__}"))
            continue
        for name in entries:
            if not isinstance(name, str) or not ENTRY_RE.match(name):
                problems.append((f"{section}.{name}",
                                 f"{name!r} is not a valid entry name (pattern {ENTRY_PATTERN}: it starts cube names)"))
            elif name in owner:
                reason = (f"the name is also used in {owner[name]}.{name} (cube names are unique across monitors, "
                          "dynmon and captures)")
                problems.append((f"{section}.{name}", reason))
            else:
                owner[name] = section
    if problems:
        raise ConfigError(problems)
    doc = substitute(doc, environ)
    try:
        text = json.dumps(doc)
    except (TypeError, ValueError) as exc:  # YAML dates, sets, ...: not JSON values
        raise ConfigError([("", f"only JSON values are allowed (strings, numbers, booleans, lists, mappings): {exc}")]) \
            from None
    try:
        # As JSON text: strict types, with enum members given as their strings.
        return DeclaredConfig.model_validate_json(text, strict=True)
    except ValidationError as exc:
        raise ConfigError(problems_of(exc)) from None


def load(path: Path, environ: Mapping[str, str] | None = None) -> LoadedConfig:
    """Read, parse, substitute and validate the config file at `path`, and the dataplane files it names
    (relative to its directory). Checks that need no kernel: monitor kinds and options, dataplane-config
    structure, capture settings. ConfigError with JSON paths on any problem."""
    environ = os.environ if environ is None else environ
    data = read_bounded(path, "")
    config = check(parse_text(data), environ)
    problems: list[tuple[str, str]] = []
    dataplanes: dict[str, dict[str, Any]] = {}
    files: list[Path] = []
    hasher = hashlib.sha256(data)
    for name, entry in config.dynmon.items():
        where = f"dynmon.{name}"
        try:
            if entry.dataplane_config_file is not None:
                file = (path.parent / entry.dataplane_config_file)
                files.append(file)
                where += ".dataplane-config-file"
                raw = read_bounded(file, where)
                hasher.update(raw)
                dataplane = parse_text(raw, where)
            else:
                where += ".dataplane-config"
                dataplane = entry.dataplane_config
            _check_dataplane(dataplane, where)
            dataplanes[name] = dataplane
        except ConfigError as exc:
            problems += exc.problems
    for name, monitor in config.monitors.items():
        problems += _monitor_problems(name, monitor)
    if problems:
        raise ConfigError(problems)
    return LoadedConfig(path, config, hasher.hexdigest(), dataplanes, tuple(files))


def _check_dataplane(dataplane: Any, where: str) -> None:
    from ..dynmon.config import parse_config
    if not isinstance(dataplane, dict):
        raise ConfigError([(where, f"must be a mapping (Polycube's dataplane-config), not {type(dataplane).__name__}")])
    try:
        parse_config(dataplane, strict=True)
    except ConfigError as exc:
        raise ConfigError([(_join(where, p), r) for p, r in exc.problems]) from None


def _monitor_problems(name: str, entry: MonitorEntry) -> list[tuple[str, str]]:
    from ..monitors import registry as kinds
    where = f"monitors.{name}"
    try:
        cls = kinds.get(entry.kind)
    except ConfigError as exc:
        return [(_join(where, p), r) for p, r in exc.problems]
    if cls.needs_interface and not entry.interfaces:
        return [(f"{where}.interfaces", f"the {entry.kind} monitor needs interfaces (names or patterns)")]
    if entry.interfaces and entry.netns and any(is_pattern(i) for i in entry.interfaces):
        reason = "patterns match interfaces of the daemon's namespace; with netns, name the interfaces exactly"
        return [(f"{where}.interfaces", reason)]
    try:
        cls.parse_options(entry.options)
    except ConfigError as exc:
        return [(_join(where, p), r) for p, r in exc.problems]
    return []


def _join(prefix: str, path: str) -> str:
    if not path:
        return prefix
    return prefix + path if path.startswith("[") else f"{prefix}.{path}"


# -- expansion ----------------------------------------------------------------------------------
def is_pattern(interface: str) -> bool:
    """True for a glob pattern (`*`, `?`, `[`), which matches existing interfaces; a name is declared as is."""
    return any(c in interface for c in "*?[")


def cube_name(entry: str, interface: str | None) -> str:
    """`ENTRY.INTERFACE` (at most 40 + 1 + 15 characters, within the cube-name pattern); characters an
    interface name may hold but a cube name may not become '_', with a short hash of the interface name
    appended so that two interfaces never share a cube."""
    if interface is None:
        return entry
    safe = re.sub(r"[^A-Za-z0-9_.-]", "_", interface)
    name = f"{entry}.{safe}"
    if safe != interface:
        name += "-" + hashlib.sha256(interface.encode()).hexdigest()[:6]
    return name


def matching(interfaces: list[str] | None, present: list[str]) -> list[str | None]:
    """The interfaces an entry declares: its names, and the present interfaces its patterns match."""
    if not interfaces:
        return [None]
    out: list[str | None] = []
    for item in interfaces:
        found = [p for p in present if fnmatch.fnmatchcase(p, item)] if is_pattern(item) else [item]
        out += [f for f in found if f not in out]
    return out


def expand(loaded: LoadedConfig, present: list[str]) -> dict[str, Desired]:
    """Every cube the config asks for, given the interfaces `present` in the daemon's namespace."""
    config = loaded.config
    out: dict[str, Desired] = {}
    body: dict[str, Any]
    for name, monitor in config.monitors.items():
        for interface in matching(monitor.interfaces, present):
            body = {"kind": monitor.kind, "interface": interface, "netns": monitor.netns, "options": monitor.options}
            _add(out, Desired(cube_name(name, interface), "monitor", f"monitors.{name}", interface,
                              {k: v for k, v in body.items() if v is not None}))
    for name, dynmon in config.dynmon.items():
        for interface in matching(dynmon.interfaces, present):
            body = {"type": dynmon.type.value, "dataplane-config": loaded.dataplanes[name]}
            source = "dataplane-config-file" if dynmon.dataplane_config_file is not None else "dataplane-config"
            _add(out, Desired(cube_name(name, interface), "dynmon", f"dynmon.{name}", interface, body, source))
    for name, capture in config.captures.items():
        for interface in matching(capture.interfaces, present):
            cube = cube_name(name, interface)
            body = {"capture": capture.capture.value, "filter": capture.filter, "networkmode": capture.networkmode}
            if capture.snaplen is not None:
                body["snaplen"] = capture.snaplen
            if not capture.networkmode:
                body["dump"] = f"{capture.dir}/{cube}" if capture.dir else cube
            _add(out, Desired(cube, "packetcapture", f"captures.{name}", interface, body))
    return out


def _add(out: dict[str, Desired], desired: Desired) -> None:
    # Distinct (entry, interface) pairs give distinct names (cube_name); a repeat is the same cube.
    out.setdefault(desired.name, desired)

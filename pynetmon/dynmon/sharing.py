"""Which maps the ingress and the egress path share: Polycube's (BCC's) rules.

Polycube loads each path as its own BCC module, so a map declared in both paths under one name is two
maps, unless the code says otherwise (BCC's `helpers.h` and `b_frontend_action.cc`; Polycube's cubes give
both paths one maps namespace):

* `BPF_TABLE_SHARED(...)` / `_PUBLIC` (and `BPF_QUEUESTACK_SHARED`/`_PUBLIC`): the map is visible to the
  other path, which uses it by declaring `BPF_TABLE("extern", K, V, NAME, N)`. Two `_SHARED` declarations
  of one name are two maps (each declaration creates its map), as in BCC.
* `BPF_TABLE_PINNED(..., "/sys/fs/bpf/PATH")`: the map pinned at PATH (created and pinned when there is
  none), so every declaration of that path, in any path, monitor or process, is one map.
* plain declarations (`BPF_TABLE`, `BPF_ARRAY`, ...): private to their path.

libbpf-style maps (BTF map definitions, in either dialect) keep pynetmon's rule: a map of the same name in
both paths is one map (there is no `extern` in libbpf C); they pair with `_SHARED`/`_PUBLIC`/`extern` maps
of a Polycube-style path too.
"""
from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from ..errors import ConfigError
from ..maps import Map
from .dialect import EXTERN, MapDecl

__all__ = ["LIBBPF", "SELF", "MapScope", "SharedMap", "check_pin_path", "configure_pins", "scopes_of", "shares"]

PIN_ROOT = "/sys/fs/bpf"
_pin_root = PIN_ROOT  # where configs may pin: configure_pins()
_PIN_COMPONENT = re.compile(r"[A-Za-z0-9_.-]{1,200}")
_VISIBLE = frozenset({"shared", "public", EXTERN, "libbpf"})  # the other path may use it
_WANTS = frozenset({EXTERN, "libbpf"})                         # uses the other path's map of its name


@dataclass(frozen=True)
class MapScope:
    """How a path declared a map: `kind` is local, shared, public, pinned, extern, libbpf (a BTF map
    definition) or self (the same path rebuilt: every map is kept); `line` its line in the code (0:
    unknown); `pin` the BPF file system path of a pinned map."""

    kind: str
    line: int = 0
    pin: str = ""


LIBBPF = MapScope("libbpf")
SELF = MapScope("self")


@dataclass(frozen=True)
class SharedMap:
    """A map another path offers, and how that path declared it."""

    map: Map
    scope: MapScope


def scopes_of(decls: Iterable[MapDecl], names: Iterable[str]) -> dict[str, MapScope]:
    """The scope of each of the object's user maps `names` (a map no BCC macro declared is libbpf-style)."""
    by_name = {d.name: MapScope(d.scope, d.line, d.pin) for d in decls}
    return {name: by_name.get(name, LIBBPF) for name in names}


def shares(mine: MapScope, theirs: MapScope) -> bool:
    """True when a map declared as `mine` is the other path's map declared as `theirs` (same name)."""
    if theirs.kind == "self":
        return True
    return (mine.kind in _WANTS and theirs.kind in _VISIBLE) or (mine.kind in _VISIBLE and theirs.kind in _WANTS)


def configure_pins(root: str = PIN_ROOT) -> str:
    """Confine the pin paths of `_PINNED` maps to directory `root` of the BPF file system (process-wide;
    `pynetmon serve --pin-root`). The default, /sys/fs/bpf, lets a config use any pinned map there, as
    BCC does, including other programs' maps; a subdirectory keeps configs to their own pins."""
    global _pin_root
    if root != PIN_ROOT:
        check_pin_path(root, "pin root", PIN_ROOT)
    _pin_root = root
    return root


def check_pin_path(path: str, where: str, root: str | None = None) -> str:
    """A pin path a config may use: absolute, normalised, under the pin root (/sys/fs/bpf unless
    configured), plain names (the daemon runs as root: a path must not climb out of the BPF file system or
    name a file anywhere else)."""
    root = root or _pin_root
    reason = None
    parts = path.split("/")
    if not path.startswith(root + "/") or os.path.normpath(path) != path:
        reason = f"must be a normalised absolute path under {root}/"
    elif len(parts) > 8 or not all(_PIN_COMPONENT.fullmatch(p) and p not in (".", "..") for p in parts[4:]):
        reason = "may only have up to 5 components of letters, digits, '_', '-' and '.' below " + PIN_ROOT
    elif len(path) > 240:
        reason = "is too long"
    if reason:
        raise ConfigError([(where, f"pin path {path!r} {reason}")])
    return path


def reuse_problem(name: str, mine: MapScope, spec, existing: Map, shared_origin: str) -> str | None:
    """Why `spec` (this path's declaration of `name`) cannot be `existing`, or None."""
    theirs = (existing.type, existing.key_size, existing.value_size, existing.max_entries)
    if mine.kind == EXTERN:  # BCC takes the defining map as it is; only the key and value must fit the code
        if (spec.key_size, spec.value_size) == (existing.key_size, existing.value_size) or \
                (existing.type in ("queue", "stack") and spec.value_size == existing.value_size):
            return None
        return (f"extern map {name!r} is declared here with key {spec.key_size} B and value {spec.value_size} B "
                f"but {shared_origin} defines it as {_describe(*theirs)}")
    if (spec.type, spec.key_size, spec.value_size, spec.max_entries) == theirs:
        return None
    return (f"map {name!r} is defined here as {_describe(spec.type, spec.key_size, spec.value_size, spec.max_entries)}"
            f" but in {shared_origin} as {_describe(*theirs)}; a map shared between the paths must be declared "
            "alike in both")


def undefined_extern(name: str, mine: MapScope, offered: Mapping[str, SharedMap]) -> str:
    """The error for an `extern` map the other path does not offer (BCC: "reference to undefined table")."""
    theirs = offered.get(name)
    why = (f"the other path declares it {theirs.scope.kind}; extern needs a _SHARED or _PUBLIC declaration "
           "(BPF_TABLE_SHARED, BPF_ARRAY_SHARED, ...)") if theirs else "the other path does not declare it"
    return f"reference to undefined table {name!r} (declared \"extern\"): {why}"


def _describe(type_: str, key_size: int, value_size: int, max_entries: int) -> str:
    return f"{type_} (key {key_size} B, value {value_size} B, {max_entries} entries)"

"""The one shape every ready monitor has: validated options, start/close, a snapshot, metric families.

A monitor is one C file (`bpf/monitors/KIND.bpf.c`), one header shared with Python
(`bpf/monitors/KIND.h`) and one Python module (`pynetmon/monitors/KIND.py`) holding a `Monitor` subclass
decorated with `@register`. Everything that reads monitors — the library's `monitors.open()`, the CLI
(`pynetmon monitor KIND`), the service (`/monitors/NAME`), `top`, the state file — knows them only
through this class, so a new monitor never touches a shared file.

>>> from pynetmon import monitors
>>> with monitors.open("flows", interface="eth0", netns="h1", top=10) as m:
...     ...
...     m.snapshot()["flows"]
"""
from __future__ import annotations

import abc
import threading
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, ClassVar, Self

from prometheus_client.core import Metric
from pydantic import BaseModel, ConfigDict

from ..errors import ConfigError, Error, NotSupportedError
from ..link.base import Link
from ..object import BPFObject
from ..validation import validate
from . import selfcost


class MonitorOptions(BaseModel):
    """Base of every monitor's options: unknown options are refused and types are strict (`"10"` is not
    a number), so a typo never silently falls back to a default. Subclasses add their fields with
    defaults and bounds (`Field(16384, ge=1, le=1 << 22)`)."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


@dataclass(frozen=True)
class CliFlag:
    """A command-line flag of one monitor kind (`pynetmon monitor ddos --blacklist IP SECONDS`): a
    shorthand that adds to the options. `apply(options, values)` is called once per occurrence with
    the flag's values as typed and changes `options` in place; it raises a ConfigError naming the flag
    for a bad value."""

    flag: str
    """`--blacklist`: unique over all kinds."""
    metavar: tuple[str, ...]
    """The values it takes, e.g. ("IP", "SECONDS")."""
    help: str
    apply: Callable[[dict[str, Any], list[str]], None]


class Monitor(abc.ABC):
    """A ready monitor. Subclasses set the class attributes, implement `_start`, `snapshot` and
    `families`, and keep what they load and attach through `_own` and `_keep`, so that `close()` removes
    exactly what they added (links first, in reverse order, then objects)."""

    kind: ClassVar[str]
    """The registry name: `pynetmon monitor KIND`, `{"kind": KIND}` in REST bodies."""
    summary: ClassVar[str]
    """One line: what it watches and how (shown by `available()` and `pynetmon monitor --list`)."""
    Options: ClassVar[type[MonitorOptions]] = MonitorOptions
    live_options: ClassVar[frozenset[str]] = frozenset()
    """Options `update()` may change while the monitor runs (the others need a restart)."""
    cli_flags: ClassVar[tuple[CliFlag, ...]] = ()
    """Shorthand flags of `pynetmon monitor KIND` (the article's controller flags), each adding options."""
    actions: ClassVar[Mapping[str, type[MonitorOptions]]] = MappingProxyType({})
    """Run-time operations beyond options (`m.block(...)`; REST `POST /monitors/NAME/ACTION`): the method's
    name → the model of its keyword arguments. `act()` validates and runs one."""
    needs_interface: ClassVar[bool] = True
    """False for monitors on global hooks (tracepoints, fentry), which take `netns` as a filter instead."""

    def __init__(self, interface: str | None = None, netns: str | None = None,
                 options: MonitorOptions | Mapping[str, Any] | None = None):
        if self.needs_interface and not interface:
            raise ConfigError([("interface", f"the {self.kind} monitor needs an interface")])
        self.interface = interface
        self.netns = netns
        self.options: MonitorOptions = self.parse_options(options)
        self.objects: list[BPFObject] = []
        self.links: list[Link] = []
        self.lock = threading.RLock()
        self._started = False

    # -- options -------------------------------------------------------------------------------
    @classmethod
    def parse_options(cls, options: MonitorOptions | Mapping[str, Any] | None) -> MonitorOptions:
        """Validated options; a ConfigError names every bad one as `options.NAME`."""
        if isinstance(options, cls.Options):
            return options
        if options is not None and not isinstance(options, Mapping):
            raise ConfigError([("options", f"must be an object, not {type(options).__name__}")])
        return validate(cls.Options, dict(options or {}), prefix="options")

    # -- life ----------------------------------------------------------------------------------
    def start(self) -> Self:
        """Load and attach. On failure everything added so far is removed again and the error raised."""
        with self.lock:
            if self._started:
                raise Error(f"{self.kind} monitor is already started")
            try:
                self._start()
            except BaseException:
                self._release()
                raise
            selfcost.STATS.acquire()
            self._started = True
        return self

    def close(self) -> None:
        """Detach and unload everything this monitor added. Safe to call twice."""
        with self.lock:
            try:
                self._stop()
                self._release()
            finally:
                if self._started:
                    selfcost.STATS.release()
                self._started = False

    @property
    def started(self) -> bool:
        return self._started

    def __enter__(self) -> Self:
        if not self._started:
            self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @abc.abstractmethod
    def _start(self) -> None:
        """Load the object(s) (setting `const volatile` knobs from the options first) and attach them,
        registering each with `_own`/`_keep` as soon as it exists."""

    def _stop(self) -> None:
        """Hook for work before the links and objects go (stopping reader threads, health checkers)."""

    def _own(self, obj: BPFObject) -> BPFObject:
        self.objects.append(obj)
        return obj

    def _keep(self, link: Link) -> Link:
        self.links.append(link)
        return link

    def _release(self) -> None:
        errors = []
        while self.links:
            link = self.links.pop()
            try:
                link.detach()
            except Error as exc:  # keep going: the rest must still be removed
                errors.append(exc)
        while self.objects:
            self.objects.pop().close()
        if errors:
            raise errors[0]

    # -- reading -------------------------------------------------------------------------------
    @abc.abstractmethod
    def snapshot(self) -> dict[str, Any]:
        """A plain JSON-serialisable dict (the schema is each monitor's contract), with the monitor's
        own cost under `"self"`."""

    @abc.abstractmethod
    def families(self) -> list[Metric]:
        """The monitor's metric families (prometheus_client), without a monitor label: the service adds
        `monitor="NAME"` to every sample."""

    def self_cost(self) -> dict[str, Any]:
        """What this monitor costs the kernel (`snapshot()["self"]`): run_count, run_time_ns (null when
        the kernel is not counting, with the reason in `stats`), maps_bytes, and per program."""
        return selfcost.cost(self.objects)

    def self_families(self, cost: dict[str, Any] | None = None) -> list[Metric]:
        """The self-metrics families (pynetmon_program_run_seconds_total{program}, ...) of `cost`
        (measured now when not given); monitors append them to `families()`."""
        return selfcost.families(cost if cost is not None else self.self_cost())

    def open_metrics(self) -> str:
        """The families in the OpenMetrics text format."""
        from .exposition import render_openmetrics
        return render_openmetrics(self.families())

    def act(self, action: str, args: Mapping[str, Any] | None) -> Any:
        """Run the action `action` (one of `actions`) with `args` validated by its model: a ConfigError
        names an unknown action or a bad argument (`args.cidr`). Returns what the method returns."""
        model = self.actions.get(action)
        if model is None:
            known = ", ".join(sorted(self.actions)) or "none"
            raise ConfigError([("action", f"{self.kind} has no action {action!r} (actions: {known})")])
        if args is not None and not isinstance(args, Mapping):
            raise ConfigError([("args", f"must be an object, not {type(args).__name__}")])
        validated = validate(model, dict(args or {}), prefix="args")
        return getattr(self, action)(**{name: getattr(validated, name) for name in type(validated).model_fields})

    def runtime_state(self) -> dict[str, Any] | None:
        """What `actions` changed that the options do not hold (the service's state file keeps it, so a
        restarted daemon puts it back with `restore_runtime_state`); None when nothing."""
        return None

    def restore_runtime_state(self, state: Mapping[str, Any]) -> None:
        """Put back what `runtime_state()` returned, in a monitor started with the same options."""

    def update(self, **options: Any) -> None:
        """Change `live_options` while running, all or nothing: the merged options are validated first,
        and a change of any other option is refused naming it (that needs a new monitor)."""
        new = self.parse_options({**self.options.model_dump(), **options})
        live = ", ".join(sorted(self.live_options)) or "none"
        fixed = [(f"options.{k}", f"cannot change while running (live options: {live})")
                 for k in sorted(options) if k not in self.live_options and getattr(new, k) != getattr(self.options, k)]
        if fixed:
            raise ConfigError(fixed)
        with self.lock:
            self.options = new

    def events(self, timeout: float | None = None) -> Iterator[dict[str, Any]]:
        """A stream of events (state changes, blocks, triggers), for monitors that emit them."""
        raise NotSupportedError(f"the {self.kind} monitor emits no events")

    def output_files(self) -> list[tuple[str, str]]:
        """Files the options make this monitor write, as (JSON path of the option, file path), so that a
        host running monitors for others (the service, as root) can confine them to its directory."""
        return []

    def describe(self) -> dict[str, Any]:
        """What rebuilds this monitor (the state file, `GET /monitors/NAME`'s config part)."""
        return {"kind": self.kind, "interface": self.interface, "netns": self.netns,
                "options": self.options.model_dump(mode="json")}

    def _repr_html_(self) -> str:
        """Jupyter's rich display: the current snapshot as a compact table (pynetmon/frames/html.py)."""
        from ..frames.html import snapshot_html, table_html
        if not self._started:
            return table_html(["state"], [["not started"]], repr(self))
        try:
            return snapshot_html(self.snapshot(), repr(self))
        except Error as exc:  # a display must not fail the notebook cell
            return table_html(["error"], [[str(exc)]], repr(self))

    def __repr__(self) -> str:
        where = f" on {self.interface}" if self.interface else ""
        ns = f" in {self.netns}" if self.netns else ""
        return f"<{type(self).__name__} {self.kind}{where}{ns}{' started' if self._started else ''}>"

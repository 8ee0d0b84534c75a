"""A ready monitor (pynetmon.monitors) hosted by the daemon: `POST /monitors/NAME {"kind", "interface",
"netns", "options"}`. It attaches when created and detaches when deleted (Polycube's attach/detach do
not apply); its metrics carry `monitor="NAME"`, and the state file keeps what rebuilds it."""
from __future__ import annotations

import contextlib
import logging
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

from prometheus_client.core import Metric

from ..monitors import Monitor, create
from ..monitors.exposition import with_labels
from .cube import Cube
from .problems import ApiError, bad_request, from_exception

log = logging.getLogger("pynetmon.service")


def confine(monitor: Monitor, directory: Path) -> None:
    """Refuse a monitor whose options would make the daemon (root) write outside `directory`, as packet
    captures are confined: a REST client must not overwrite arbitrary files."""
    base = directory.resolve()
    for option, path in monitor.output_files():
        resolved = Path(path).resolve()
        if base not in resolved.parents:
            raise bad_request(option, f"{path!r} is outside the daemon's capture directory {str(base)!r}")


class MonitorCube(Cube):
    """A named, started monitor of some kind."""

    service = "monitor"

    def __init__(self, name: str, kind: str, interface: str | None, netns: str | None,
                 options: dict[str, Any] | None, capture_dir: Path | None = None, *, wait: bool = False):
        super().__init__(name, netns)
        self._capture_dir = capture_dir
        self._spec: dict[str, Any] = {"kind": kind, "interface": interface, "netns": netns, "options": options}
        self._monitor: Monitor | None = None  # None while it waits for its interface
        # what the monitor's actions changed (Monitor.runtime_state), kept while no monitor runs
        self._runtime: dict[str, Any] | None = None
        if interface is not None:  # watched like any cube's: stopped when it vanishes, started when back
            self.wanted = interface
            if wait and not self._index_of(interface):
                return  # restored from the state file before its interface exists: started when it appears
        self._attach_monitor(interface)
        if interface is not None:
            self.port, self._ifindex = interface, self._index_of(interface)

    @property
    def monitor(self) -> Monitor:
        """The running monitor; ApiError(409) while it waits for its interface."""
        if self._monitor is None:
            raise ApiError(409, f"monitor {self.name!r} is waiting for interface {self.wanted!r}",
                           [("interface", "does not exist now")])
        return self._monitor

    def _attach_monitor(self, interface: str | None) -> None:
        spec = self._spec
        self._monitor = self._start(spec["kind"], interface, spec["netns"], spec["options"], self._capture_dir)
        self._spec = self._monitor.describe()  # the options with their defaults
        if self._runtime:
            self._restore_runtime(self._monitor, self._runtime)

    def _restore_runtime(self, monitor: Monitor, runtime: dict[str, Any]) -> None:
        try:
            monitor.restore_runtime_state(runtime)
        except Exception as exc:  # noqa: BLE001 - the monitor runs with its options; say what is missing
            log.error("monitor %r: cannot restore its run-time state %r: %s", self.name, runtime, exc)

    def restore_runtime(self, runtime: dict[str, Any] | None) -> None:
        """Put back what the monitor's actions had changed (the state file's `runtime`), now or when its
        interface appears."""
        with self.lock:
            self._runtime = runtime if isinstance(runtime, dict) else None
            if self._monitor is not None and self._runtime:
                self._restore_runtime(self._monitor, self._runtime)

    def act(self, action: str, args: Any) -> Any:
        """Run one of the monitor's actions (`POST /monitors/NAME/ACTION`)."""
        with self.lock:
            try:
                result = self.monitor.act(action, args)
            except Exception as exc:
                raise from_exception(exc) from exc
            log.info("monitor %r: %s %s", self.name, action, args)
            return result

    @staticmethod
    def _start(kind: str, interface: str | None, netns: str | None, options: dict[str, Any] | None,
               capture_dir: Path | None = None) -> Monitor:
        try:
            monitor = create(kind, interface, netns, options)
            if capture_dir is not None:
                confine(monitor, capture_dir)
            monitor.start()
        except Exception as exc:
            raise from_exception(exc) from exc
        return monitor

    @property
    def kind(self) -> str:
        return str(self._spec["kind"])

    def type_name(self) -> str:
        return self.kind

    def in_netns(self) -> AbstractContextManager[None]:
        return contextlib.nullcontext()  # the monitor attaches in (or filters by) its namespace itself

    def attach(self, port: str, alias: str | None = None) -> None:
        raise ApiError(409, f"monitor {self.name!r} attaches when it is created (POST /monitors/{self.name} "
                            "with an interface); delete and create it to move it", [("cube", "is a monitor")])

    def detach(self, port: str | None = None) -> None:
        self.attach("")

    def _attach(self, port: str) -> None:
        # Only the interface watcher comes here: the interface it was created on is (back) there.
        self._attach_monitor(port)

    def _detach(self) -> None:
        self._close()  # its interface is gone; a new monitor starts when it is back

    def _close(self) -> None:
        if self._monitor is not None:
            monitor, self._monitor = self._monitor, None
            self._runtime = monitor.runtime_state()  # back when the interface is
            monitor.close()

    def describe(self) -> dict[str, Any]:
        """{"name", "kind", "interface", "netns", "options"} (the options with their defaults)."""
        return {"name": self.name, **(self._monitor.describe() if self._monitor is not None else self._spec)}

    def info(self) -> dict[str, Any]:
        return {**super().info(), **self.describe()}

    def snapshot(self) -> dict[str, Any]:
        """What the state file keeps (the options as given plus defaults: a restart rebuilds the same), and
        under `runtime` what the monitor's actions changed (blocks made with POST /monitors/NAME/block)."""
        spec = self._monitor.describe() if self._monitor is not None else dict(self._spec)
        runtime = self._monitor.runtime_state() if self._monitor is not None else self._runtime
        return {**spec, "runtime": runtime} if runtime else spec

    def read(self) -> dict[str, Any]:
        """The monitor's snapshot, with what it is under "monitor"."""
        try:
            return {**self.monitor.snapshot(), "monitor": self.describe()}
        except Exception as exc:
            raise from_exception(exc) from exc

    def update(self, options: dict[str, Any]) -> None:
        """Change live options (all or nothing; the others need a new monitor)."""
        with self.lock:
            try:
                self.monitor.update(**options)
            except Exception as exc:
                raise from_exception(exc) from exc
            log.info("monitor %r: %s", self.name, ", ".join(f"{k}={v!r}" for k, v in options.items()))

    def families(self) -> list[Metric]:
        """The monitor's families, every sample labelled `monitor="NAME"` (none while it waits)."""
        if self._monitor is None:
            return []
        return with_labels(self._monitor.families(), {"monitor": self.name})

"""The daemon's cubes by name. Names are unique across services, as in Polycube.

Creating a cube reserves its name first and builds it outside the registry lock (building compiles and
loads code, which takes a while), so other requests are never held up by a slow create.
"""
from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, overload

from .. import limits as memory_limits
from ..errors import ResourceLimitError
from . import state_file
from .config import Limits
from .cube import Cube
from .models import check_name
from .problems import ApiError, from_exception, not_found

if TYPE_CHECKING:
    from .capture_cube import CaptureCube
    from .dynmon_cube import DynmonCube
    from .monitor_cube import MonitorCube

log = logging.getLogger("pynetmon.service")

class _Reserved:
    """A name taken by a cube being built (its service, when the creator said, counts against limits)."""

    def __init__(self, service: str | None):
        self.service = service


class Registry:
    """Named cubes; `netns` is where they attach; `state_path` (optional) keeps them across restarts."""

    def __init__(self, netns: str | None = None, state_path: Path | None = None,
                 capture_dir: Path = Path("/tmp/pynetmon"), limits: Limits | None = None):
        self.netns = netns
        self.limits = limits or Limits()
        # Every cube's account has this one as its parent: the daemon's total and its ring buffer size.
        self.memory = memory_limits.MemoryAccount(
            "the daemon", self.limits.kernel_memory, max_ring_bytes=self.limits.ring_bytes,
            option="`pynetmon serve --max-kernel-memory`", limit_name="kernel memory in total",
            ring_option="`pynetmon serve --max-ring-bytes`")
        self.capture_dir = capture_dir
        self.state_path = state_path
        self._cubes: dict[str, Any] = {}
        # State-file entries that could not be restored (their code no longer compiles, ...): written back
        # unchanged, so that a restart never silently loses them, until a cube of that name is created.
        self.unrestored: list[dict[str, Any]] = []
        self._lock = threading.RLock()
        self._save_lock = threading.Lock()

    # -- lookup ------------------------------------------------------------------------------
    # The service names the cube class, so callers get the right type without casts.
    @overload
    def get(self, name: str, service: Literal["dynmon"]) -> DynmonCube: ...
    @overload
    def get(self, name: str, service: Literal["packetcapture"]) -> CaptureCube: ...
    @overload
    def get(self, name: str, service: Literal["monitor"]) -> MonitorCube: ...
    @overload
    def get(self, name: str, service: str | None = None) -> Cube: ...

    def get(self, name: str, service: str | None = None) -> Cube:
        """The cube named `name` (of `service`, if given), or ApiError(404)."""
        with self._lock:
            cube = self._cubes.get(name)
        if cube is None or isinstance(cube, _Reserved) or (service and cube.service != service):
            raise not_found(f"{service or 'cube'} {name!r}")
        return cube

    @overload
    def cubes(self, service: Literal["dynmon"]) -> list[DynmonCube]: ...
    @overload
    def cubes(self, service: Literal["packetcapture"]) -> list[CaptureCube]: ...
    @overload
    def cubes(self, service: Literal["monitor"]) -> list[MonitorCube]: ...
    @overload
    def cubes(self, service: str | None = None) -> list[Cube]: ...

    def cubes(self, service: str | None = None) -> Sequence[Cube]:
        """Every cube (of `service`, if given)."""
        with self._lock:
            found = [c for c in self._cubes.values() if not isinstance(c, _Reserved)]
        return [c for c in found if service is None or c.service == service]

    def __iter__(self) -> Iterator[Cube]:
        return iter(self.cubes())

    # -- changes -----------------------------------------------------------------------------
    def create(self, name: str, build: Callable[[], Cube], service: str | None = None,
               owner: tuple[str, str] | None = None) -> Cube:
        """Register the cube `build()` returns under `name`; 409 if the name is taken, 507 when the
        number of cubes of its kind (`service`, checked again on the built cube) is at its limit.
        Whatever `build()` loads is charged to the cube's own kernel-memory account. `owner`: (config
        file, entry) of a declared cube (`pynetmon serve --config`), which REST requests cannot change."""
        check_name(name)
        with self._lock:
            if name in self._cubes:
                existing = self._cubes[name]
                what = "being created" if isinstance(existing, _Reserved) else f"a {existing.service} cube"
                if not isinstance(existing, _Reserved) and existing.owner:
                    what += f" declared in the config file {existing.owner} ({existing.entry})"
                raise ApiError(409, f"there is already a cube named {name!r} ({what})",
                               [("name", "already exists")])
            if service is not None:
                self._check_count(service, name)
            self._cubes[name] = _Reserved(service)
        account = memory_limits.MemoryAccount(f"{service or 'cube'} {name!r}", self.limits.monitor_memory,
                                              parent=self.memory, option="`pynetmon serve --max-monitor-memory`")
        try:
            with account:
                cube = build()
            with self._lock:
                try:
                    self._check_count(cube.service, name)
                except BaseException:
                    cube.close()
                    raise
        except BaseException as exc:
            with self._lock:
                del self._cubes[name]
            if isinstance(exc, Exception):
                raise from_exception(exc) from exc
            raise
        cube.memory = account
        if owner is not None:
            cube.owner, cube.entry = owner
        with self._lock:
            self._cubes[name] = cube
        log.info("created %s %r", cube.service, name)
        self.save()
        return cube

    def _check_count(self, service: str, name: str) -> None:
        # Called with the lock held; `name` is not counted (it may be reserved already).
        capture = service == "packetcapture"
        limit = self.limits.captures if capture else self.limits.monitors
        count = sum(1 for n, c in self._cubes.items()
                    if n != name and c.service is not None and (c.service == "packetcapture") == capture)
        if count >= limit:
            kind = "captures" if capture else "monitors"
            raise ResourceLimitError(kind, f"{service} {name!r}", count + 1, limit, f"--max-{kind}",
                                     detail=f"{count} {kind} exist", unit=kind)

    def check_owner(self, cube: Cube, owner: str | None = None) -> Cube:
        """`cube` if `owner` may change it: a declared cube only by its config file (the reload), a REST
        cube only through REST (owner None); ApiError(409) naming the config file otherwise."""
        if cube.owner != owner:
            if cube.owner is None:
                raise ApiError(409, f"{cube.service} {cube.name!r} was made through the REST API; the config "
                                    "file does not change it", [("name", "made through the REST API")])
            raise ApiError(409, f"{cube.service} {cube.name!r} is declared in the config file {cube.owner} "
                                f"({cube.entry}); change it there (the daemon re-applies the file when it "
                                "changes)", [("name", f"declared in {cube.owner}")])
        return cube

    def get_mutable(self, name: str, service: str | None = None) -> Any:
        """The cube, for a REST request that changes it: 404 when missing, 409 when a config file owns it."""
        return self.check_owner(self.get(name, service))

    def delete(self, name: str, service: str | None = None, owner: str | None = None) -> None:
        """Detach and free the cube; only its owner (None: the REST API) may (409 otherwise)."""
        cube = self.check_owner(self.get(name, service), owner)
        with self._lock:
            if self._cubes.get(name) is cube:
                del self._cubes[name]
        cube.close()
        log.info("deleted %s %r", cube.service, name)
        self.save()

    # -- interfaces ------------------------------------------------------------------------------
    def interface_changed(self, ifname: str, present: bool) -> None:
        """A link event (link_watch.py): cubes on a vanished interface wait for it; waiting ones attach."""
        for cube in self.cubes():
            if present:
                cube.interface_appeared(ifname)
            else:
                cube.interface_gone(ifname)

    def sweep(self) -> None:
        """Check every cube against the interfaces as they are (after lost events, and now and then)."""
        for cube in self.cubes():
            cube.check_interface()
            if cube.wanted is not None and cube.port is None:
                cube.interface_appeared(cube.wanted)

    def close_all(self) -> None:
        """Detach and free every cube (at shutdown). The state file keeps them for the next start."""
        with self._lock:
            cubes = [c for c in self._cubes.values() if not isinstance(c, _Reserved)]
            self._cubes.clear()
        for cube in cubes:
            cube.close()

    # -- persistence ---------------------------------------------------------------------------
    def save(self) -> None:
        """Rewrite the state file (if there is one) from the cubes as they are now."""
        if self.state_path is None:
            return
        with self._save_lock:
            snapshot = []
            for cube in sorted(self.cubes(), key=lambda c: c.name):
                if cube.owner is not None:
                    continue  # declared in a config file: that file brings it back, not the state file
                with cube.lock:
                    snapshot.append({"service": cube.service, "name": cube.name, **cube.snapshot()})
            names = {entry["name"] for entry in snapshot}
            snapshot += [entry for entry in self.unrestored if entry.get("name") not in names]
            try:
                state_file.save(self.state_path, snapshot)
            except OSError as exc:
                log.error("cannot write the state file %s: %s", self.state_path, exc)

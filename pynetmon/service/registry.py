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

from . import state_file
from .cube import Cube
from .models import check_name
from .problems import ApiError, from_exception, not_found

if TYPE_CHECKING:
    from .capture_cube import CaptureCube
    from .dynmon_cube import DynmonCube
    from .monitor_cube import MonitorCube

log = logging.getLogger("pynetmon.service")

_RESERVED = object()


class Registry:
    """Named cubes; `netns` is where they attach; `state_path` (optional) keeps them across restarts."""

    def __init__(self, netns: str | None = None, state_path: Path | None = None,
                 capture_dir: Path = Path("/tmp/pynetmon")):
        self.netns = netns
        self.capture_dir = capture_dir
        self.state_path = state_path
        self._cubes: dict[str, Any] = {}
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
        if cube is None or cube is _RESERVED or (service and cube.service != service):
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
            found = [c for c in self._cubes.values() if c is not _RESERVED]
        return [c for c in found if service is None or c.service == service]

    def __iter__(self) -> Iterator[Cube]:
        return iter(self.cubes())

    # -- changes -----------------------------------------------------------------------------
    def create(self, name: str, build: Callable[[], Cube]) -> Cube:
        """Register the cube `build()` returns under `name`; 409 if the name is taken."""
        check_name(name)
        with self._lock:
            if name in self._cubes:
                existing = self._cubes[name]
                what = "being created" if existing is _RESERVED else f"a {existing.service} cube"
                raise ApiError(409, f"there is already a cube named {name!r} ({what})",
                               [("name", "already exists")])
            self._cubes[name] = _RESERVED
        try:
            cube = build()
        except BaseException as exc:
            with self._lock:
                del self._cubes[name]
            if isinstance(exc, Exception):
                raise from_exception(exc) from exc
            raise
        with self._lock:
            self._cubes[name] = cube
        log.info("created %s %r", cube.service, name)
        self.save()
        return cube

    def delete(self, name: str, service: str | None = None) -> None:
        cube = self.get(name, service)
        with self._lock:
            if self._cubes.get(name) is cube:
                del self._cubes[name]
        cube.close()
        log.info("deleted %s %r", cube.service, name)
        self.save()

    def close_all(self) -> None:
        """Detach and free every cube (at shutdown). The state file keeps them for the next start."""
        with self._lock:
            cubes = [c for c in self._cubes.values() if c is not _RESERVED]
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
                with cube.lock:
                    snapshot.append({"service": cube.service, "name": cube.name, **cube.snapshot()})
            try:
                state_file.save(self.state_path, snapshot)
            except OSError as exc:
                log.error("cannot write the state file %s: %s", self.state_path, exc)

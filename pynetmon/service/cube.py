"""What every cube the daemon hosts has in common: a name, a service, the interface it is attached to,
and a lock that serialises changes to it (reads do not take it)."""
from __future__ import annotations

import logging
import threading
from contextlib import AbstractContextManager
from typing import Any

from .. import netns as _netns
from .problems import ApiError

log = logging.getLogger("pynetmon.service")


class Cube:
    """Base class of the daemon's cubes. Subclasses set `service` and implement the hooks."""

    service = ""

    def __init__(self, name: str, netns: str | None):
        self.name = name
        self.netns = netns
        self.port: str | None = None
        self.lock = threading.RLock()

    # -- hooks ---------------------------------------------------------------------------------
    def _attach(self, port: str) -> None:
        raise NotImplementedError

    def _detach(self) -> None:
        raise NotImplementedError

    def _close(self) -> None:
        raise NotImplementedError

    def type_name(self) -> str:
        return "TC"

    def info(self) -> dict[str, Any]:
        """The cube as Polycube shows it (`GET /polycube/v1/{service}/{name}`)."""
        return {"name": self.name, "service-name": self.service, "type": self.type_name(),
                "parent": self.port or "", "shadow": False, "span": False}

    def snapshot(self) -> dict[str, Any]:
        """What the state file keeps to rebuild this cube."""
        return {"port": self.port}

    # -- operations ----------------------------------------------------------------------------
    def in_netns(self) -> AbstractContextManager[None]:
        """Context: the calling thread sees the interfaces of the namespace the daemon attaches in."""
        return _netns.enter(self.netns)

    def attach(self, port: str) -> None:
        with self.lock:
            if self.port == port:
                return
            if self.port is not None:
                raise ApiError(409, f"{self.service} {self.name!r} is already attached to {self.port!r}; "
                                    "detach it first", [("port", f"cube is attached to {self.port!r}")])
            with self.in_netns():
                self._attach(port)
            self.port = port
            log.info("attached %s %r to %s%s", self.service, self.name, port,
                     f" in netns {self.netns}" if self.netns else "")

    def detach(self, port: str | None = None) -> None:
        with self.lock:
            if self.port is None:
                raise ApiError(409, f"{self.service} {self.name!r} is not attached",
                               [("cube", "not attached")])
            if port is not None and port != self.port:
                raise ApiError(409, f"{self.service} {self.name!r} is attached to {self.port!r}, not {port!r}",
                               [("port", f"cube is attached to {self.port!r}")])
            with self.in_netns():
                self._detach()
            log.info("detached %s %r from %s", self.service, self.name, self.port)
            self.port = None

    def close(self) -> None:
        """Detach (if attached) and free everything; never raises."""
        with self.lock:
            try:
                with self.in_netns():
                    self._close()
            except Exception:
                log.exception("closing %s %r", self.service, self.name)
            if self.port is not None:
                log.info("detached %s %r from %s", self.service, self.name, self.port)
            self.port = None

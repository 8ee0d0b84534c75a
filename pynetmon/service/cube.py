"""What every cube the daemon hosts has in common: a name, a service, the interface it should be
attached to and whether it is, a kernel-memory account, and a lock that serialises changes to it (reads
do not take it).

Interfaces come and go (a veth deleted and created again, a container restarted): a cube remembers the
interface it was attached to (`wanted`). When that interface disappears the cube is detached and
"waiting for interface"; when it appears again (the daemon watches links: link_watch.py) it is attached
again. Requests never wait: attaching to a missing interface is a 404 naming it.
"""
from __future__ import annotations

import logging
import socket
import threading
import uuid
from contextlib import AbstractContextManager
from typing import Any

from .. import limits
from .. import netns as _netns
from ..errors import InterfaceNotFoundError
from .problems import ApiError

log = logging.getLogger("pynetmon.service")

ATTACHED, DETACHED, WAITING = "attached", "detached", "waiting for interface"


class Cube:
    """Base class of the daemon's cubes. Subclasses set `service` and implement the hooks."""

    service = ""

    def __init__(self, name: str, netns: str | None):
        self.name = name
        self.netns = netns
        self.uuid = str(uuid.uuid4())  # Polycube's per-cube uuid (a restored cube gets a new one)
        self.port: str | None = None    # the interface it is attached to now
        self.wanted: str | None = None  # the interface it should be attached to (kept while it is missing)
        self.alias: str | None = None   # the name it was attached by, if Polycube's `cube:port` (ports.py)
        self._ifindex = 0               # the index `port` had when attached (a re-created link has another)
        self.lock = threading.RLock()
        # The config file that declares this cube and its entry there (`pynetmon serve --config`); None for
        # cubes made through the REST API. Declared cubes change only with the file (registry.check_owner).
        self.owner: str | None = None
        self.entry: str | None = None
        # Kernel memory this cube's objects may use; the registry replaces it with one carrying the
        # daemon's per-monitor limit. Everything a cube loads must be loaded inside `with self.memory:`.
        self.memory = limits.MemoryAccount(f"{self.service} {name!r}")

    # -- hooks ---------------------------------------------------------------------------------
    def _attach(self, port: str) -> None:
        raise NotImplementedError

    def _detach(self) -> None:
        raise NotImplementedError

    def _close(self) -> None:
        raise NotImplementedError

    def type_name(self) -> str:
        return "TC"

    @property
    def status(self) -> str:
        """"attached", "detached", or "waiting for interface" (its interface does not exist now)."""
        return ATTACHED if self.port is not None else WAITING if self.wanted is not None else DETACHED

    def info(self) -> dict[str, Any]:
        """The cube as Polycube shows it (`GET /polycube/v1/{service}/{name}`), plus its `status`."""
        return {"name": self.name, "uuid": self.uuid, "service-name": self.service, "type": self.type_name(),
                "loglevel": "INFO", "parent": self.alias or self.wanted or "", "shadow": False, "span": False,
                "status": self.status, **({"declared-in": f"{self.owner} ({self.entry})"} if self.owner else {})}

    def snapshot(self) -> dict[str, Any]:
        """What the state file keeps to rebuild this cube (the interface even while it is missing)."""
        return {"port": self.wanted}

    # -- operations ----------------------------------------------------------------------------
    def in_netns(self) -> AbstractContextManager[None]:
        """Context: the calling thread sees the interfaces of the namespace the daemon attaches in."""
        return _netns.enter(self.netns)

    def _index_of(self, port: str) -> int:
        """The interface's index in the cube's namespace (0 when there is no such interface)."""
        with _netns.enter(self.netns):
            try:
                return socket.if_nametoindex(port)
            except OSError:
                return 0

    def attach(self, port: str, alias: str | None = None) -> None:
        """Attach to `port` now; InterfaceNotFoundError (404) when it does not exist. `alias`: the
        `cube:port` name the client gave for it, shown as `parent`."""
        with self.lock:
            if self.port == port and self._index_of(port) == self._ifindex:
                return
            if self.port == port:  # the interface was deleted and created again: the old hooks are gone
                self._lost_interface("was created again")
            if self.wanted not in (None, port):
                raise ApiError(409, f"{self.service} {self.name!r} is already attached to {self.wanted!r}; "
                                    "detach it first", [("port", f"cube is attached to {self.wanted!r}")])
            self._attach_now(port)
            self.wanted, self.alias = port, alias

    def _attach_now(self, port: str) -> None:
        index = self._index_of(port)
        if not index:
            raise InterfaceNotFoundError(port)
        with self.in_netns(), self.memory:
            self._attach(port)
        self.port, self._ifindex = port, index
        log.info("attached %s %r to %s%s", self.service, self.name, port,
                 f" in netns {self.netns}" if self.netns else "")

    def wait_for(self, port: str) -> None:
        """Attach to `port` when it exists, now or when it appears (restored and declared cubes)."""
        with self.lock:
            self.wanted = port
            self.interface_appeared(port)

    def interface_appeared(self, port: str) -> None:
        """The watcher saw `port` appear (or change): attach if this cube waits for it. Never raises."""
        with self.lock:
            if self.wanted != port or self.port is not None:
                return
            try:
                self._attach_now(port)
            except InterfaceNotFoundError:
                pass  # gone again already: the next event brings it back
            except Exception as exc:  # noqa: BLE001 - the cube keeps waiting; the log says why
                log.error("cannot attach %s %r to %s: %s", self.service, self.name, port, exc)

    def interface_gone(self, port: str) -> None:
        """The watcher saw `port` disappear: a cube attached there is detached and waits for it."""
        with self.lock:
            if self.port == port and self._index_of(port) != self._ifindex:
                self._lost_interface("disappeared")

    def check_interface(self) -> None:
        """Before changing what runs on the interface: notice at once if it vanished (the watcher's event
        may not have arrived yet), so the change applies to a detached, waiting cube."""
        with self.lock:
            if self.port is not None:
                self.interface_gone(self.port)

    def _lost_interface(self, how: str) -> None:
        try:
            with self.in_netns():
                self._detach()
        except Exception as exc:  # noqa: BLE001 - the hooks died with the interface; nothing to undo
            log.debug("detaching %s %r from the vanished %s: %s", self.service, self.name, self.port, exc)
        log.warning("%s %r: interface %s %s; waiting for it", self.service, self.name, self.port, how)
        self.port, self._ifindex = None, 0

    def detach(self, port: str | None = None) -> None:
        with self.lock:
            if self.wanted is None:
                raise ApiError(409, f"{self.service} {self.name!r} is not attached",
                               [("cube", "not attached")])
            if port is not None and port != self.wanted:
                raise ApiError(409, f"{self.service} {self.name!r} is attached to {self.wanted!r}, not {port!r}",
                               [("port", f"cube is attached to {self.wanted!r}")])
            if self.port is not None:
                with self.in_netns():
                    self._detach()
                log.info("detached %s %r from %s", self.service, self.name, self.port)
            self.port, self.wanted, self.alias, self._ifindex = None, None, None, 0

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

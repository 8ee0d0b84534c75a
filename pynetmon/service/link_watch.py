"""Watching network interfaces come and go (rtnetlink link events, decoded by pyroute2), so that cubes
whose interface disappears are detached and waiting, and are attached again when it comes back.

The netlink socket is opened inside the namespace the daemon attaches in (a socket stays in the
namespace it was created in), then one thread reads it. Events can be lost (the kernel drops them when
the socket's buffer is full: ENOBUFS), so every `SWEEP_INTERVAL` seconds, and after a loss, every cube
is checked against the interfaces as they are.
"""
from __future__ import annotations

import errno
import functools
import logging
import socket
import struct
import threading
from collections.abc import Callable

from pyroute2.netlink.rtnl import RTM_DELLINK, RTM_NEWLINK, RTMGRP_LINK
from pyroute2.netlink.rtnl.ifinfmsg import ifinfmsg

from .. import netns as _netns

log = logging.getLogger("pynetmon.service")

SWEEP_INTERVAL = 5.0
_NLMSG_HEADER = struct.Struct("=IHHII")  # length, type, flags, sequence, port id


def link_events(data: bytes) -> list[tuple[str, bool]]:
    """(interface name, present) for every RTM_NEWLINK/RTM_DELLINK message in one netlink datagram."""
    events = []
    offset = 0
    while offset + _NLMSG_HEADER.size <= len(data):
        length, kind = _NLMSG_HEADER.unpack_from(data, offset)[:2]
        if length < _NLMSG_HEADER.size:
            break  # malformed: nothing after it can be trusted
        if kind in (RTM_NEWLINK, RTM_DELLINK):
            msg = ifinfmsg(data[offset:offset + length])
            msg.decode()
            name = msg.get_attr("IFLA_IFNAME")
            if name:
                events.append((name, kind == RTM_NEWLINK))
        offset += (length + 3) & ~3
    return events


class LinkWatcher:
    """Calls `on_event(ifname, present)` for each link event in `netns`, and `on_sweep()` now and then."""

    def __init__(self, netns: str | None, on_event: Callable[[str, bool], None], on_sweep: Callable[[], None],
                 sweep_interval: float = SWEEP_INTERVAL):
        self.netns = netns
        self.on_event = on_event
        self.on_sweep = on_sweep
        self.sweep_interval = sweep_interval
        self._stop = threading.Event()
        with _netns.enter(netns):
            self._sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC,
                                       socket.NETLINK_ROUTE)
        self._sock.bind((0, RTMGRP_LINK))
        self._sock.settimeout(min(0.5, sweep_interval))
        self._thread = threading.Thread(target=self._run, name="pynetmon-links", daemon=True)

    def start(self) -> LinkWatcher:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5)
        self._sock.close()

    def _run(self) -> None:
        self._safely(self.on_sweep)  # what changed before the socket was open
        since_sweep = 0.0
        while not self._stop.is_set():
            try:
                data = self._sock.recv(1 << 16)
            except TimeoutError:
                since_sweep += self._sock.gettimeout()
                if since_sweep >= self.sweep_interval:
                    since_sweep = 0.0
                    self._safely(self.on_sweep)
                continue
            except OSError as exc:
                if self._stop.is_set():
                    return
                if exc.errno != errno.ENOBUFS:
                    log.error("link watcher: %s", exc)
                self._safely(self.on_sweep)  # events were lost: look at every cube
                continue
            try:
                events = link_events(data)
            except Exception as exc:  # noqa: BLE001 - a message we cannot decode: the sweep covers it
                log.warning("link watcher: undecodable netlink message: %s", exc)
                continue
            for name, present in events:
                self._safely(functools.partial(self.on_event, name, present))

    @staticmethod
    def _safely(call: Callable[[], None]) -> None:
        try:
            call()
        except Exception:  # the watcher must outlive any one cube's failure
            log.exception("link watcher")

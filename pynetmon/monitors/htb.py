"""The HTB tree of the qos monitor's shape mode (pyroute2, rtnetlink): the interface's root qdisc as it
was, an HTB qdisc with one root class and a leaf class per QoS class, their statistics, and the way back.

Putting an HTB tree on an interface replaces its root qdisc, so the one that was there is saved first
and put back by `close()`. A root the kernel attached itself (handle 0: noqueue on veth, pfifo_fast,
mq) comes back by deleting ours; a simple one somebody added (pfifo, bfifo, pfifo_fast, or mq over the
kernel's own children, with a handle) is re-created with its handle and limit; anything else (a configured tbf, htb, a tree of classes) is
refused before anything changes, because it could not be restored exactly.

>>> with HtbTree("eth0", netns=None, link_rate=10**10) as tree:
...     tree.set_class(0x10, rate=50_000_000, ceil=50_000_000, burst=131_072, priority=4)
"""
from __future__ import annotations

import array
import contextlib
import fcntl
import logging
import socket
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Self

from .. import netns as _netns
from ..errors import ConfigError, Error

log = logging.getLogger(__name__)

MAJOR = 0x7051  # "qos": the handle of our HTB qdisc, so a tree left by a crashed process is recognised
ROOT_MINOR = 1
TC_H_ROOT = 0xFFFFFFFF
TC_H_INGRESS = 0xFFFFFFF1
_RESTORABLE = {"pfifo", "bfifo", "pfifo_fast", "mq"}  # re-created from their dump (handle, limit)
_MAX_QUANTUM = 200_000  # the kernel warns above it ("quantum of class is big")


def classid(minor: int) -> int:
    """The HTB class id `7051:minor`, as skb->priority carries it to HTB."""
    return MAJOR << 16 | minor


def burst_bytes(rate_bps: int) -> int:
    """Default HTB burst of a class: 10 ms of its rate, at least two 64 KiB GSO packets (a burst smaller
    than one GSO packet makes HTB's rate coarse)."""
    return max(rate_bps // 8 // 100, 2 * 65_536)


@dataclass(frozen=True)
class SavedRoot:
    """The root qdisc an interface had: its kind, handle and (pfifo/bfifo) limit."""

    kind: str
    handle: int
    limit: int | None

    @property
    def kernel_default(self) -> bool:
        return self.handle == 0

    def __str__(self) -> str:
        return f"{self.kind} {self.handle >> 16:x}:"


class HtbTree:
    """An HTB qdisc `7051:` at the interface's root (default class `7051:default_minor`), a root class
    `7051:1` at `link_rate`, and leaf classes under it. Use as a context manager or call `close()`."""

    def __init__(self, ifname: str, netns: str | None, link_rate: int, default_minor: int):
        self.ifname, self.netns = ifname, netns
        with _netns.enter(netns):
            self.ifindex = _netns.ifindex(ifname)
        self.classes: dict[int, dict[str, int]] = {}
        self._created = False
        self._closed = False
        try:
            self.saved = self._check_restorable()
            self._tc("replace", "htb", MAJOR << 16, default=default_minor)  # over the saved root
            self._created = True
            rate = link_rate // 8
            self._tc("add-class", "htb", classid(ROOT_MINOR), parent=MAJOR << 16, rate=rate, ceil=rate,
                     burst=burst_bytes(link_rate), cburst=burst_bytes(link_rate), quantum=_MAX_QUANTUM)
        except BaseException:
            self.close()
            raise
        log.info("qos on %s: HTB %x: replaces %s", ifname, MAJOR, self.saved)

    @contextlib.contextmanager
    def _ipr(self) -> Iterator[Any]:
        """A netlink socket in the interface's namespace, for one operation. pyroute2's synchronous
        IPRoute runs each calling thread's requests on a socket of that thread, opened in the thread's
        namespace, so one kept from another thread (the service's) would reach another namespace's
        interface of the same index: every call opens its own, inside the namespace."""
        from pyroute2 import IPRoute
        with _netns.enter(self.netns), IPRoute() as ipr:
            yield ipr

    def _tc(self, command: str, kind: str | None, handle: int, **kw: Any) -> None:
        from pyroute2.netlink.exceptions import NetlinkError
        try:
            with self._ipr() as ipr:
                ipr.tc(command, kind, self.ifindex, handle, **kw)
        except NetlinkError as exc:
            raise Error(f"tc {command} {kind or ''} {handle >> 16:x}:{handle & 0xFFFF:x} on {self.ifname} failed: "
                        f"{exc.args[1] if len(exc.args) > 1 else exc} (errno {exc.code})") from None

    def qdiscs(self) -> list[dict[str, Any]]:
        """The interface's qdiscs: [{"kind", "handle", "parent", "limit"}] (clsact/ingress included)."""
        out = []
        with self._ipr() as ipr:
            msgs = list(ipr.get_qdiscs(index=self.ifindex))
        for msg in msgs:
            opts = msg.get_attr("TCA_OPTIONS")
            limit = opts.get("limit") if isinstance(opts, dict) else None
            out.append({"kind": msg.get_attr("TCA_KIND"), "handle": msg["handle"], "parent": msg["parent"],
                        "limit": limit})
        return out

    def _check_restorable(self) -> SavedRoot:
        found = self.qdiscs()
        roots = [q for q in found if q["parent"] == TC_H_ROOT]
        if not roots:
            raise Error(f"{self.ifname} has no root qdisc to save")
        root = roots[0]
        saved = SavedRoot(root["kind"], root["handle"], root["limit"] if root["kind"] in ("pfifo", "bfifo") else None)
        if root["kind"] == "htb" and root["handle"] >> 16 == MAJOR:
            raise ConfigError([("interface", (f"{self.ifname} has an HTB tree {MAJOR:x}: left by a qos monitor that "
                                 f"did not close (a killed process?): remove it with `tc qdisc del dev {self.ifname} "
                                 "root`, or run the qos monitor in mode=police"))])
        # the other qdiscs below the root (mq's per-queue children): only the kernel's own come back
        others = [q for q in found if q["parent"] not in (TC_H_ROOT, TC_H_INGRESS) and q["kind"] not in ("clsact", "ingress")]
        configured = [q for q in others if q["handle"] and q["handle"] >> 16 != root["handle"] >> 16]
        # a re-created mq gets the kernel's children again: restorable while those are the kernel's own
        if not saved.kernel_default and (saved.kind not in _RESTORABLE or (others and saved.kind != "mq")):
            raise ConfigError([("interface", (f"{self.ifname}'s root qdisc {saved} was configured by someone else "
                                 "and shape mode could not restore it exactly; remove it, or use mode=police "
                                 "(works with any qdisc)"))])
        if configured:
            raise ConfigError([("interface", (f"{self.ifname} has configured qdiscs under its root "
                                 f"({', '.join(q['kind'] for q in configured)}) that shape mode could not restore; "
                                 "use mode=police"))])
        return saved

    # -- classes -------------------------------------------------------------------------------------
    def set_class(self, minor: int, rate: int, ceil: int, burst: int, priority: int) -> None:
        """Add the leaf class `7051:minor` or change it (rates in bits/s, burst in bytes)."""
        params = {"rate": rate, "ceil": ceil, "burst": burst, "priority": priority}
        command = "change-class" if minor in self.classes else "add-class"
        quantum = min(max(rate // 8 // 10, 1_600), _MAX_QUANTUM)
        self._tc(command, "htb", classid(minor), parent=classid(ROOT_MINOR), rate=rate // 8, ceil=ceil // 8,
                 burst=burst, cburst=max(burst, burst_bytes(ceil)), prio=priority, quantum=quantum)
        self.classes[minor] = params

    def delete_class(self, minor: int) -> None:
        """Remove the leaf class `7051:minor` (packets still queued in it are dropped)."""
        if minor in self.classes:
            self._tc("del-class", None, classid(minor), parent=classid(ROOT_MINOR))
            del self.classes[minor]

    def class_stats(self) -> dict[int, dict[str, int]]:
        """{minor: {"bytes", "packets", "drops", "overlimits", "backlog"}} of the leaf classes, as the kernel
        counts them (after the queue: what was sent)."""
        out = {}
        with self._ipr() as ipr:
            msgs = list(ipr.get_classes(index=self.ifindex))
        for msg in msgs:
            handle = msg["handle"]
            if handle >> 16 != MAJOR or (handle & 0xFFFF) not in self.classes:
                continue
            stats = msg.get_attr("TCA_STATS2")
            basic = stats.get_attr("TCA_STATS_BASIC") or {} if stats else {}
            queue = stats.get_attr("TCA_STATS_QUEUE") or {} if stats else {}
            out[handle & 0xFFFF] = {"bytes": basic.get("bytes", 0), "packets": basic.get("packets", 0),
                                    "drops": queue.get("drops", 0), "overlimits": queue.get("overlimits", 0),
                                    "backlog": queue.get("backlog", 0)}
        return out

    # -- the way back --------------------------------------------------------------------------------
    def root(self) -> SavedRoot:
        """The interface's root qdisc now."""
        [root] = [q for q in self.qdiscs() if q["parent"] == TC_H_ROOT]
        return SavedRoot(root["kind"], root["handle"], root["limit"] if root["kind"] in ("pfifo", "bfifo") else None)

    def close(self) -> None:
        """Remove the HTB tree and put the saved root qdisc back. Safe to call twice."""
        if self._closed or not self._created:
            self._closed = True
            return
        self._closed = True  # once: when the interface is gone there is nothing to retry
        self._tc("del", "htb", MAJOR << 16)
        self._created = False
        if not self.saved.kernel_default:
            extra = {"limit": self.saved.limit} if self.saved.limit is not None else {}
            self._tc("replace", self.saved.kind, self.saved.handle, **extra)
        now = self.root()
        if now != self.saved:
            log.warning("qos on %s: root qdisc is %s after restoring, was %s (net.core.default_qdisc "
                        "changed meanwhile?)", self.ifname, now, self.saved)
        log.info("qos on %s: HTB removed, root qdisc %s again", self.ifname, now)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class IfbDevice:
    """An ifb device `pnmqIFINDEX` beside the interface, for shaping what arrives: the qos program redirects
    ingress packets to its egress, where an HTB tree queues them, and ifb hands them back to the
    interface's receive path. Created up; `delete()` removes it (with whatever qdisc it has)."""

    def __init__(self, ifname: str, netns: str | None):
        from pyroute2 import IPRoute
        from pyroute2.netlink.exceptions import NetlinkError
        self.netns = netns
        with _netns.enter(netns):
            self.name = f"pnmq{_netns.ifindex(ifname)}"
            with IPRoute() as ipr:
                try:
                    ipr.link("add", ifname=self.name, kind="ifb")
                except NetlinkError as exc:
                    if exc.code == 17:
                        raise ConfigError([("interface", (f"an ifb device {self.name} exists already: left by a qos "
                                                          "monitor that did not close (a killed process?); remove "
                                                          f"it with `ip link del {self.name}`"))]) from None
                    raise Error(f"creating ifb device {self.name} failed: {exc}") from None
                self._deleted = False
                try:
                    self.ifindex = _netns.ifindex(self.name)
                    ipr.link("set", index=self.ifindex, state="up")
                except BaseException:
                    self.delete()
                    raise
        log.info("qos on %s: ifb %s shapes what arrives", ifname, self.name)

    def delete(self) -> None:
        """Remove the device. Safe to call twice."""
        if self._deleted:
            return
        self._deleted = True
        from pyroute2 import IPRoute
        with _netns.enter(self.netns), IPRoute() as ipr:
            ipr.link("del", ifname=self.name)


_SIOCETHTOOL = 0x8946
_ETHTOOL_GSET = 1
_ETHTOOL_CMD = struct.Struct("=IIIHBBBBBBIIHBBI8x")  # struct ethtool_cmd (44 bytes)
FALLBACK_LINK_RATE = 10_000_000_000


def link_speed_bps(ifname: str, netns: str | None) -> int | None:
    """The interface's speed as its driver reports it (ETHTOOL_GSET, what `ethtool IF` shows), in bits/s;
    None when it reports none (ifb, a link that is down) or refuses."""
    buf = array.array("B", _ETHTOOL_CMD.pack(_ETHTOOL_GSET, *([0] * 15)))
    addr, _ = buf.buffer_info()
    ifreq = struct.pack("16sP", ifname.encode()[:15], addr)
    with _netns.enter(netns):
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        fcntl.ioctl(s.fileno(), _SIOCETHTOOL, ifreq)
    except OSError:
        return None
    finally:
        s.close()
    fields = _ETHTOOL_CMD.unpack(buf.tobytes())
    mbps = fields[3] | fields[12] << 16
    return None if mbps in (0, 0xFFFF, 0xFFFFFFFF) else mbps * 1_000_000

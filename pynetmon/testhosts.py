"""Test hosts: network namespaces joined by a veth pair, for tests, benchmarks and `make run`.

Each host is a namespace with one interface `eth0` and an address on a /30 from 198.18.0.0/15 (the
range RFC 2544 reserves for benchmarking), so the traffic exists only between the two namespaces.
Everything is removed on exit, also when the block raises.

>>> with TestHosts() as (a, b):
...     a.run("ping", "-c1", b.ip)
"""
from __future__ import annotations

import collections
import itertools
import os
import random
import socket
import struct
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any, Self

from . import netns
from .errors import Error

_counter = itertools.count()


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run(["ip", *args], capture_output=True, text=True, check=False)
    if check and proc.returncode != 0:
        raise Error(f"`ip {' '.join(args)}` failed: {proc.stderr.strip()}")
    return proc


@dataclass
class Host:
    """One end: namespace `netns`, interface `ifname` with address `ip` (and `mac`)."""

    netns: str
    ifname: str
    ip: str
    mac: str
    prefixlen: int = 30

    def run(self, *cmd: str, check: bool = True, timeout: float = 60, **kw: Any) -> subprocess.CompletedProcess:
        """Run a command inside this host's namespace."""
        proc = subprocess.run(["ip", "netns", "exec", self.netns, *cmd], capture_output=True, text=True,
                              timeout=timeout, check=False, **kw)
        if check and proc.returncode != 0:
            raise Error(f"{' '.join(cmd)!r} in {self.netns} failed ({proc.returncode}): {proc.stderr.strip()}")
        return proc

    def popen(self, *cmd: str, **kw: Any) -> subprocess.Popen:
        return subprocess.Popen(["ip", "netns", "exec", self.netns, *cmd], **kw)

    def enter(self) -> AbstractContextManager[None]:
        """Context manager: the calling thread runs in this host's namespace."""
        return netns.enter(self.netns)

    def send_udp(self, dst: str, port: int, count: int, payload: bytes = b"x" * 32, sport: int = 0) -> int:
        """Send `count` UDP datagrams from this host; returns how many were handed to the kernel."""
        with self.enter():
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            if sport:
                s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                s.bind((self.ip, sport))
            sent = 0
            for _ in range(count):
                try:
                    s.sendto(payload, (dst, port))
                    sent += 1
                except BlockingIOError:
                    time.sleep(0.0005)
            return sent
        finally:
            s.close()

    def socket(self, family: int = socket.AF_INET, type: int = socket.SOCK_DGRAM, proto: int = 0) -> socket.socket:
        """A socket that lives in this host's namespace (usable from any thread afterwards)."""
        with self.enter():
            return socket.socket(family, type, proto)


def _wait_operational(name: str, timeout: float = 10.0) -> None:
    """Wait until eth0 of namespace `name` is operationally UP. The end brought up first gets its carrier
    when the other end comes up, and its transmit queue leaves the "noop" qdisc (which drops everything
    while sendto() still succeeds) only when the kernel's linkwatch work runs, later, from a workqueue
    that needs the RTNL lock; operstate turns UP in that same step."""
    deadline = time.monotonic() + timeout
    while True:
        state = _ip("-n", name, "-br", "link", "show", "eth0").stdout.split()[1]
        if state == "UP":
            return
        if time.monotonic() > deadline:
            raise Error(f"eth0 in {name} is still {state} after {timeout} s (the kernel never activated it)")
        time.sleep(0.005)


class _Namespaces:
    """What every set of test hosts shares: the namespaces it created (`_created`), deleted on close()
    (deleting a namespace deletes its veth ends, and with them the pairs), and `with`."""

    _created: list[str]

    def close(self) -> None:
        for name in reversed(self._created):
            _ip("netns", "del", name, check=False)  # deleting a namespace deletes its veth end, and the pair
        self._created.clear()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class TestHosts(_Namespaces):
    """Two hosts, `a` and `b`, joined by a veth pair. Use as a context manager (or call close())."""

    __test__ = False

    def __init__(self, prefix: str = "pnm", mtu: int = 1500):
        n = next(_counter)
        tag = f"{prefix}{os.getpid() % 100000}x{n}"
        self.names = (f"{tag}a", f"{tag}b")
        net = random.randrange(0, 1 << 15)  # a /30 inside 198.18.0.0/15
        base = (198 << 24) | (18 << 16) | (net << 2)
        ip_a = socket.inet_ntoa((base + 1).to_bytes(4, "big"))
        ip_b = socket.inet_ntoa((base + 2).to_bytes(4, "big"))
        self._created: list[str] = []
        self._tag, self._mtu, self._ips = tag, mtu, (ip_a, ip_b)
        try:
            for name in self.names:
                _ip("netns", "add", name)
                self._created.append(name)
                _ip("-n", name, "link", "set", "lo", "up")
            self._link()
        except BaseException:
            self.close()
            raise

    def _link(self) -> None:
        va, vb = f"{self._tag}va"[:15], f"{self._tag}vb"[:15]
        mtu = str(self._mtu)
        _ip("link", "add", va, "mtu", mtu, "type", "veth", "peer", "name", vb, "mtu", mtu)
        hosts = []
        for name, veth, ip in ((self.names[0], va, self._ips[0]), (self.names[1], vb, self._ips[1])):
            _ip("link", "set", veth, "netns", name)
            _ip("-n", name, "link", "set", veth, "name", "eth0")
            _ip("-n", name, "addr", "add", f"{ip}/30", "dev", "eth0")
            _ip("-n", name, "link", "set", "eth0", "up")
            mac = _ip("-n", name, "-br", "link", "show", "eth0").stdout.split()[2]
            hosts.append(Host(name, "eth0", ip, mac))
        self.a, self.b = hosts
        for host in hosts:
            _wait_operational(host.netns)
        # Fill the neighbour tables so the first packets are not ARP exchanges.
        _ip("-n", self.names[0], "neigh", "replace", self._ips[1], "lladdr", self.b.mac, "dev", "eth0")
        _ip("-n", self.names[1], "neigh", "replace", self._ips[0], "lladdr", self.a.mac, "dev", "eth0")

    def unlink(self) -> None:
        """Delete the veth pair (both eth0 interfaces vanish), as a restarted container's would."""
        _ip("-n", self.names[1], "link", "del", "eth0")

    def relink(self) -> None:
        """Create the veth pair again after `unlink()`: same names and addresses (new interface indexes
        and MACs: `a` and `b` are new Host objects)."""
        self._link()

    def __iter__(self) -> Iterator[Host]:
        return iter((self.a, self.b))


class MiddleHosts(_Namespaces):
    """Hosts `a` and `b` joined through a third namespace `m` (interfaces `left` to a, `right` to b).

    `routed=True`: m is an IPv4 router (a and b on two /30s, default routes through m, forwarding on),
    the topology of a forwarding host. `routed=False`: a and b share one /30 and m only has the two
    links, without addresses: nothing passes until something in m carries frames across (a `FrameRelay`,
    a bridge, a BPF redirect) — the place to introduce delay or loss yourself.

    >>> with MiddleHosts(routed=True) as hosts:
    ...     hosts.a.run("ping", "-c1", hosts.b.ip)
    """

    __test__ = False

    def __init__(self, prefix: str = "pnm", routed: bool = True, mtu: int = 1500):
        tag = f"{prefix}{os.getpid() % 100000}m{next(_counter)}"
        self.names = (f"{tag}a", f"{tag}m", f"{tag}b")
        self.routed = routed
        net = random.randrange(0, 1 << 14) * 2  # two adjacent /30s inside 198.18.0.0/15
        base = (198 << 24) | (18 << 16) | (net << 2)
        addr = [socket.inet_ntoa((base + i).to_bytes(4, "big")) for i in range(8)]
        self._created: list[str] = []
        try:
            for name in self.names:
                _ip("netns", "add", name)
                self._created.append(name)
            name_a, self.m, name_b = self.names
            ends = []
            for host_ns, side in ((name_a, "left"), (name_b, "right")):
                v1, v2 = f"{tag}{side[0]}1"[:15], f"{tag}{side[0]}2"[:15]
                _ip("link", "add", v1, "mtu", str(mtu), "type", "veth", "peer", "name", v2, "mtu", str(mtu))
                _ip("link", "set", v1, "netns", host_ns)
                _ip("-n", host_ns, "link", "set", v1, "name", "eth0")
                _ip("link", "set", v2, "netns", self.m)
                _ip("-n", self.m, "link", "set", v2, "name", side)
                ends.append(host_ns)
            if routed:
                ip_a, ip_ml, ip_mr, ip_b = addr[1], addr[2], addr[5], addr[6]
                plan = [(name_a, "eth0", ip_a), (self.m, "left", ip_ml), (self.m, "right", ip_mr), (name_b, "eth0", ip_b)]
            else:
                ip_a, ip_b = addr[1], addr[2]
                plan = [(name_a, "eth0", ip_a), (name_b, "eth0", ip_b)]
            for ns, dev, ip in plan:
                _ip("-n", ns, "addr", "add", f"{ip}/30", "dev", dev)
            for ns, devs in ((name_a, ("eth0", "lo")), (self.m, ("left", "right", "lo")), (name_b, ("eth0", "lo"))):
                for dev in devs:
                    _ip("-n", ns, "link", "set", dev, "up")
            mac = {ns: _ip("-n", ns, "-br", "link", "show", "eth0").stdout.split()[2] for ns in (name_a, name_b)}
            self.a = Host(name_a, "eth0", ip_a, mac[name_a])
            self.b = Host(name_b, "eth0", ip_b, mac[name_b])
            for host in (self.a, self.b):
                _wait_operational(host.netns)
            if routed:
                subprocess.run(["ip", "netns", "exec", self.m, "sysctl", "-qw", "net.ipv4.ip_forward=1"],
                               check=True, capture_output=True)
                _ip("-n", name_a, "route", "add", "default", "via", ip_ml)
                _ip("-n", name_b, "route", "add", "default", "via", ip_mr)
            else:
                # Fill the neighbour tables so the first packets are not ARP exchanges through the middle.
                _ip("-n", name_a, "neigh", "replace", ip_b, "lladdr", self.b.mac, "dev", "eth0")
                _ip("-n", name_b, "neigh", "replace", ip_a, "lladdr", self.a.mac, "dev", "eth0")
        except BaseException:
            self.close()
            raise


_SOL_PACKET, _PACKET_VNET_HDR, _SO_TIMESTAMPNS = 263, 15, 35  # linux; Python's socket module lacks them


class FrameRelay:
    """Carries Ethernet frames between two interfaces of one namespace through AF_PACKET sockets, holding
    each frame `delay` seconds (in order): the delay line this kernel's missing netem cannot give. Frames
    leave as they came (MACs untouched), so the hosts on either side talk as if joined by a wire. Each
    frame travels with its virtio-net header (PACKET_VNET_HDR): a veth frame whose checksum the sender
    left to offload (or a GSO super-frame) leaves again with that state, so the receiver accepts it.
    The hold counts from the kernel's arrival time of the frame (SO_TIMESTAMPNS), not from when Python
    got to it; `holds` keeps how long each frame was actually held (seconds, the latest 65,536), which on
    a loaded machine may exceed `delay`.

    >>> with MiddleHosts(routed=False) as h, FrameRelay(h.m, "left", "right", delay=0.010):
    ...     h.a.run("ping", "-c1", h.b.ip)   # about 20 ms
    """

    __test__ = False

    def __init__(self, netns_name: str, if1: str, if2: str, delay: float):
        self.delay = delay
        self.relayed = 0
        self.holds: collections.deque[float] = collections.deque(maxlen=65536)
        self._stop = threading.Event()
        self._socks = []
        with netns.enter(netns_name):
            for ifname in (if1, if2):
                s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x0003))  # ETH_P_ALL
                s.setsockopt(_SOL_PACKET, _PACKET_VNET_HDR, 1)
                s.setsockopt(socket.SOL_SOCKET, _SO_TIMESTAMPNS, 1)  # the arrival time with each frame
                s.bind((ifname, 0))
                s.settimeout(0.05)
                self._socks.append(s)
        self._threads = []
        for src, dst in ((0, 1), (1, 0)):
            queue: collections.deque = collections.deque()
            ready = threading.Condition()
            self._threads += [threading.Thread(target=self._receive, args=(self._socks[src], queue, ready), daemon=True),
                              threading.Thread(target=self._send, args=(self._socks[dst], queue, ready), daemon=True)]
        for t in self._threads:
            t.start()

    def _receive(self, sock: socket.socket, queue, ready) -> None:
        while not self._stop.is_set():
            try:
                frame, ancillary, _, addr = sock.recvmsg(65535, socket.CMSG_SPACE(16))
            except (TimeoutError, OSError):
                continue
            if addr[2] == socket.PACKET_OUTGOING:  # our own sends on this interface
                continue
            arrived = time.monotonic()
            for level, kind, data in ancillary:
                if level == socket.SOL_SOCKET and kind == _SO_TIMESTAMPNS and len(data) >= 16:
                    sec, nsec = struct.unpack_from("=qq", data)
                    # realtime arrival on the monotonic clock: the two clocks read back to back, so
                    # that time spent between reading `arrived` and here cannot shorten the hold
                    arrived = (sec + nsec / 1e9) - (time.time() - time.monotonic())
            with ready:
                queue.append((arrived, frame))
                ready.notify()

    def _send(self, sock: socket.socket, queue, ready) -> None:
        while not self._stop.is_set():
            with ready:
                while not queue and not self._stop.is_set():
                    ready.wait(0.05)
                if not queue:
                    continue
                arrived, frame = queue.popleft()
            wait = arrived + self.delay - time.monotonic()
            if wait > 0:
                time.sleep(wait)
            try:
                sock.send(frame)
                self.holds.append(time.monotonic() - arrived)
                self.relayed += 1
            except OSError:
                pass

    def close(self) -> None:
        self._stop.set()
        for t in self._threads:
            t.join()
        for s in self._socks:
            s.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class RouterHosts(_Namespaces):
    """`n` hosts around one router namespace: host i (`hosts[i]`, interface eth0) sits on its own /30 with
    a default route through the router, whose end of that link is `h{i}`. The router forwards IPv4.
    The place for a middle box that several hosts reach through different links (a load balancer with
    clients on one side and backends on others).

    >>> with RouterHosts(3) as r:
    ...     client, server1, server2 = r.hosts
    ...     client.run("ping", "-c1", server2.ip)
    """

    __test__ = False

    def __init__(self, n: int, prefix: str = "pnm", mtu: int = 1500):
        if not 2 <= n <= 64:
            raise ValueError(f"a router with 2 to 64 hosts, not {n}")
        tag = f"{prefix}{os.getpid() % 100000}r{next(_counter)}"
        self.router = f"{tag}r"
        self.names = [f"{tag}h{i}" for i in range(n)]
        net = random.randrange(0, (1 << 15) // 64) * 64  # n adjacent /30s inside 198.18.0.0/15
        self._created: list[str] = []
        self.hosts: list[Host] = []
        self.gateways: list[str] = []
        try:
            for name in (self.router, *self.names):
                _ip("netns", "add", name)
                self._created.append(name)
                _ip("-n", name, "link", "set", "lo", "up")
            for i, name in enumerate(self.names):
                base = (198 << 24) | (18 << 16) | ((net + i) << 2)
                gw, ip = (socket.inet_ntoa((base + k).to_bytes(4, "big")) for k in (1, 2))
                v1, v2 = f"{tag}a{i}"[:15], f"{tag}b{i}"[:15]
                _ip("link", "add", v1, "mtu", str(mtu), "type", "veth", "peer", "name", v2, "mtu", str(mtu))
                _ip("link", "set", v1, "netns", self.router)
                _ip("-n", self.router, "link", "set", v1, "name", f"h{i}")
                _ip("link", "set", v2, "netns", name)
                _ip("-n", name, "link", "set", v2, "name", "eth0")
                _ip("-n", self.router, "addr", "add", f"{gw}/30", "dev", f"h{i}")
                _ip("-n", name, "addr", "add", f"{ip}/30", "dev", "eth0")
                _ip("-n", self.router, "link", "set", f"h{i}", "up")
                _ip("-n", name, "link", "set", "eth0", "up")
                mac = _ip("-n", name, "-br", "link", "show", "eth0").stdout.split()[2]
                self.hosts.append(Host(name, "eth0", ip, mac))
                self.gateways.append(gw)
            for i, host in enumerate(self.hosts):
                _wait_operational(host.netns)
                _ip("-n", host.netns, "route", "add", "default", "via", self.gateways[i])
            subprocess.run(["ip", "netns", "exec", self.router, "sysctl", "-qw", "net.ipv4.ip_forward=1"],
                           check=True, capture_output=True)
        except BaseException:
            self.close()
            raise

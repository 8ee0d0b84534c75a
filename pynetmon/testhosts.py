"""Test hosts: network namespaces joined by a veth pair, for tests, benchmarks and `make run`.

Each host is a namespace with one interface `eth0` and an address on a /30 from 198.18.0.0/15 (the
range RFC 2544 reserves for benchmarking), so the traffic exists only between the two namespaces.
Everything is removed on exit, also when the block raises.

>>> with TestHosts() as (a, b):
...     a.run("ping", "-c1", b.ip)
"""
from __future__ import annotations

import itertools
import os
import random
import socket
import subprocess
import time
from dataclasses import dataclass

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

    def run(self, *cmd: str, check: bool = True, timeout: float = 60, **kw) -> subprocess.CompletedProcess:
        """Run a command inside this host's namespace."""
        proc = subprocess.run(["ip", "netns", "exec", self.netns, *cmd], capture_output=True, text=True,
                              timeout=timeout, check=False, **kw)
        if check and proc.returncode != 0:
            raise Error(f"{' '.join(cmd)!r} in {self.netns} failed ({proc.returncode}): {proc.stderr.strip()}")
        return proc

    def popen(self, *cmd: str, **kw) -> subprocess.Popen:
        return subprocess.Popen(["ip", "netns", "exec", self.netns, *cmd], **kw)

    def enter(self):
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

    def socket(self, family=socket.AF_INET, type=socket.SOCK_DGRAM, proto=0) -> socket.socket:
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


class TestHosts:
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
        try:
            for name in self.names:
                _ip("netns", "add", name)
                self._created.append(name)
            va, vb = f"{tag}va"[:15], f"{tag}vb"[:15]
            _ip("link", "add", va, "mtu", str(mtu), "type", "veth", "peer", "name", vb, "mtu", str(mtu))
            hosts = []
            for name, veth, ip in ((self.names[0], va, ip_a), (self.names[1], vb, ip_b)):
                _ip("link", "set", veth, "netns", name)
                _ip("-n", name, "link", "set", veth, "name", "eth0")
                _ip("-n", name, "addr", "add", f"{ip}/30", "dev", "eth0")
                _ip("-n", name, "link", "set", "eth0", "up")
                _ip("-n", name, "link", "set", "lo", "up")
                mac = _ip("-n", name, "-br", "link", "show", "eth0").stdout.split()[2]
                hosts.append(Host(name, "eth0", ip, mac))
            self.a, self.b = hosts
            for host in hosts:
                _wait_operational(host.netns)
            # Fill the neighbour tables so the first packets are not ARP exchanges.
            _ip("-n", self.names[0], "neigh", "replace", ip_b, "lladdr", self.b.mac, "dev", "eth0")
            _ip("-n", self.names[1], "neigh", "replace", ip_a, "lladdr", self.a.mac, "dev", "eth0")
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        for name in reversed(self._created):
            _ip("netns", "del", name, check=False)  # deleting a namespace deletes its veth end, and the pair
        self._created.clear()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __iter__(self):
        return iter((self.a, self.b))

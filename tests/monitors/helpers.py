"""What the monitor tests share: quiet test hosts (no traffic but ours), sinks that keep the kernel from
answering, the CLI run as a user runs it."""
from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
from pathlib import Path

from pynetmon.link import tc_programs
from pynetmon.testhosts import Host

REPO = Path(__file__).resolve().parents[2]
V6 = ("fd00:5eed::1", "fd00:5eed::2")


def quiet(*hosts: Host, ipv6: bool = False) -> None:
    """No IPv6 chatter (router solicitations, MLD) unless `ipv6`; with it, fd00:5eed::1/::2 on a and b,
    without duplicate address detection, and each other's MAC filled in."""
    for h in hosts:
        h.run("sysctl", "-qw", f"net.ipv6.conf.eth0.disable_ipv6={0 if ipv6 else 1}")
    if ipv6:
        a, b = hosts
        for h, addr in ((a, V6[0]), (b, V6[1])):
            h.run("ip", "-6", "addr", "add", f"{addr}/64", "dev", "eth0", "nodad")
            # no multicast snooping packets either: MLD reports would be flows too
            h.run("sysctl", "-qw", "net.ipv6.conf.eth0.mldv2_unsolicited_report_interval=0")
        a.run("ip", "-6", "neigh", "replace", V6[1], "lladdr", b.mac, "dev", "eth0")
        b.run("ip", "-6", "neigh", "replace", V6[0], "lladdr", a.mac, "dev", "eth0")


def udp_sink(host: Host, port: int, family: int = socket.AF_INET) -> socket.socket:
    """A bound UDP socket on `host` (so datagrams to `port` draw no ICMP port unreachable)."""
    s = host.socket(family, socket.SOCK_DGRAM)
    s.bind(("::" if family == socket.AF_INET6 else "0.0.0.0", port))
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
    return s


def send_udp(host: Host, dst: str, dport: int, count: int, sport: int, payload: bytes = b"x" * 32) -> None:
    """`count` datagrams from `host`:`sport` to `dst`:`dport` (IPv4 or IPv6)."""
    family = socket.AF_INET6 if ":" in dst else socket.AF_INET
    s = host.socket(family, socket.SOCK_DGRAM)
    try:
        s.bind(("::" if family == socket.AF_INET6 else "0.0.0.0", sport))
        for _ in range(count):
            s.sendto(payload, (dst, dport))
    finally:
        s.close()


def settle() -> None:
    time.sleep(0.1)  # datagrams sent on a veth are processed by the peer's softirq right after sendto


def cli(*args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pynetmon", *args], cwd=REPO, capture_output=True, text=True,
                          timeout=timeout, check=False)


def start_cli(*args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "pynetmon", *args], cwd=REPO, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def wait_started(proc: subprocess.Popen) -> None:
    """Until `pynetmon monitor --json/--events` says its monitor runs (its first line on stderr)."""
    line = proc.stderr.readline()
    assert "started" in line, line + proc.stderr.read()


def wait_attached(host: Host, direction: str = "ingress", timeout: float = 20) -> None:
    """Until some program is attached at `host`'s eth0 tcx hook in `direction`."""
    deadline = time.monotonic() + timeout
    while not tc_programs("eth0", direction, netns=host.netns):
        if time.monotonic() > deadline:
            raise AssertionError(f"nothing attached to eth0 {direction} in {host.netns} after {timeout} s")
        time.sleep(0.05)


def finish_json(proc: subprocess.Popen, timeout: float = 60) -> dict:
    out, err = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, err
    return json.loads(out)

"""What the capture tests share: reading pcap files (with dpkt), a live tcpdump on a test host, traffic."""
from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import dpkt

from pynetmon.testhosts import Host


@dataclass(frozen=True)
class Packet:
    ts_ns: int
    caplen: int
    wirelen: int
    data: bytes

    def key(self) -> tuple[bytes, int, int]:
        """What two captures of the same packet must agree on (timestamps differ by design)."""
        return self.data, self.caplen, self.wirelen


@dataclass(frozen=True)
class PcapFile:
    magic: int
    snaplen: int
    linktype: int
    packets: list[Packet]


def read_pcap(path: str | os.PathLike) -> PcapFile:
    """Every record of a pcap file, read with dpkt's header classes (both lengths and nanoseconds kept)."""
    raw = Path(path).read_bytes()
    header = dpkt.pcap.LEFileHdr(raw[:24])
    assert header.magic in (dpkt.pcap.TCPDUMP_MAGIC_NANO, dpkt.pcap.TCPDUMP_MAGIC), f"bad magic {header.magic:#x}"
    nano = header.magic == dpkt.pcap.TCPDUMP_MAGIC_NANO
    packets, offset = [], 24
    while offset < len(raw):
        hdr = dpkt.pcap.LEPktHdr(raw[offset:offset + 16])
        data = raw[offset + 16:offset + 16 + hdr.caplen]
        assert len(data) == hdr.caplen, "truncated record"
        frac = hdr.tv_usec if nano else hdr.tv_usec * 1000
        packets.append(Packet(hdr.tv_sec * 1_000_000_000 + frac, hdr.caplen, hdr.len, data))
        offset += 16 + hdr.caplen
    return PcapFile(header.magic, header.snaplen, header.linktype, packets)


def dpkt_reader_packets(path: str | os.PathLike) -> list[tuple[float, bytes]]:
    """The file through dpkt's own Reader (what a dpkt user gets)."""
    with open(path, "rb") as f:
        return [(float(ts), bytes(buf)) for ts, buf in dpkt.pcap.Reader(f)]


def tcpdump_count(path: str | os.PathLike, expr: str | None = None) -> int:
    """How many packets `tcpdump -r` reads from the file (optionally through a filter)."""
    cmd = ["tcpdump", "-nn", "-r", str(path)]
    if expr and expr != "all":
        cmd.append(expr)
    proc = subprocess.run(cmd, check=False, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    return len([line for line in proc.stdout.splitlines() if line.strip()])


class LiveTcpdump:
    """tcpdump writing `path` on a test host's eth0 while the test runs (immediate mode, nanoseconds)."""

    DIRECTIONS: ClassVar[dict[str, str]] = {"ingress": "in", "egress": "out", "bidirectional": "inout"}

    def __init__(self, host: Host, path: str | os.PathLike, expr: str, snaplen: int,
                 direction: str = "bidirectional", ifname: str = "eth0"):
        self.path = str(path)
        cmd = ["tcpdump", "-i", ifname, "-w", self.path, "-s", str(snaplen), "-Q", self.DIRECTIONS[direction],
               "--immediate-mode", "--time-stamp-precision", "nano", "-B", "65536", "-U", "-nn"]
        if expr != "all":
            cmd.append(expr)
        self.proc = host.popen(*cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        self.stderr: list[str] = []
        line = self.proc.stderr.readline()  # "listening on eth0, ..." once its socket is set up
        self.stderr.append(line)
        if "listening on" not in line:
            self.proc.kill()
            raise AssertionError(f"tcpdump did not start: {line}{self.proc.stderr.read()}")

    def stop(self, expect: int | None = None) -> PcapFile:
        """Stop tcpdump and read its file; with `expect`, first wait (up to 10 s) until it has written that
        many packets: it reads its socket on its own schedule, and SIGINT drops what it has not read yet."""
        if expect:
            deadline = time.monotonic() + 10
            while self.written() < expect and time.monotonic() < deadline:
                time.sleep(0.01)
        self.proc.send_signal(signal.SIGINT)
        _, err = self.proc.communicate(timeout=30)
        self.stderr.append(err)
        return read_pcap(self.path)


    def written(self) -> int:
        """Whole records in the file so far (it is being written: a record may be cut short)."""
        raw = Path(self.path).read_bytes() if os.path.exists(self.path) else b""
        count, offset = 0, 24
        while offset + 16 <= len(raw):
            offset += 16 + int.from_bytes(raw[offset + 8:offset + 12], "little")
            if offset > len(raw):
                break
            count += 1
        return count


def disable_ipv6(*hosts: Host) -> None:
    """No router solicitations or MLD reports: the only packets on the link are the test's own."""
    for host in hosts:
        host.run("sysctl", "-q", "-w", "net.ipv6.conf.all.disable_ipv6=1")
        host.run("sysctl", "-q", "-w", "net.ipv6.conf.default.disable_ipv6=1")
        host.run("sysctl", "-q", "-w", "net.ipv6.conf.eth0.disable_ipv6=1")


def udp_payloads(count: int, tag: bytes, size: int = 300) -> list[bytes]:
    """Distinct payloads: tag, sequence number, filler up to `size` bytes."""
    return [(tag + b"-%06d-" % i).ljust(size, bytes([65 + i % 26])) for i in range(count)]


def send_udp(host: Host, dst: str, port: int, payloads: list[bytes]) -> None:
    sock = host.socket(socket.AF_INET, socket.SOCK_DGRAM)
    with sock:
        for payload in payloads:
            sock.sendto(payload, (dst, port))


def ping(host: Host, dst: str, count: int = 3) -> None:
    host.run("ping", "-c", str(count), "-i", "0.01", "-W", "1", dst)


@contextlib.contextmanager
def tcp_sink(host: Host, port: int):
    """A TCP server on `host` that reads everything it is sent; yields a list that receives the byte counts."""
    server = host.socket(socket.AF_INET, socket.SOCK_STREAM)
    server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    server.bind((host.ip, port))
    server.listen(4)
    server.settimeout(0.05)  # accept() is not woken by close(): poll a stop flag instead
    received: list[int] = []
    stop = threading.Event()

    def serve():
        with contextlib.suppress(OSError):
            while not stop.is_set():
                try:
                    conn, _ = server.accept()
                except TimeoutError:
                    continue
                conn.settimeout(None)
                with conn:
                    total = 0
                    while chunk := conn.recv(1 << 16):
                        total += len(chunk)
                    received.append(total)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield received
    finally:
        stop.set()
        thread.join(5)
        server.close()


def send_tcp(host: Host, dst: str, port: int, data: bytes) -> None:
    sock = host.socket(socket.AF_INET, socket.SOCK_STREAM)
    with sock:
        sock.connect((dst, port))
        sock.sendall(data)
        sock.shutdown(socket.SHUT_WR)
        sock.recv(1)  # wait for the server's FIN, so the whole exchange is on the wire

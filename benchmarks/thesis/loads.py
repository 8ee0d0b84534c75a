"""The thesis' loads on this machine's test hosts: iperf3 TCP, nginx + h2load, and the "rows" (what is
attached to the server's interface while they run).

Everything runs inside network namespaces the benchmark creates (pynetmon.testhosts), and everything
started here is stopped here.
"""
from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pynetmon import monitors
from pynetmon.link import attach_tc
from pynetmon.object import BPFObject
from pynetmon.testhosts import Host
from pynetmon.toolchain import compile_c

HERE = Path(__file__).resolve().parent
IPERF_PORT = 5201
HTTP_PORT = 8888
MIRROR = "pnmthesis0"
PERCENTILES = (50, 90, 99, 99.9, 99.99, 99.9999)
"""The request-time percentiles of the thesis' tables."""


def cpu_prefix(cpus: int | None) -> list[str]:
    """`taskset -c 0[,1]` for a run limited to `cpus` CPUs (None: no limit)."""
    return [] if cpus is None else ["taskset", "-c", ",".join(str(i) for i in range(cpus))]


# -- what is attached to the server side --------------------------------------------------------
@contextlib.contextmanager
def row(name: str, host: Host, ifname: str = "eth0", ports: tuple[int, ...] = (HTTP_PORT,),
        **options: Any) -> Iterator[monitors.Monitor | None]:
    """Attach what row `name` measures to `ifname` in `host`'s namespace for the block:
    - "untraced": nothing;
    - "tc": the hooks alone (a clsact qdisc without filters: the kernel's TC paths run, no program);
    - "pass": a program that only hands the packet on, on tcx ingress and egress;
    - "traced": the http monitor on both directions with mirroring armed (to a veth end it creates);
    - "tcpdump": tcpdump with a filter and a 128-byte snaplen writing to /dev/null (the libpcap way).
    Yields the monitor for "traced"."""
    if name == "untraced":
        yield None
    elif name == "tc":
        host.run("tc", "qdisc", "add", "dev", ifname, "clsact")
        try:
            yield None
        finally:
            host.run("tc", "qdisc", "del", "dev", ifname, "clsact", check=False)
    elif name == "pass":
        with BPFObject(compile_c((HERE / "pass.bpf.c").read_text(), filename="pass.bpf.c")) as obj:
            obj.load()
            links = [attach_tc(obj.programs["pass"], ifname, d, netns=host.netns) for d in ("ingress", "egress")]
            try:
                yield None
            finally:
                for link in links:
                    link.detach()
    elif name == "traced":
        opts = {"ports": list(ports), "mirror_to": MIRROR, "mirror_create": True, **options}
        with monitors.open("http", interface=ifname, netns=host.netns, **opts) as m:
            yield m
    elif name == "tcpdump":
        expr = " or ".join(f"tcp port {p}" for p in ports)
        proc = host.popen("tcpdump", "-i", ifname, "-n", "-s", "128", "-w", "/dev/null", expr,
                          stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        try:
            line = proc.stderr.readline()
            if "listening on" not in line:
                raise RuntimeError(f"tcpdump did not start: {line}")
            yield None
        finally:
            proc.send_signal(signal.SIGINT)
            proc.wait(10)
    else:
        raise ValueError(f"unknown row {name!r}")


# -- iperf3 -------------------------------------------------------------------------------------
def iperf3(client: Host, server: Host, server_ip: str, duration: int, omit: int, cpus: int | None = None) -> float:
    """One iperf3 TCP run with the thesis' client options (`-i 1 -J -Z -O omit -t duration`); bits/s
    received."""
    srv = server.popen(*cpu_prefix(cpus), "iperf3", "-s", "-1", "-p", str(IPERF_PORT),
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        _wait_port(server, IPERF_PORT)
        out = client.run(*cpu_prefix(cpus), "iperf3", "-c", server_ip, "-p", str(IPERF_PORT), "-i", "1", "-J",
                         "-Z", "-O", str(omit), "-t", str(duration), timeout=duration + omit + 30)
        return float(json.loads(out.stdout)["end"]["sum_received"]["bits_per_second"])
    finally:
        try:
            srv.wait(5)  # `-1`: the server ends after one test
        except subprocess.TimeoutExpired:
            srv.kill()
            srv.wait()


def _wait_port(host: Host, port: int, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if f":{port} " in host.run("ss", "-Hltn").stdout:
            return
        time.sleep(0.05)
    raise RuntimeError(f"nothing listens on port {port} in {host.netns}")


# -- nginx + h2load -----------------------------------------------------------------------------
class Nginx:
    """The thesis' nginx in `host`'s namespace, with its own config in a temp dir (nginx.conf.in)."""

    def __init__(self, host: Host, cpus: int | None = None):
        self.dir = tempfile.TemporaryDirectory(prefix="pnm-nginx-")
        os.chmod(self.dir.name, 0o755)  # the workers (www-data) make their temp dirs under it
        conf = Path(self.dir.name) / "nginx.conf"
        conf.write_text((HERE / "nginx.conf.in").read_text().replace("@PREFIX@", self.dir.name))
        self.host = host
        self.proc = host.popen(*cpu_prefix(cpus), "nginx", "-c", str(conf), "-p", self.dir.name,
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        try:
            _wait_port(host, HTTP_PORT)
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGQUIT)  # graceful: workers finish, master removes its pid file
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.dir.cleanup()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def uris(server_ip: str, error_share: float) -> list[str]:
    """h2load cycles through its URIs per client: four URIs give the shares 0, 25, 50, 75, 100%."""
    errors = round(error_share * 4)
    host = f"[{server_ip}]" if ":" in server_ip else server_ip
    return [f"http://{host}:{HTTP_PORT}/bar"] * errors + [f"http://{host}:{HTTP_PORT}/foo"] * (4 - errors)


@dataclass
class H2loadResult:
    seconds: float
    rps: float
    """h2load's own "req/s": requests done (any status) per second."""
    requests: int
    succeeded: int
    failed: int
    """h2load counts non-2xx/3xx responses as failed: at 100% errors every request "fails"."""
    status: dict[str, int]
    percentiles_us: dict[str, float] = field(default_factory=dict)


_FINISHED = re.compile(r"finished in ([\d.]+)(m?s), ([\d.]+) req/s")
_REQUESTS = re.compile(r"requests: (\d+) total, \d+ started, \d+ done, (\d+) succeeded, (\d+) failed")
_STATUS = re.compile(r"status codes: (\d+) 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx")


def h2load(client: Host, server_ip: str, error_share: float, requests: int, workdir: str,
           cpus: int | None = None) -> H2loadResult:
    """The thesis' h2load (`-c 10 -m 1 -N 15 -T 15 --h1`) for a fixed number of requests (so that the
    monitor's counts can be checked exactly against h2load's), with per-request times logged."""
    log = os.path.join(workdir, "h2load.log")
    out = client.run(*cpu_prefix(cpus), "h2load", "-c", "10", "-m", "1", "-N", "15", "-T", "15", "--h1",
                     "-n", str(requests), f"--log-file={log}", *uris(server_ip, error_share), timeout=600).stdout
    m = _FINISHED.search(out)
    seconds = float(m.group(1)) / (1000 if m.group(2) == "ms" else 1)
    total, ok, failed = (int(x) for x in _REQUESTS.search(out).groups())
    status = dict(zip(("2xx", "3xx", "4xx", "5xx"), (int(x) for x in _STATUS.search(out).groups())))
    times = sorted(int(line.split("\t")[2]) for line in Path(log).read_text().splitlines() if line.strip())
    os.unlink(log)
    pct = {f"p{p:g}": float(times[min(len(times) - 1, int(len(times) * p / 100))]) for p in PERCENTILES} if times else {}
    return H2loadResult(seconds, float(m.group(3)), total, ok, failed, status, pct)


def load_average() -> str:
    return " ".join(open("/proc/loadavg").read().split()[:3])


def hostname() -> str:
    return socket.gethostname()

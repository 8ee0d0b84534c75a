"""A fleet on one machine: nodes as network namespaces on one bridge, each running its own `pynetmon serve`
on its own address, and a real Prometheus (Debian's binary) that finds them through `file_sd` — what a
DaemonSet and a Prometheus server are on a cluster, without one. Used by tests/deployment/test_fleet.py
and `make fleet-demo` (`python -m pynetmon.testfleet`: the same steps, with the PromQL results printed).

    monitoring namespace  (bridge br0 198.18.x.1, Prometheus on its 127.0.0.1:9090, the test's REST calls)
        │ veth to each node
    node-1 eth0 198.18.x.2   node-2 eth0 198.18.x.3   node-3 eth0 198.18.x.4
    (pynetmon serve on ADDRESS:9000 in each, with a token; /metrics open for Prometheus)

Each node's monitors come from `pynetmon serve --config FILE` (docs/deploy.md), the file kept as the kubelet
keeps a mounted ConfigMap (`config.json` → `..data/config.json`, `..data` swapped to a new directory on
every `rewrite()`), so a config change reaches every node as it would on a cluster. Everything is removed
on exit: daemons stopped (they detach what they attached), namespaces deleted, files removed.

>>> with TestFleet() as fleet:
...     fleet.start({"monitors": {"flows": {"kind": "flows", "interfaces": ["eth0"]}}})   # --config
...     fleet.start_prometheus()
...     fleet.nodes[0].host.send_udp(fleet.nodes[1].host.ip, 7000, 100)
...     fleet.wait_for('sum by (node) (flow_packets_total{direction="ingress", dport="7000"})', {"node-2": 100})
"""
from __future__ import annotations

import hashlib
import itertools
import json
import os
import random
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Self

import httpx

from . import netns
from .errors import Error
from .testhosts import Host, _ip, _wait_operational

DAEMON_PORT = 9000  # every node has its own namespace, so every daemon can listen on the usual port
PROMETHEUS_PORT = 9090
PODMAN = ("podman", "--runtime", "runc", "--cgroup-manager=cgroupfs")  # crun fails on this host's hybrid cgroups
_counter = itertools.count()


@dataclass
class Node:
    """One node: its namespace and address (`host`), its daemon, and the directory its config lives in."""

    name: str
    host: Host
    token: str
    workdir: Path
    process: subprocess.Popen | None = None
    log: Any = None
    config_version: int = 0
    container: str | None = None  # the podman container the daemon runs in, if it does
    declared: dict[str, Any] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return f"http://{self.host.ip}:{DAEMON_PORT}"

    @property
    def config_path(self) -> Path:
        """What the daemon is given: `config.json`, a link through `..data` as in a mounted ConfigMap."""
        return self.workdir / "config" / "config.json"

    def log_text(self) -> str:
        path = self.workdir / "serve.log"
        return path.read_text(errors="replace") if path.exists() else ""


class TestFleet:
    """`nodes` nodes (default 3) and a monitoring namespace, joined by a bridge. Use as a context manager."""

    __test__ = False

    def __init__(self, nodes: int = 3, prefix: str = "pnf", image: str | None = None):
        """`image`: node-1's daemon runs from this container image (podman, three capabilities, the shipped
        seccomp profile, the config directory mounted as a ConfigMap volume would be) instead of this
        checkout; the other nodes run this checkout."""
        if not 1 <= nodes <= 12:
            raise ValueError("a test fleet has 1 to 12 nodes")
        self.image = image
        tag = f"{prefix}{os.getpid() % 100000}x{next(_counter)}"
        self.monitoring = f"{tag}mon"
        self.workdir = Path(tempfile.mkdtemp(prefix="pynetmon-fleet-"))
        self.prometheus_url = f"http://127.0.0.1:{PROMETHEUS_PORT}"
        self._prometheus: subprocess.Popen | None = None
        self._created: list[str] = []
        self.nodes: list[Node] = []
        net = random.randrange(0, 1 << 13)  # a /28 inside 198.18.0.0/15, as test hosts use
        base = (198 << 24) | (18 << 16) | (net << 4)
        address = [socket.inet_ntoa((base + i).to_bytes(4, "big")) for i in range(16)]
        try:
            _ip("netns", "add", self.monitoring)
            self._created.append(self.monitoring)
            _ip("-n", self.monitoring, "link", "set", "lo", "up")
            _ip("-n", self.monitoring, "link", "add", "br0", "type", "bridge")
            _ip("-n", self.monitoring, "addr", "add", f"{address[1]}/28", "dev", "br0")
            _ip("-n", self.monitoring, "link", "set", "br0", "up")
            for i in range(1, nodes + 1):
                self.nodes.append(self._add_node(tag, i, address[1 + i]))
            for node in self.nodes:
                _wait_operational(node.host.netns)
        except BaseException:
            self.close()
            raise

    def _add_node(self, tag: str, i: int, ip: str) -> Node:
        ns = f"{tag}n{i}"
        _ip("netns", "add", ns)
        self._created.append(ns)
        _ip("-n", ns, "link", "set", "lo", "up")
        outer, inner = f"{tag}p{i}"[:15], f"{tag}e{i}"[:15]
        _ip("link", "add", outer, "type", "veth", "peer", "name", inner)
        _ip("link", "set", outer, "netns", self.monitoring)
        _ip("-n", self.monitoring, "link", "set", outer, "master", "br0", "up")
        _ip("link", "set", inner, "netns", ns)
        _ip("-n", ns, "link", "set", inner, "name", "eth0")
        _ip("-n", ns, "addr", "add", f"{ip}/28", "dev", "eth0")
        _ip("-n", ns, "link", "set", "eth0", "up")
        mac = _ip("-n", ns, "-br", "link", "show", "eth0").stdout.split()[2]
        workdir = self.workdir / f"node-{i}"
        (workdir / "config").mkdir(parents=True)
        node = Node(f"node-{i}", Host(ns, "eth0", ip, mac, prefixlen=28), secrets.token_hex(16), workdir)
        token_file = workdir / "token"
        token_file.write_text(node.token + "\n")
        token_file.chmod(0o600)
        return node

    # -- the daemons --------------------------------------------------------------------------------
    def start(self, declared: dict[str, Any], timeout: float = 60) -> None:
        """Start every node's `pynetmon serve --config FILE`, the same `declared` config on each (as one
        ConfigMap mounted on every node; `${NODE_NAME}` and `${NODE_NETNS}` differ); `rewrite()` changes it."""
        for node in self.nodes:
            self._write_config(node, declared)
            node.log = open(node.workdir / "serve.log", "wb")  # noqa: SIM115 - closed in close()
            if self.image and node is self.nodes[0]:
                node.process = self._run_image(node)
                continue
            args = [sys.executable, "-m", "pynetmon", "serve", "--listen", f"{node.host.ip}:{DAEMON_PORT}",
                    "--token-file", str(node.workdir / "token"), "--capture-dir", str(node.workdir / "captures"),
                    "--config", str(node.config_path), "--config-poll", "0.5"]
            env = {**os.environ, "NODE_NAME": node.name, "NODE_NETNS": node.host.netns}
            node.process = node.host.popen(*args, stdout=subprocess.PIPE, stderr=node.log, env=env)
        deadline = time.monotonic() + timeout
        for node in self.nodes:
            assert node.process is not None and node.process.stdout is not None
            line = node.process.stdout.readline().decode()  # the daemon's "listening on URL"
            if "listening on" not in line:
                node.process.wait(timeout=30)
                raise Error(f"pynetmon serve on {node.name} did not start: {line!r}\n{node.log_text()}")
            while time.monotonic() < deadline:
                if self._ready(node):
                    break
                time.sleep(0.2)
            else:
                raise Error(f"{node.name} not ready after {timeout} s:\n{node.log_text()}")
        self.wait_applied(max(1.0, deadline - time.monotonic()))

    def _run_image(self, node: Node) -> subprocess.Popen:
        """`podman run` in the foreground (SIGTERM reaches the daemon through podman's signal proxy) in the
        node's namespace (what `--network host` is on a node), as docs/deploy.md runs the image. The node's
        directory is /etc/pynetmon (token, and config/ as a ConfigMap volume: the `..data` swap shows
        through); `${NODE_NETNS}` is the daemon's own namespace as the container sees it (no /run/netns)."""
        seccomp = Path(__file__).resolve().parents[1] / "deploy" / "container" / "seccomp.json"
        if not seccomp.exists():
            raise Error(f"{seccomp} is missing: a fleet with an image node runs from a checkout")
        nofile = os.sysconf("SC_OPEN_MAX")
        node.container = f"{self.monitoring}-{node.name}"
        return subprocess.Popen(
            [*PODMAN, "run", "--rm", "--name", node.container, f"--network=ns:/run/netns/{node.host.netns}",
             "--cap-drop=all", "--cap-add=BPF,NET_ADMIN,PERFMON", f"--security-opt=seccomp={seccomp}",
             f"--ulimit=nofile={nofile}:{nofile}", "--ulimit=nproc=4096:4096", "-v", "/sys/fs/bpf:/sys/fs/bpf",
             "-v", f"{node.workdir}:/etc/pynetmon:ro", "-e", f"NODE_NAME={node.name}", "-e", "NODE_NETNS=/proc/1/ns/net",
             str(self.image), "--listen", f"{node.host.ip}:{DAEMON_PORT}", "--token-file", "/etc/pynetmon/token",
             "--config", "/etc/pynetmon/config/config.json", "--config-poll", "0.5", "--capture-dir", "/tmp/captures"],
            stdout=subprocess.PIPE, stderr=node.log)

    def _ready(self, node: Node) -> bool:
        try:
            return self.api(node, "GET", "/readyz").status_code == 200
        except httpx.HTTPError:
            return False

    def api(self, node: Node, method: str, path: str, **kw: Any) -> httpx.Response:
        """A REST call to a node's daemon with its token, from the monitoring namespace (as Prometheus and
        an operator's client reach it)."""
        headers = {"Authorization": f"Bearer {node.token}"}
        with netns.enter(self.monitoring):
            return httpx.request(method, node.url + path, headers=headers, timeout=30, **kw)

    # -- the declarative config, as a mounted ConfigMap ---------------------------------------------
    def _write_config(self, node: Node, declared: dict[str, Any]) -> None:
        """Write `declared` the way the kubelet updates a ConfigMap volume: a new `..VERSION` directory,
        the `..data` link swapped to it in one rename, `config.json` a link through `..data`."""
        node.config_version += 1
        top = node.workdir / "config"
        version = top / f"..{node.config_version}"
        version.mkdir()
        (version / "config.json").write_text(json.dumps(declared, indent=2))
        tmp = top / "..data_tmp"
        tmp.symlink_to(version.name)
        os.replace(tmp, top / "..data")
        if not node.config_path.is_symlink():
            node.config_path.symlink_to("..data/config.json")
        node.declared = declared

    def rewrite(self, declared: dict[str, Any]) -> None:
        """A ConfigMap update: every node's config file replaced (the daemons notice it by themselves)."""
        for node in self.nodes:
            self._write_config(node, declared)

    def config_status(self, node: Node) -> dict[str, Any]:
        """The node's `GET /config`."""
        r = self.api(node, "GET", "/config")
        r.raise_for_status()
        return r.json()

    def wait_applied(self, timeout: float = 30) -> None:
        """Wait until every node has applied the config file as it is now (its sha256), successfully."""
        deadline = time.monotonic() + timeout
        for node in self.nodes:
            digest = hashlib.sha256(node.config_path.read_bytes()).hexdigest()
            while True:
                status = self.config_status(node)
                if status.get("applied-sha256") == digest:
                    break
                if time.monotonic() > deadline:
                    raise Error(f"{node.name} has not applied its config ({digest[:12]}) after {timeout} s: "
                                f"{json.dumps(status.get('last-reload'))}\n{node.log_text()[-2000:]}")
                time.sleep(0.3)

    # -- Prometheus ---------------------------------------------------------------------------------
    def start_prometheus(self, scrape_interval: str = "1s") -> None:
        """Debian's `prometheus` in the monitoring namespace, scraping every node found through file_sd
        (the `node` label is a target label, as docs/deploy.md says)."""
        binary = shutil.which("prometheus")
        if binary is None:
            raise Error("the `prometheus` Debian package is required (make deps installs it)")
        directory = self.workdir / "prometheus"
        directory.mkdir()
        targets = [{"targets": [f"{n.host.ip}:{DAEMON_PORT}"], "labels": {"node": n.name}} for n in self.nodes]
        (directory / "targets.json").write_text(json.dumps(targets))
        (directory / "prometheus.yml").write_text(json.dumps({
            "global": {"scrape_interval": scrape_interval, "scrape_timeout": scrape_interval,
                       "evaluation_interval": scrape_interval},
            "scrape_configs": [{"job_name": "pynetmon",
                                "file_sd_configs": [{"files": [str(directory / "targets.json")],
                                                     "refresh_interval": "5s"}]}],
        }))
        log = open(directory / "prometheus.log", "wb")  # noqa: SIM115 - closed in close()
        self._prometheus_log = log
        self._prometheus = subprocess.Popen(
            ["ip", "netns", "exec", self.monitoring, binary, f"--config.file={directory / 'prometheus.yml'}",
             f"--storage.tsdb.path={directory / 'tsdb'}", f"--web.listen-address=127.0.0.1:{PROMETHEUS_PORT}"],
            stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                with netns.enter(self.monitoring):
                    r = httpx.get(f"{self.prometheus_url}/api/v1/targets", timeout=5)
                active = r.json()["data"]["activeTargets"]
                if len(active) == len(self.nodes) and all(t["health"] == "up" for t in active):
                    return
            except (httpx.HTTPError, ValueError, KeyError):
                pass  # still starting
            if self._prometheus.poll() is not None:
                break
            time.sleep(0.5)
        raise Error(f"Prometheus did not scrape all {len(self.nodes)} nodes:\n"
                    f"{(directory / 'prometheus.log').read_text(errors='replace')[-3000:]}")

    def query(self, promql: str) -> list[dict[str, Any]]:
        """An instant query through Prometheus' HTTP API: the result vector."""
        with netns.enter(self.monitoring):
            r = httpx.get(f"{self.prometheus_url}/api/v1/query", params={"query": promql}, timeout=10)
        r.raise_for_status()
        return r.json()["data"]["result"]

    def values(self, promql: str, by: str = "node") -> dict[str, float]:
        """A query's samples keyed by one label (the empty string for a sum without labels)."""
        return {sample["metric"].get(by, ""): float(sample["value"][1]) for sample in self.query(promql)}

    def wait_for(self, promql: str, expected: dict[str, float], by: str = "node", timeout: float = 30) -> dict[str, float]:
        """Query until the result equals `expected` (Prometheus has scraped what was sent) or `timeout`
        passes; returns the last result, for the caller to compare."""
        deadline = time.monotonic() + timeout
        while True:
            got = self.values(promql, by)
            if got == expected or time.monotonic() > deadline:
                return got
            time.sleep(0.5)

    # -- the end --------------------------------------------------------------------------------------
    def close(self) -> None:
        for node in self.nodes:
            if node.process is not None:
                if node.process.poll() is None:
                    node.process.send_signal(signal.SIGTERM)
                    try:
                        node.process.wait(timeout=30)
                    except subprocess.TimeoutExpired:
                        node.process.kill()
                        node.process.wait()
                if node.process.stdout is not None:
                    node.process.stdout.close()
            if node.container:
                subprocess.run([*PODMAN, "rm", "-f", node.container], capture_output=True, check=False, timeout=60)
            if node.log is not None:
                node.log.close()
        if self._prometheus is not None:
            self._prometheus.terminate()
            try:
                self._prometheus.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self._prometheus.kill()
                self._prometheus.wait()
            self._prometheus_log.close()
            self._prometheus = None
        for name in reversed(self._created):
            _ip("netns", "del", name, check=False)
        self._created.clear()
        shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# -- the scenario the test and the demo share ----------------------------------------------------------
UDP_PORT = 7000  # nothing listens there: every datagram is also a NO_SOCKET drop at its receiver
PAYLOAD = 32  # Host.send_udp's default datagram
FRAME_BYTES = 14 + 20 + 8 + PAYLOAD  # what the flows monitor counts per datagram (the frame as captured)
FLOWS = {"kind": "flows", "interfaces": ["eth0"], "options": {"aggregate": ["proto", "dport"]}}
# The ConfigMap before and after the change: flows unchanged, dns removed, drops (kernel drops in the node's
# own namespace: a tracepoint sees every namespace) added.
CONFIG_BEFORE = {"monitors": {"flows": FLOWS, "dns": {"kind": "dns", "interfaces": ["eth0"]}}}
CONFIG_AFTER = {"monitors": {"flows": FLOWS, "drops": {"kind": "drops", "netns": "${NODE_NETNS}"}}}
NO_SOCKET = 'drop_total{reason="NO_SOCKET"}'
INGRESS = f'flow_packets_total{{direction="ingress", proto="udp", dport="{UDP_PORT}"}}'
EGRESS = f'flow_packets_total{{direction="egress", proto="udp", dport="{UDP_PORT}"}}'
INGRESS_BYTES = f'flow_bytes_total{{direction="ingress", proto="udp", dport="{UDP_PORT}"}}'


def send_matrix(fleet: TestFleet, counts: dict[tuple[int, int], int]) -> tuple[dict[str, float], dict[str, float]]:
    """`counts[(i, j)]` UDP datagrams from node i to node j (indexes into fleet.nodes), to UDP_PORT.
    Returns what each node sent and received, keyed by node name (a node without traffic is absent)."""
    sent: dict[str, float] = {}
    received: dict[str, float] = {}
    for (i, j), count in counts.items():
        src, dst = fleet.nodes[i], fleet.nodes[j]
        if src.host.send_udp(dst.host.ip, UDP_PORT, count) != count:
            raise Error(f"{src.name} could not send {count} datagrams to {dst.name}")
        sent[src.name] = sent.get(src.name, 0) + count
        received[dst.name] = received.get(dst.name, 0) + count
    return sent, received


def add(*totals: dict[str, float]) -> dict[str, float]:
    """Per-node totals added up."""
    out: dict[str, float] = {}
    for total in totals:
        for node, value in total.items():
            out[node] = out.get(node, 0) + value
    return out


def checks(sent: dict[str, float], received: dict[str, float]) -> list[tuple[str, dict[str, float], str]]:
    """(PromQL, expected result, label the result is keyed by): per node and fleet-wide sums, packets both
    ways and bytes, all exact."""
    total = sum(sent.values())
    return [
        (f"sum by (node) ({INGRESS})", received, "node"),
        (f"sum by (node) ({EGRESS})", sent, "node"),
        (f"sum({INGRESS})", {"": total}, "node"),
        (f"sum({EGRESS})", {"": total}, "node"),
        (f"sum({INGRESS_BYTES})", {"": total * FRAME_BYTES}, "node"),
    ]


def demo() -> int:
    """`make fleet-demo`: three nodes, traffic among them, Prometheus' answers beside what was sent; then a
    ConfigMap change on every node, and the answers again."""
    def show(fleet: TestFleet, cases: list[tuple[str, dict[str, float], str]]) -> bool:
        ok = True
        for promql, expected, by in cases:
            got = fleet.wait_for(promql, expected, by)
            ok &= got == expected
            verdict = "ok" if got == expected else "DIFFERENT"
            print(f"  {promql}\n    Prometheus: {_fmt(got)}   expected: {_fmt(expected)}   {verdict}")
        return ok

    started = time.monotonic()
    with TestFleet() as fleet:
        print(f"nodes: {', '.join(f'{n.name} {n.host.ip} (netns {n.host.netns})' for n in fleet.nodes)}")
        fleet.start(CONFIG_BEFORE)
        fleet.start_prometheus()
        print(f"pynetmon serve --config on each node (flows, dns), Prometheus scraping them through file_sd "
              f"({time.monotonic() - started:.1f} s)")
        sent, received = send_matrix(fleet, {(0, 1): 100, (1, 2): 200, (2, 0): 300, (0, 2): 40})
        print(f"sent UDP to port {UDP_PORT}: node-1→node-2 100, node-2→node-3 200, node-3→node-1 300, node-1→node-3 40")
        ok = show(fleet, checks(sent, received))
        fleet.rewrite(CONFIG_AFTER)
        fleet.wait_applied()
        changes = fleet.config_status(fleet.nodes[0])["last-reload"]["changes"]
        print(f"config rewritten on every node (ConfigMap-style): node-1 {changes}")
        sent2, received2 = send_matrix(fleet, {(1, 0): 10, (2, 1): 20, (0, 2): 30})
        print("sent again: node-2→node-1 10, node-3→node-2 20, node-1→node-3 30; flows kept its counters, "
              "drops counts from its start")
        ok &= show(fleet, [*checks(add(sent, sent2), add(received, received2)),
                           (f"sum by (node) ({NO_SOCKET})", received2, "node")])
    print(f"{'all equal' if ok else 'SOME DIFFER'} ({time.monotonic() - started:.1f} s)")
    return 0 if ok else 1


def _fmt(values: dict[str, float]) -> str:
    return ", ".join(f"{k}={v:g}" if k else f"{v:g}" for k, v in sorted(values.items())) or "(nothing)"


if __name__ == "__main__":
    sys.exit(demo())

"""A real Prometheus server (Debian's `prometheus`) scrapes the daemon; its HTTP API must return the
monitor's metric with the exact count of packets sent."""
from __future__ import annotations

import json
import shutil
import socket
import subprocess
import time

import httpx
import pytest

from .dataplanes import UDP_PORT, counter_config


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def prometheus(tmp_path):
    """Start Prometheus on loopback; yields a function that points it at a daemon port (with target
    `labels`, as a ServiceMonitor's relabelling or a file_sd entry would set them)."""
    binary = shutil.which("prometheus")
    if binary is None:
        pytest.fail("the `prometheus` Debian package is required (make deps installs it)")
    procs = []

    def start(target_port: int, labels: dict[str, str] | None = None) -> str:
        port = _free_port()
        config = tmp_path / "prometheus.yml"
        config.write_text(f"""
global: {{scrape_interval: 1s, scrape_timeout: 1s, evaluation_interval: 1s}}
scrape_configs:
  - job_name: pynetmon
    static_configs: [{{targets: ["127.0.0.1:{target_port}"], labels: {json.dumps(labels or {})}}}]
""")
        log = open(tmp_path / "prometheus.log", "wb")  # noqa: SIM115 - closed with the process
        procs.append((subprocess.Popen([binary, f"--config.file={config}", f"--storage.tsdb.path={tmp_path}/tsdb",
                                        f"--web.listen-address=127.0.0.1:{port}"],
                                       stdout=log, stderr=subprocess.STDOUT), log))
        return f"http://127.0.0.1:{port}"

    yield start
    for proc, log in procs:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


def _query(url: str, promql: str) -> list:
    r = httpx.get(f"{url}/api/v1/query", params={"query": promql}, timeout=5)
    r.raise_for_status()
    return r.json()["data"]["result"]


def test_prometheus_scrapes_the_daemon(host_daemon, prometheus):
    d, a, b = host_daemon
    d.client.post("/polycube/v1/dynmon/prom", json={"dataplane-config": counter_config()}).raise_for_status()
    d.client.post("/polycube/v1/attach", json={"cube": "prom", "port": "eth0"}).raise_for_status()
    assert a.send_udp(b.ip, UDP_PORT, 123) == 123
    url = prometheus(d.port)
    deadline = time.monotonic() + 60
    result, health = [], None
    while time.monotonic() < deadline:
        try:
            result = _query(url, 'udp_packets_total{monitor="prom"}')
            if result and float(result[0]["value"][1]) == 123:
                break
        except httpx.HTTPError:
            pass  # Prometheus still starting
        time.sleep(0.5)
    try:
        targets = httpx.get(f"{url}/api/v1/targets", timeout=5).json()["data"]["activeTargets"]
        health = [(t["health"], t.get("lastError")) for t in targets]
    except httpx.HTTPError:
        pass
    assert result, f"Prometheus never saw udp_packets_total; targets: {health}"
    sample = result[0]
    assert float(sample["value"][1]) == 123, sample
    assert sample["metric"]["proto"] == "udp" and sample["metric"]["job"] == "pynetmon"
    up = _query(url, 'pynetmon_monitor_up{monitor="prom"}')
    assert float(up[0]["value"][1]) == 1
    flows = _query(url, 'flows_packets_total{monitor="prom"}')
    assert [float(f["value"][1]) for f in flows] == [123]

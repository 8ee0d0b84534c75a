"""The images `make image` builds, run as docs/deploy.md says (`--cap-drop all --cap-add
BPF,NET_ADMIN,PERFMON`, the shipped seccomp profile, no SYS_ADMIN, no kernel sources): opt-in, run by
`make test-image` (not collected by `make test`: the name does not start with test_).

Each container joins test host b's network namespace (`--network ns:...`, what `--network host` is on a
node), so its traffic is only between the test hosts; the REST API is reached with curl inside b.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from pynetmon.testhosts import Host

REPO = Path(__file__).resolve().parents[2]
SECCOMP = REPO / "deploy" / "container" / "seccomp.json"
IMAGE = os.environ.get("IMAGE", "pynetmon")
PORT = 19400
UDP_PORT = 7777
CAPS = "BPF,NET_ADMIN,PERFMON"


def _podman(*args: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess:
    if shutil.which("podman") is None:
        pytest.fail("podman is required (apt-get install podman runc)")
    proc = subprocess.run(["podman", "--runtime", "runc", "--cgroup-manager=cgroupfs", *args],
                          capture_output=True, text=True, timeout=timeout, check=False)
    if check and proc.returncode != 0:
        raise AssertionError(f"podman {' '.join(args)}: {proc.stderr}")
    return proc


class Container:
    """A daemon container in `host`'s namespace."""

    def __init__(self, tag: str, host: Host, caps: str = CAPS):
        self.name = f"pnm-image-test-{os.getpid()}-{tag}"
        self.host = host
        limits = [f"--ulimit=nofile={n}:{n}" for n in (os.sysconf("SC_OPEN_MAX"),)] + ["--ulimit=nproc=4096:4096"]
        _podman("run", "-d", "--name", self.name, f"--network=ns:/run/netns/{host.netns}", "--cap-drop=all",
                f"--cap-add={caps}", f"--security-opt=seccomp={SECCOMP}", *limits,
                "-v", "/sys/fs/bpf:/sys/fs/bpf", f"{IMAGE}:{tag}", "--listen", f"127.0.0.1:{PORT}")

    def curl(self, method: str, path: str, body: dict | None = None) -> str:
        cmd = ["curl", "-sS", "-f", "-X", method, f"http://127.0.0.1:{PORT}{path}"]
        if body is not None:
            cmd += ["-H", "content-type: application/json", "-d", json.dumps(body)]
        return self.host.run(*cmd, timeout=120).stdout

    def wait_ready(self, timeout: float = 60) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            proc = self.host.run("curl", "-sS", f"http://127.0.0.1:{PORT}/readyz", check=False)
            if proc.returncode == 0 and proc.stdout:
                return json.loads(proc.stdout)
            if self.status() == "exited":
                break
            time.sleep(0.5)
        raise AssertionError(f"not ready: {self.logs()}")

    def status(self) -> str:
        return _podman("inspect", "-f", "{{.State.Status}}", self.name).stdout.strip()

    def logs(self) -> str:
        proc = _podman("logs", self.name, check=False)
        return proc.stdout + proc.stderr

    def close(self) -> None:
        _podman("stop", "-t", "20", self.name, check=False)
        _podman("rm", "-f", self.name, check=False)


def _count(metrics: str, family: str, **labels: str) -> float:
    return sum(s.value for f in text_string_to_metric_families(metrics) if f.name == family for s in f.samples
               if all(s.labels.get(k) == v for k, v in labels.items()))


def test_slim_runs_ready_monitors_with_three_capabilities(hosts):
    a, b = hosts
    c = Container("slim", b)
    try:
        ready = c.wait_ready()
        assert ready["status"] == "ready", ready
        c.curl("POST", "/monitors/flows", {"kind": "flows", "interface": "eth0"})
        assert a.send_udp(b.ip, UDP_PORT, 25) == 25
        assert _count(c.curl("GET", "/metrics"), "flow_packets", dport=str(UDP_PORT)) == 25
        assert "no clang on purpose" in c.logs()
    finally:
        c.close()


def test_full_image_compiles_dynmon_code(hosts):
    from service.dataplanes import counter_config  # the tests' counter dataplane (tests/service)
    a, b = hosts
    c = Container("latest", b)
    try:
        assert c.wait_ready()["status"] == "ready"
        c.curl("POST", "/polycube/v1/dynmon/img", {"dataplane-config": counter_config()})
        c.curl("POST", "/polycube/v1/attach", {"cube": "img", "port": "eth0"})
        assert a.send_udp(b.ip, UDP_PORT, 30) == 30
        assert _count(c.curl("GET", "/metrics"), "udp_packets", monitor="img") == 30
    finally:
        c.close()


def test_without_cap_bpf_the_entrypoint_says_what_to_fix(hosts):
    _, b = hosts
    c = Container("slim", b, caps="NET_ADMIN,PERFMON")
    try:
        deadline = time.monotonic() + 60
        while c.status() != "exited" and time.monotonic() < deadline:
            time.sleep(0.5)
        logs = c.logs()
        assert c.status() == "exited", logs
        assert _podman("inspect", "-f", "{{.State.ExitCode}}", c.name).stdout.strip() == "1"
        assert "missing CAP_BPF" in logs and "not starting (pynetmon doctor failed)" in logs, logs
        assert "fix: run with --cap-drop all --cap-add BPF,NET_ADMIN,PERFMON" in logs, logs
    finally:
        c.close()


def test_fleet_with_a_node_from_the_image():
    """tests/deployment/test_fleet.py's fleet with node-1's daemon in the slim image (three capabilities, the
    shipped seccomp profile, its config directory mounted like a ConfigMap volume): the same exact PromQL
    sums, and the ConfigMap rewrite reaches the container through the mount."""
    from deployment.test_fleet import check_fleet

    from pynetmon.testfleet import PODMAN, TestFleet
    with TestFleet(image=f"{IMAGE}:slim") as fleet:
        check_fleet(fleet)
        container = fleet.nodes[0].container
        assert container is not None
        state = subprocess.run([*PODMAN, "inspect", "-f", "{{.State.Status}} {{.Config.Image}}", container],
                               capture_output=True, text=True, check=True).stdout.split()
        assert state == ["running", f"localhost/{IMAGE}:slim"], state


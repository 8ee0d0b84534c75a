"""Least privilege: the daemon runs with only CAP_BPF, CAP_NET_ADMIN and CAP_PERFMON (no CAP_SYS_ADMIN),
as the image (Containerfile) and deploy/kubernetes/daemonset.yaml grant; without CAP_BPF an injection fails with an error
naming the capabilities, and the daemon keeps running.

The daemon is started inside test host b's namespace (`ip netns exec`, as root) and then drops every
other capability with `setpriv` (entering a namespace itself would need CAP_SYS_ADMIN). Its loopback is
b's, so the CLI runs in b's namespace too.
"""
from __future__ import annotations

import json
import shutil

import pytest

from .daemon import Daemon
from .dataplanes import UDP_PORT, counter_config

CAP_NET_ADMIN, CAP_SYS_ADMIN, CAP_PERFMON, CAP_BPF = 12, 21, 38, 39


def _setpriv(*caps: str) -> tuple[str, ...]:
    if shutil.which("setpriv") is None:
        pytest.fail("setpriv (util-linux) is required for the least-privilege test")
    keep = ",".join(["-all"] + [f"+{c}" for c in caps])
    return ("setpriv", f"--inh-caps={keep}", f"--ambient-caps={keep}", f"--bounding-set={keep}", "--")


def _effective_caps(pid: int) -> int:
    # setpriv execs python, so the daemon is the same process (pid of `ip netns exec` → setpriv → python).
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("CapEff:"):
                return int(line.split()[1], 16)
    raise AssertionError("no CapEff line")


def test_runs_with_only_bpf_net_admin_perfmon(hosts, tmp_path):
    a, b = hosts
    netns = ("ip", "netns", "exec", b.netns)
    d = Daemon(prefix=netns + _setpriv("bpf", "net_admin", "perfmon"))
    try:
        assert _effective_caps(d.proc.pid) == (1 << CAP_BPF) | (1 << CAP_NET_ADMIN) | (1 << CAP_PERFMON)
        config = tmp_path / "counter.json"
        config.write_text(json.dumps(counter_config()))
        d.cli("inject", "lp", "eth0", str(config), prefix=netns)
        assert a.send_udp(b.ip, UDP_PORT, 20) == 20
        out = d.cli("extract", "lp", "-t", "ingress", "-n", "udp_packets_total", prefix=netns)
        assert json.loads(out.stdout) == 20  # printed bare, as Polycube's extractor does
    finally:
        assert d.stop() == 0, d.log()
    assert "detached dynmon 'lp' from eth0" in d.log()


def test_without_cap_bpf_injection_fails_clearly(hosts, tmp_path):
    _, b = hosts
    netns = ("ip", "netns", "exec", b.netns)
    d = Daemon(prefix=netns + _setpriv("net_admin", "perfmon"))
    try:
        assert _effective_caps(d.proc.pid) & (1 << CAP_BPF) == 0
        assert _effective_caps(d.proc.pid) & (1 << CAP_SYS_ADMIN) == 0
        config = tmp_path / "counter.json"
        config.write_text(json.dumps(counter_config()))
        out = d.cli("inject", "nope", "eth0", str(config), prefix=netns, check=False)
        assert out.returncode == 1
        assert "CAP_BPF" in out.stderr and "503" in out.stderr, out.stderr
        assert d.proc.poll() is None  # still serving
        listing = d.cli("extract", "nope", prefix=netns, check=False)
        assert "does not exist" in listing.stderr
    finally:
        assert d.stop() == 0, d.log()

"""Capture under least privilege: only CAP_BPF, CAP_NET_ADMIN and CAP_PERFMON (what deploy/ grants).

Filters are compiled as a live tcpdump compiles them, which needs a packet socket (CAP_NET_RAW); without
it the capture falls back to libpcap's offline code generation, says so, and still captures exactly.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import dpkt
import pytest

REPO = Path(__file__).resolve().parents[2]


def _setpriv(*caps: str) -> list[str]:
    if shutil.which("setpriv") is None:
        pytest.fail("setpriv (util-linux) is required for the least-privilege test")
    keep = ",".join(["-all"] + [f"+{c}" for c in caps])
    return ["setpriv", f"--inh-caps={keep}", f"--ambient-caps={keep}", f"--bounding-set={keep}", "--"]


def test_capture_with_only_bpf_net_admin_perfmon(hosts, tmp_path):
    a, b = hosts
    out = tmp_path / "lp.pcap"
    env = dict(os.environ, PYTHONPATH=str(REPO))
    cmd = ["ip", "netns", "exec", b.netns, *_setpriv("bpf", "net_admin", "perfmon"), sys.executable, "-m",
           "pynetmon", "capture", "eth0", "udp", "port", "7100", "-c", "5", "-w", str(out)]
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 30
        while proc.poll() is None and time.monotonic() < deadline:
            a.send_udp(b.ip, 7100, 1, payload=b"least privilege")
            a.send_udp(b.ip, 7101, 1, payload=b"not this port")
            time.sleep(0.05)
        _, err = proc.communicate(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    assert "CAP_NET_RAW" in err and "offline" in err  # the fallback is announced, not silent
    with open(out, "rb") as f:
        frames = [dpkt.ethernet.Ethernet(buf) for _, buf in dpkt.pcap.Reader(f)]
    assert len(frames) == 5
    assert all(isinstance(fr.data.data, dpkt.udp.UDP) and fr.data.data.dport == 7100 for fr in frames)
    assert all(fr.data.data.data == b"least privilege" for fr in frames)

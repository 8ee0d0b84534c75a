"""`pynetmon doctor` and pynetmon.doctor(): pure checks on given inputs, and the real report on this machine
(privileged and with every capability dropped)."""
from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import pynetmon
from pynetmon.doctor import (
    CAP_BPF,
    CAP_NET_ADMIN,
    CAP_PERFMON,
    CAP_SYS_ADMIN,
    FAIL,
    OK,
    WARN,
    check_bpffs,
    check_capabilities,
    check_jit,
    check_kernel,
    effective_capabilities,
    parse_version,
)

REPO = Path(__file__).resolve().parents[2]
doctor_module = importlib.import_module("pynetmon.doctor")  # `pynetmon.doctor` itself is the function
NAMES = ["kernel", "kernel BTF", "bpffs", "capabilities", "BPF program load", "tcx links", "clang", "libbpf",
         "libpcap", "BPF JIT"]


@pytest.mark.parametrize("text, version", [("6.18.44-fc-v669", (6, 18, 44)), ("5.15.0-91-generic", (5, 15, 0)),
                                           ("6.6", (6, 6)), ("weird", ())])
def test_parse_version(text, version):
    assert parse_version(text) == version


@pytest.mark.parametrize("release, verdict, words", [
    ("6.18.44", OK, "tcx"), ("6.6.0", OK, "tcx"), ("6.1.0-18-amd64", WARN, "clsact"), ("4.19.0", FAIL, "5.15"),
])
def test_kernel_verdicts(release, verdict, words):
    check = check_kernel(release)
    assert check.verdict == verdict and release in check.detail and words in check.detail


def test_bpffs_verdicts():
    assert check_bpffs("bpf /sys/fs/bpf bpf rw,relatime 0 0\n").verdict == OK
    assert check_bpffs("bpf /mnt/bpf bpf rw 0 0\n").verdict == WARN
    missing = check_bpffs("proc /proc proc rw 0 0\n")
    assert missing.verdict == WARN and "mount -t bpf bpf /sys/fs/bpf" in missing.detail


def bits(*caps: int) -> int:
    return sum(1 << c for c in caps)


def test_capability_verdicts():
    assert effective_capabilities("Name:\tx\nCapEff:\t000001ffffffffff\n") == 0x1FFFFFFFFFF
    assert check_capabilities(0x1FFFFFFFFFF).verdict == OK
    assert check_capabilities(bits(CAP_BPF, CAP_NET_ADMIN, CAP_PERFMON)).verdict == OK
    assert check_capabilities(bits(CAP_SYS_ADMIN, CAP_NET_ADMIN)).verdict == OK
    partial = check_capabilities(bits(CAP_BPF))
    assert partial.verdict == FAIL and "CAP_NET_ADMIN, CAP_PERFMON" in partial.detail and "CAP_BPF," not in partial.detail
    none = check_capabilities(0)
    assert none.verdict == FAIL and all(c in none.detail for c in ("CAP_BPF", "CAP_NET_ADMIN", "CAP_PERFMON"))


@pytest.mark.parametrize("content, verdict", [("1\n", OK), ("2\n", WARN), ("0\n", WARN), (None, WARN)])
def test_jit_verdicts(tmp_path, content, verdict):
    path = tmp_path / "bpf_jit_enable"
    if content is not None:
        path.write_text(content)
    assert check_jit(str(path)).verdict == verdict


def test_a_check_that_raises_fails_alone(monkeypatch):
    def broken():
        raise RuntimeError("probe exploded")
    monkeypatch.setattr(doctor_module, "CHECKS", (broken, check_bpffs))
    report = pynetmon.doctor()
    assert report.checks[0].verdict == FAIL and "probe exploded" in report.checks[0].detail
    assert len(report.checks) == 2 and not report.ok


def test_report_on_this_machine(bpf):
    report = pynetmon.doctor()
    assert [c.name for c in report.checks] == NAMES
    assert report.ok, report.table()
    verdicts = {c.name: c.verdict for c in report.checks}
    assert verdicts["BPF program load"] == verdicts["capabilities"] == verdicts["kernel BTF"] == OK
    table = report.table()
    for check in report.checks:
        line = next(line for line in table.splitlines() if line.startswith(check.name + " "))
        assert check.detail in line and (check.verdict.upper() in line or check.verdict in line)
    assert table.rstrip().endswith("ready") or "ready, with warnings" in table


def run_cli(*args: str, prefix: tuple[str, ...] = ()) -> subprocess.CompletedProcess:
    return subprocess.run([*prefix, sys.executable, "-m", "pynetmon", "doctor", *args], capture_output=True,
                          text=True, timeout=120, check=False, env={**os.environ, "PYTHONPATH": str(REPO)})


def test_cli_prints_the_table_and_json(bpf):
    proc = run_cli()
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert all(name in proc.stdout for name in NAMES) and "verdict" in proc.stdout.splitlines()[0]
    data = json.loads(run_cli("--json").stdout)
    assert data["verdict"] in (OK, WARN) and [c["name"] for c in data["checks"]] == NAMES


def test_cli_without_capabilities_says_what_is_missing(bpf):
    proc = run_cli(prefix=("setpriv", "--inh-caps=-all", "--bounding-set=-all", "--"))
    assert proc.returncode == 1
    lines = {line.split("  ")[0].strip(): line for line in proc.stdout.splitlines()}
    assert "FAIL" in lines["capabilities"] and "CAP_BPF" in lines["capabilities"]
    assert "FAIL" in lines["BPF program load"] and "PermissionDeniedError" in lines["BPF program load"]
    assert "clang" in lines and "libpcap" in lines  # the other checks still ran
    assert "not ready" in proc.stdout

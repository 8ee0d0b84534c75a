"""`pynetmon doctor` and pynetmon.doctor(): pure checks on given inputs, and the real report on this machine
(privileged and with every capability dropped)."""
from __future__ import annotations

import gzip
import importlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import pynetmon
from pynetmon import kconfig
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
    check_jit_harden,
    check_kernel,
    check_kernel_config,
    effective_capabilities,
    parse_version,
)

REPO = Path(__file__).resolve().parents[2]
doctor_module = importlib.import_module("pynetmon.doctor")  # `pynetmon.doctor` itself is the function
NAMES = ["kernel", "kernel BTF", "bpffs", "capabilities", "BPF program load", "tcx links", "clang", "libbpf",
         "libpcap", "BPF JIT", "BPF JIT hardening", "kernel config"]
# The lines after "kernel config": one per option when a configuration file exists, else the probes.
OPTION_NAMES = [f"CONFIG_{r.option}" for r in kconfig.REQUIREMENTS]
PROBE_NAMES = ["probe program SCHED_CLS", "probe program XDP", "probe program TRACEPOINT", "probe program RAW_TRACEPOINT",
               "probe map RINGBUF", "probe map LRU_HASH", "probe map PERCPU_HASH"]


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


def expected_names() -> list[str]:
    return NAMES + (OPTION_NAMES if kconfig.find() else PROBE_NAMES)


def test_report_on_this_machine(bpf):
    report = pynetmon.doctor()
    assert [c.name for c in report.checks] == expected_names()
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
    assert all(name in proc.stdout for name in expected_names()) and "verdict" in proc.stdout.splitlines()[0]
    data = json.loads(run_cli("--json").stdout)
    assert data["verdict"] in (OK, WARN) and [c["name"] for c in data["checks"]] == expected_names()


def test_cli_without_capabilities_says_what_is_missing(bpf):
    proc = run_cli(prefix=("setpriv", "--inh-caps=-all", "--bounding-set=-all", "--"))
    assert proc.returncode == 1
    lines = {line.split("  ")[0].strip(): line for line in proc.stdout.splitlines()}
    assert "FAIL" in lines["capabilities"] and "CAP_BPF" in lines["capabilities"]
    assert "FAIL" in lines["BPF program load"] and "PermissionDeniedError" in lines["BPF program load"]
    assert "clang" in lines and "libpcap" in lines  # the other checks still ran
    assert "not ready" in proc.stdout


@pytest.mark.parametrize("content, verdict", [("0\n", OK), ("1\n", OK), ("2\n", WARN), (None, WARN)])
def test_jit_harden_verdicts(tmp_path, content, verdict):
    path = tmp_path / "bpf_jit_harden"
    if content is not None:
        path.write_text(content)
    check = check_jit_harden(str(path))
    assert check.verdict == verdict
    if content == "2\n":
        assert "net.core.bpf_jit_harden=1" in check.detail


# A configuration as distributions ship it: comments, "is not set" lines, strings, numbers, modules.
FULL_CONFIG = """#
# Automatically generated file; DO NOT EDIT.
# Linux/x86 6.1.0 Kernel Configuration
#
CONFIG_CC_VERSION_TEXT="gcc (Debian 12.2.0-14) 12.2.0"
CONFIG_HZ=250
CONFIG_BPF=y
CONFIG_HAVE_EBPF_JIT=y
CONFIG_BPF_SYSCALL=y
CONFIG_BPF_JIT=y
# CONFIG_BPF_JIT_ALWAYS_ON is not set
CONFIG_DEBUG_INFO_BTF=y
CONFIG_BPF_EVENTS=y
CONFIG_NET_INGRESS=y
CONFIG_NET_EGRESS=y
CONFIG_NET_SCH_INGRESS=m
CONFIG_NET_CLS_BPF=m
CONFIG_NET_CLS_ACT=y
CONFIG_NET_ACT_BPF=m
CONFIG_XDP_SOCKETS=y
CONFIG_VETH=m
"""


def test_kconfig_parse():
    config = kconfig.parse(FULL_CONFIG + "CONFIG_BROKEN\n  CONFIG_SPACED=y  \n")
    assert config["BPF"] == "y" and config["NET_CLS_BPF"] == "m" and config["BPF_JIT_ALWAYS_ON"] == "n"
    assert config["CC_VERSION_TEXT"] == "gcc (Debian 12.2.0-14) 12.2.0" and config["HZ"] == "250"
    assert config["SPACED"] == "y" and "BROKEN" not in config and "KPROBES" not in config


def test_kconfig_reads_plain_and_gzip_whatever_the_name(tmp_path):
    plain, packed = tmp_path / "config-6.1.0", tmp_path / "config"
    plain.write_text(FULL_CONFIG)
    packed.write_bytes(gzip.compress(FULL_CONFIG.encode()))
    assert kconfig.read(str(plain)) == kconfig.read(str(packed)) == kconfig.parse(FULL_CONFIG)
    assert kconfig.find((str(tmp_path / "absent"), str(packed), str(plain))) == str(packed)
    assert kconfig.find((str(tmp_path / "absent"),)) is None
    assert kconfig.candidates("6.1.0-18-amd64") == ("/proc/config.gz", "/boot/config-6.1.0-18-amd64")


def by_name(checks) -> dict:
    return {c.name: c for c in checks}


def test_kernel_config_complete(tmp_path):
    path = tmp_path / "config"
    path.write_text(FULL_CONFIG)
    checks = check_kernel_config(str(path))
    assert [c.name for c in checks] == ["kernel config", *OPTION_NAMES]
    assert all(c.verdict == OK for c in checks), checks
    found = by_name(checks)
    assert str(path) in found["kernel config"].detail
    assert "CONFIG_NET_CLS_BPF=m" in found["CONFIG_NET_CLS_BPF"].detail  # a module is enough
    assert "not set (optional)" in found["CONFIG_BPF_JIT_ALWAYS_ON"].detail


def test_kernel_config_names_what_is_missing_and_the_fix(tmp_path, monkeypatch):
    text = (FULL_CONFIG.replace("CONFIG_BPF_SYSCALL=y", "# CONFIG_BPF_SYSCALL is not set")
            .replace("CONFIG_BPF_JIT=y\n", "").replace("CONFIG_NET_CLS_BPF=m", "# CONFIG_NET_CLS_BPF is not set")
            .replace("CONFIG_NET_ACT_BPF=m\n", "").replace("CONFIG_DEBUG_INFO_BTF=y", "CONFIG_DEBUG_INFO_BTF=m"))
    path = tmp_path / "config.gz"
    path.write_bytes(gzip.compress(text.encode()))
    monkeypatch.setattr(doctor_module.platform, "release", lambda: "6.18.0")
    found = by_name(check_kernel_config(str(path)))
    syscall = found["CONFIG_BPF_SYSCALL"]
    assert syscall.verdict == FAIL and "not set (required)" in syscall.detail
    assert "fix: a kernel built with CONFIG_BPF_SYSCALL=y" in syscall.detail
    assert found["CONFIG_DEBUG_INFO_BTF"].verdict == FAIL and "CONFIG_DEBUG_INFO_BTF=m" in found["CONFIG_DEBUG_INFO_BTF"].detail
    jit = found["CONFIG_BPF_JIT"]
    assert jit.verdict == WARN and "(recommended)" in jit.detail and "CONFIG_BPF_JIT=y" in jit.detail
    # With tcx (6.6 on) cls_bpf is only recommended; act_bpf is never needed.
    assert found["CONFIG_NET_CLS_BPF"].verdict == WARN and "CONFIG_NET_CLS_BPF=y (or m)" in found["CONFIG_NET_CLS_BPF"].detail
    assert found["CONFIG_NET_ACT_BPF"].verdict == OK and "optional" in found["CONFIG_NET_ACT_BPF"].detail
    # Without tcx, TC programs attach as cls_bpf filters: then it is required.
    monkeypatch.setattr(doctor_module.platform, "release", lambda: "6.1.0-18-amd64")
    assert by_name(check_kernel_config(str(path)))["CONFIG_NET_CLS_BPF"].verdict == FAIL


@pytest.mark.parametrize("content", [b"not a config\n", b"\x1f\x8bbroken gzip"])
def test_kernel_config_unusable_file_fails(tmp_path, content):
    path = tmp_path / "config"
    path.write_bytes(content)
    [check] = check_kernel_config(str(path))
    assert check.name == "kernel config" and check.verdict == FAIL and str(path) in check.detail


def test_without_a_config_file_the_kernel_is_probed(tmp_path, bpf):
    absent = (str(tmp_path / "config.gz"), str(tmp_path / "config-6.18"))
    checks = check_kernel_config(search=absent)
    assert checks[0].name == "kernel config" and checks[0].verdict == WARN
    assert all(p in checks[0].detail for p in absent) and "probed instead" in checks[0].detail
    # Real probes of this kernel (BPF_PROG_LOAD / BPF_MAP_CREATE of each type), which has them all.
    assert [c.name for c in checks[1:]] == PROBE_NAMES
    assert all(c.verdict == OK and "supported" in c.detail for c in checks[1:]), checks


def test_config_of_this_machine(bpf):
    path = kconfig.find()
    if path is None:
        pytest.skip("this kernel has neither /proc/config.gz nor /boot/config-$(uname -r)")
    config = kconfig.read(path)
    assert config["BPF_SYSCALL"] == "y"  # we are running BPF programs on it
    checks = check_kernel_config()
    assert checks[0].verdict == OK and path in checks[0].detail
    assert all(c.verdict != FAIL for c in checks), checks


def test_cli_checks_a_given_config_file(tmp_path, bpf):
    path = tmp_path / "config-other"
    path.write_text(FULL_CONFIG.replace("CONFIG_BPF=y", "# CONFIG_BPF is not set"))
    proc = run_cli("--kernel-config", str(path))
    assert proc.returncode == 1, proc.stdout + proc.stderr
    line = next(line for line in proc.stdout.splitlines() if line.startswith("CONFIG_BPF "))
    assert "FAIL" in line and "fix: a kernel built with CONFIG_BPF=y" in line
    assert str(path) in proc.stdout and "not ready" in proc.stdout
    path.write_text(FULL_CONFIG)
    assert run_cli("--kernel-config", str(path)).returncode == 0

"""deploy/systemd/pynetmon.service: systemd accepts it (`systemd-analyze verify`), its hardening scores
as systemd rates it (`systemd-analyze security --offline`), it grants exactly the three capabilities, and
its command lines are ones pynetmon's CLI parses."""
from __future__ import annotations

import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from pynetmon.cli import build_parser

UNIT = Path(__file__).resolve().parents[2] / "deploy" / "systemd" / "pynetmon.service"
INSTALLED = "/usr/local/bin/pynetmon"  # where `make install` puts the CLI
EXPOSURE_MAX = 30  # systemd's exposure scale ×10 (0 best, 100 worst); the unit scores 27 ("OK")


def _settings() -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for line in UNIT.read_text().splitlines():
        if line and not line.startswith(("#", "[")):
            key, _, value = line.partition("=")
            out.setdefault(key, []).append(value)
    return out


def _systemd_analyze() -> str:
    tool = shutil.which("systemd-analyze")
    if tool is None:
        pytest.fail("systemd-analyze (Debian package systemd) is required to check the unit")
    return tool


def _local_copy(tmp_path: Path) -> Path:
    """The unit with the CLI of this checkout (verify checks that the executable exists)."""
    cli = Path(sys.executable).with_name("pynetmon")
    assert cli.exists(), "make build installs the CLI into the venv"
    copy = tmp_path / UNIT.name
    copy.write_text(UNIT.read_text().replace(INSTALLED, str(cli)))
    return copy


def test_unit_grants_only_the_three_capabilities():
    s = _settings()
    assert s["CapabilityBoundingSet"] == ["CAP_BPF CAP_NET_ADMIN CAP_PERFMON"]
    assert s["AmbientCapabilities"] == ["CAP_BPF CAP_NET_ADMIN CAP_PERFMON"]
    assert s["NoNewPrivileges"] == ["yes"] and s["ProtectSystem"] == ["strict"]
    assert "/sys/fs/bpf" in s["ReadWritePaths"]


def test_command_lines_are_pynetmon_commands():
    s = _settings()
    parser = build_parser()
    for key, command in (("ExecStartPre", "doctor"), ("ExecStart", "serve")):
        argv = shlex.split(s[key][0])
        assert argv[0] == INSTALLED
        args = parser.parse_args(argv[1:])
        assert args.command == command
    serve = parser.parse_args(shlex.split(s["ExecStart"][0])[1:])
    # Everything it writes is under the directories systemd makes writable for it.
    writable = ["/var/lib/pynetmon", *s["Environment"][0].split("=", 1)[1:]]
    for path in (serve.state_file, serve.capture_dir):
        assert any(str(path).startswith(w) for w in writable), path
    assert s["StateDirectory"] == ["pynetmon"] and s["CacheDirectory"] == ["pynetmon"]


def test_systemd_accepts_the_unit(tmp_path):
    proc = subprocess.run([_systemd_analyze(), "verify", str(_local_copy(tmp_path))],
                          capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 0 and not proc.stderr.strip(), proc.stderr


def test_systemd_rates_the_hardening(tmp_path):
    proc = subprocess.run([_systemd_analyze(), "security", "--offline=true", f"--threshold={EXPOSURE_MAX}",
                           str(_local_copy(tmp_path))], capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr
    assert "Overall exposure level for pynetmon.service" in proc.stdout

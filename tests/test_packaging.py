"""`pip install .` as a user meets it (issue 11 §8): the wheel, installed into a fresh virtual
environment with nothing but its declared dependencies, gives a working `pynetmon` command: doctor, the
daemon and the live view start, and run-time compiles find their shipped headers."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
COMPILE = ("from pynetmon.dynmon.dialect import translate; from pynetmon.toolchain import compile_c; "
           "code = 'BPF_ARRAY(c, u64, 1);\\nstatic int handle_rx(struct CTXTYPE *ctx, struct pkt_metadata *md) "
           "{ return RX_OK; }\\n'; "
           "print(len(compile_c(translate(code, direction='ingress').source, use_cache=False)))")


def _run(*cmd: str | Path, cwd: Path) -> str:
    proc = subprocess.run([str(c) for c in cmd], cwd=cwd, capture_output=True, text=True, timeout=600, check=False)
    assert proc.returncode == 0, f"{' '.join(map(str, cmd))} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout


def test_the_wheel_installs_into_a_fresh_venv_with_a_working_cli(tmp_path):
    dist = tmp_path / "dist"
    # The project's own build tools (no isolated build environment to download), the repository's build.
    _run(sys.executable, "-m", "pip", "wheel", "-q", "--no-build-isolation", "--no-deps", "-w", dist, REPO, cwd=REPO)
    (wheel,) = dist.glob("pynetmon-*.whl")
    venv = tmp_path / "venv"
    _run(sys.executable, "-m", "venv", "--without-pip", venv, cwd=tmp_path)
    python = venv / "bin" / "python"
    # Only what the wheel declares: a dependency missing from setup.py fails the commands below.
    _run(sys.executable, "-m", "pip", "--python", python, "install", "-q", "--disable-pip-version-check", wheel,
         cwd=tmp_path)
    pynetmon = venv / "bin" / "pynetmon"
    assert "pynetmon ready" in _run(pynetmon, "doctor", cwd=tmp_path)
    assert "--compile-timeout" in _run(pynetmon, "serve", "--help", cwd=tmp_path)
    assert "usage: pynetmon top" in _run(pynetmon, "top", "--help", cwd=tmp_path)
    _run(python, "-c", "import pynetmon.service.app, pynetmon.cli.top, rich.live, uvicorn", cwd=tmp_path)
    assert int(_run(python, "-c", COMPILE, cwd=tmp_path)) > 0  # headers shipped in the wheel
    assert str(REPO) not in _run(python, "-c", "import pynetmon; print(pynetmon.__file__)", cwd=tmp_path)

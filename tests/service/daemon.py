"""A real `pynetmon serve` process for tests: started on a free loopback port, stopped with SIGTERM."""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

REPO = Path(__file__).resolve().parents[2]


def wait_until(predicate: Callable[[], Any], what: str, timeout: float = 15.0) -> Any:
    """The first true value of `predicate()`, polled every 50 ms; AssertionError naming `what` after `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.05)


class Daemon:
    """`python -m pynetmon serve ...` in the background. `url`, `client` (httpx), `cli(...)`, `stop()`."""

    def __init__(self, *args: str, token: str | None = None, log_path: Path | None = None,
                 prefix: tuple[str, ...] = (), env: dict | None = None):
        self.token = token
        # Without a path from the test (its tmp_path), the log lives in a directory removed by stop(): a
        # test run leaves nothing in /tmp; what the log said stays readable through log().
        self._own_dir = None if log_path else tempfile.mkdtemp(prefix="pynetmon-serve-")
        self.log_path = log_path or Path(self._own_dir, "serve.log")
        self._final_log: str | None = None
        self._log = open(self.log_path, "wb")  # noqa: SIM115 - lives as long as the daemon, closed in stop()
        cmd = [*prefix, sys.executable, "-m", "pynetmon", "serve", "--listen", "127.0.0.1:0", *args]
        self.proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=self._log,
                                     env={**os.environ, **(env or {})})
        line = self.proc.stdout.readline().decode()
        if "listening on" not in line:
            self.proc.wait(timeout=10)
            self._log.close()
            log = self.log()
            if self._own_dir is not None:
                shutil.rmtree(self._own_dir, ignore_errors=True)
            raise RuntimeError(f"pynetmon serve did not start ({self.proc.returncode}): {line}\n{log}")
        self.url = line.split("listening on", 1)[1].strip()
        self.port = int(self.url.rsplit(":", 1)[1])
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.client = httpx.Client(base_url=self.url, headers=headers, timeout=60)

    def log(self) -> str:
        if self._final_log is not None:
            return self._final_log
        if not self._log.closed:
            self._log.flush()
        return self.log_path.read_text(errors="replace")

    def cli(self, *args: str, check: bool = True, prefix: tuple[str, ...] = ()) -> subprocess.CompletedProcess:
        """Run `pynetmon ARGS -a 127.0.0.1 -p PORT` (the CLI as a user runs it)."""
        cmd = [*prefix, sys.executable, "-m", "pynetmon", *args, "-a", "127.0.0.1", "-p", str(self.port)]
        proc = subprocess.run(cmd, check=False, cwd=REPO, capture_output=True, text=True, timeout=120)
        if check and proc.returncode != 0:
            raise AssertionError(f"{' '.join(args)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
        return proc

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30) -> int:
        """Stop the daemon with `sig`; its exit status."""
        self.client.close()
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                raise AssertionError(f"pynetmon serve ignored signal {sig} for {timeout}s\n{self.log()}")
        self.proc.stdout.close()
        self._log.close()
        if self._own_dir is not None:
            self._final_log = self.log_path.read_text(errors="replace")
            shutil.rmtree(self._own_dir, ignore_errors=True)
        return self.proc.returncode

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()

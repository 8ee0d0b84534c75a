"""Running the compiler as an untrusted child: bounded in time, CPU, memory, files and privileges.

clang parses code that reaches the daemon from the network; whatever it does (loop in the preprocessor,
allocate without end, open a FIFO) must not take the daemon with it. Each run gets:

* a wall-clock timeout (the whole process group is killed), CPU, address-space, file-size, open-file and
  core-size limits (set by util-linux `prlimit` between exec and clang, so that no Python code runs in the
  forked child of a threaded process);
* stdin from /dev/null, a minimal environment, a private working and temporary directory;
* when pynetmon runs as root, the `nobody` user and group and no supplementary groups: clang needs no
  privilege, and `nobody` cannot read /etc/shadow, the daemon's token or state files;
* a place in a bounded queue: at most `Limits.parallel` compilers run at once in this process.
"""
from __future__ import annotations

import contextlib
import math
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from .errors import CompileError

UNPRIVILEGED_USER = "nobody"


@dataclass(frozen=True)
class Limits:
    """Bounds of one compiler run. `timeout` is wall-clock seconds; `memory` bounds the address space."""

    timeout: float = 10.0
    memory: int = 2 << 30
    file_size: int = 64 << 20
    open_files: int = 256
    parallel: int = max(1, os.cpu_count() or 1)

    @property
    def cpu_seconds(self) -> int:
        return max(1, math.ceil(self.timeout)) + 1


_limits = Limits()
_slots = threading.BoundedSemaphore(_limits.parallel)
_config_lock = threading.Lock()


def limits() -> Limits:
    """The limits compiles run under now."""
    return _limits


def configure(**changes) -> Limits:
    """Change the limits of later compiles (`timeout=`, `memory=`, `file_size=`, `open_files=`,
    `parallel=`); returns the new limits. `pynetmon serve --compile-timeout` calls this."""
    global _limits, _slots
    with _config_lock:
        new = replace(_limits, **changes)
        if new.timeout <= 0 or new.parallel < 1:
            raise ValueError("timeout must be positive and parallel at least 1")
        if new.parallel != _limits.parallel:
            _slots = threading.BoundedSemaphore(new.parallel)
        _limits = new
    return new


_DROP_CAPS = (1 << 0) | (1 << 6) | (1 << 7)  # CAP_CHOWN, CAP_SETGID, CAP_SETUID


def _unprivileged() -> tuple[int, int] | None:
    """(uid, gid) to drop to, or None when there is nothing to drop (not root) or no way to (no `nobody`,
    or root already confined without CAP_SETUID/CAP_SETGID/CAP_CHOWN, e.g. under setpriv)."""
    if os.geteuid() != 0 or (_effective_caps() & _DROP_CAPS) != _DROP_CAPS:
        return None
    try:
        entry = pwd.getpwnam(UNPRIVILEGED_USER)
    except KeyError:
        return None
    return entry.pw_uid, entry.pw_gid


def drops_privileges() -> bool:
    """Whether the compiler runs as another user than this process (`nobody`)."""
    return _unprivileged() is not None


def _effective_caps() -> int:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("CapEff:"):
                    return int(line.split()[1], 16)
    except OSError:
        pass
    return 0


def readable_by_others(path: str | os.PathLike) -> bool:
    """Whether a user with no special rights can reach `path` (every parent searchable by others) and
    read it (a directory: list it too)."""
    p = Path(path).resolve()
    for parent in p.parents:
        if not os.stat(parent).st_mode & 0o001:
            return False
    mode = os.stat(p).st_mode
    return bool(mode & 0o004) and (not p.is_dir() or bool(mode & 0o001))


def reachable_tmpdir() -> str | None:
    """Where to make directories the compiler's user must reach: the usual temporary directory, or /tmp
    when $TMPDIR is one only root can enter (None: tempfile's default)."""
    if _unprivileged() is None or readable_by_others(tempfile.gettempdir()):
        return None
    return "/tmp"


@contextlib.contextmanager
def workdir() -> Iterator[Path]:
    """A private directory for one compile, owned by the user the compiler runs as; removed afterwards."""
    ids = _unprivileged()
    path = Path(tempfile.mkdtemp(prefix="pynetmon-cc-", dir=reachable_tmpdir()))
    try:
        if ids is not None:
            os.chown(path, *ids)
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def write_input(directory: Path, name: str, text: str) -> Path:
    """Write a file the compiler reads (it is readable by the compiler's user: the directory is theirs)."""
    path = directory / name
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    return path


def read_output(path: Path, max_bytes: int) -> bytes:
    """Read a file the compiler wrote, never through a link it may have put there."""
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    with os.fdopen(fd, "rb") as f:
        return f.read(max_bytes + 1)[:max_bytes]


def run(argv: Sequence[str], cwd: Path, *, what: str = "clang", timeout: float | None = None) -> subprocess.CompletedProcess:
    """Run `argv` in `cwd` under the current limits (`timeout` overrides theirs for this run);
    CompileError when it exceeds its time. Waits for a free slot first (at most `Limits.parallel` at once)."""
    lim, slots = _limits, _slots
    if timeout is not None:
        lim = replace(lim, timeout=timeout)
    prefix = []
    prlimit = shutil.which("prlimit")
    if prlimit:
        prefix = [prlimit, f"--cpu={lim.cpu_seconds}", f"--as={lim.memory}", f"--fsize={lim.file_size}",
                  f"--nofile={lim.open_files}", "--core=0", "--"]
    ids = _unprivileged()
    env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "LC_ALL": "C", "TMPDIR": str(cwd), "HOME": str(cwd)}
    # Popen switches user in C between fork and exec (no Python runs in the child).
    drop: dict[str, Any] = {"user": ids[0], "group": ids[1], "extra_groups": []} if ids else {}
    with slots:
        proc = subprocess.Popen(
            [*prefix, *argv], cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, start_new_session=True, close_fds=True, **drop)
        if not prlimit:  # a system without util-linux: limits set from outside, a moment after the start
            _limit_from_outside(proc.pid, lim)
        try:
            out, err = proc.communicate(timeout=lim.timeout)
        except subprocess.TimeoutExpired:
            _kill_group(proc)
            raise CompileError(f"{what} did not finish within {lim.timeout:g} s (the compile timeout; "
                               "`pynetmon serve --compile-timeout`, pynetmon.sandbox.configure)") from None
        except BaseException:
            _kill_group(proc)
            raise
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def _kill_group(proc: subprocess.Popen) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.kill()
    proc.communicate()


def _limit_from_outside(pid: int, lim: Limits) -> None:
    import resource
    for kind, value in ((resource.RLIMIT_CPU, lim.cpu_seconds), (resource.RLIMIT_AS, lim.memory),
                        (resource.RLIMIT_FSIZE, lim.file_size), (resource.RLIMIT_NOFILE, lim.open_files),
                        (resource.RLIMIT_CORE, 0)):
        with contextlib.suppress(OSError, ValueError):
            resource.prlimit(pid, kind, (value, value))


__all__ = ["Limits", "configure", "drops_privileges", "limits", "reachable_tmpdir", "read_output",
           "readable_by_others", "run", "workdir",
           "write_input"]

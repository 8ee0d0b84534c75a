"""Run-time C → eBPF compilation with clang, cached by content.

Injected monitoring code (Dynmon) and translated packet filters are compiled here. Objects are cached
in memory and on disk under a key that covers everything that changes the output: the source, the
flags, the clang version and the contents of pynetmon's shipped headers. Diagnostics are reported
against the user's own file name and line numbers (callers that wrap user code use `#line`).
"""
from __future__ import annotations

import contextlib
import functools
import hashlib
import os
import shutil
import subprocess
import sysconfig
import tempfile
import threading
from pathlib import Path

from .errors import CompileError, NotSupportedError

PACKAGE_DIR = Path(__file__).resolve().parent
SHIPPED_INCLUDE = PACKAGE_DIR / "data" / "include"
BASE_CFLAGS = ("-target", "bpf", "-g", "-O2", "-D__TARGET_ARCH_x86", "-Wno-unused-value",
               "-Wno-pointer-sign", "-Wno-compare-distinct-pointer-types", "-Wno-unknown-attributes")

_memory_cache: dict[str, bytes] = {}
_lock = threading.Lock()


def cache_dir() -> Path:
    """Where compiled objects are kept: $PYNETMON_CACHE_DIR, else $XDG_CACHE_HOME/pynetmon, else ~/.cache."""
    explicit = os.environ.get("PYNETMON_CACHE_DIR")
    if explicit:
        return Path(explicit)
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "pynetmon" / "objects"


@functools.cache
def clang_path() -> str:
    """The clang binary ($PYNETMON_CLANG or the first of clang, clang-14... on PATH)."""
    for candidate in (os.environ.get("PYNETMON_CLANG"), "clang", "clang-16", "clang-15", "clang-14"):
        if candidate and shutil.which(candidate):
            return shutil.which(candidate)
    raise NotSupportedError("clang is not installed; it is needed to compile eBPF code (apt-get install clang)")


@functools.cache
def clang_version() -> str:
    out = subprocess.run([clang_path(), "--version"], capture_output=True, text=True, check=False)
    return out.stdout.splitlines()[0] if out.stdout else "unknown"


@functools.cache
def include_dirs() -> tuple[str, ...]:
    """pynetmon's shipped headers first, then the multiarch dir that holds <asm/types.h> on Debian."""
    dirs = [str(SHIPPED_INCLUDE)]
    multiarch = sysconfig.get_config_var("MULTIARCH") or "x86_64-linux-gnu"
    for candidate in (f"/usr/include/{multiarch}", "/usr/include/x86_64-linux-gnu"):
        if os.path.isdir(candidate) and candidate not in dirs:
            dirs.append(candidate)
    return tuple(dirs)


@functools.cache
def _headers_digest() -> str:
    digest = hashlib.sha256()
    if SHIPPED_INCLUDE.is_dir():
        for path in sorted(SHIPPED_INCLUDE.rglob("*.h")):
            digest.update(str(path.relative_to(SHIPPED_INCLUDE)).encode())
            digest.update(path.read_bytes())
    return digest.hexdigest()


def cache_key(source: str, cflags: tuple[str, ...]) -> str:
    digest = hashlib.sha256()
    for part in (clang_version(), _headers_digest(), "\0".join(cflags), source):
        digest.update(part.encode())
        digest.update(b"\0")
    return digest.hexdigest()


def compile_c(source: str, *, filename: str = "program.bpf.c", cflags: tuple[str, ...] = (),
              use_cache: bool = True) -> bytes:
    """Compile eBPF C source into an ELF object (bytes). Raises CompileError with clang's diagnostics.

    >>> obj = compile_c('#include <linux/bpf.h>\\n#include <bpf/bpf_helpers.h>\\n'
    ...                 'SEC("tc") int f(struct __sk_buff *s) { return 0; }\\nchar LICENSE[] SEC("license") = "GPL";')
    """
    cflags = tuple(cflags)
    key = cache_key(source, cflags)
    if use_cache:
        cached = _memory_cache.get(key)
        if cached is not None:
            return cached
        disk = cache_dir() / f"{key}.o"
        try:
            data = disk.read_bytes()
        except OSError:
            data = None
        if data:
            _memory_cache[key] = data
            return data
    data = _run_clang(source, filename, cflags)
    if use_cache:
        with _lock:
            _memory_cache[key] = data
        _store(cache_dir() / f"{key}.o", data)
    return data


def _store(path: Path, data: bytes) -> None:
    """Write atomically (rename) so that a concurrent reader never sees half an object; failures are not fatal."""
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except OSError:
        if tmp is not None:  # a full disk must not also collect half-written files
            with contextlib.suppress(OSError):
                os.unlink(tmp)


def _run_clang(source: str, filename: str, cflags: tuple[str, ...]) -> bytes:
    with tempfile.TemporaryDirectory(prefix="pynetmon-cc-") as tmp:
        src = Path(tmp) / os.path.basename(filename)
        obj = Path(tmp) / "out.o"
        src.write_text(source)
        cmd = [clang_path(), *BASE_CFLAGS, *(f"-I{d}" for d in include_dirs()), *cflags,
               "-c", str(src), "-o", str(obj)]
        proc = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp, check=False)
        if proc.returncode != 0 or not obj.exists():
            diagnostics = proc.stderr.replace(str(src), os.path.basename(filename)).replace(tmp + "/", "")
            raise CompileError(f"clang failed to compile {os.path.basename(filename)}", diagnostics.rstrip())
        return obj.read_bytes()

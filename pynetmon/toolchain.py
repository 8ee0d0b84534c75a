"""Run-time C → eBPF compilation with clang, cached by content, in a sandbox.

Injected monitoring code (Dynmon) and translated packet filters are compiled here. Objects are cached
in memory and on disk under a key that covers everything that changes the output: the source, the
flags, the include directories, the clang version and the contents of pynetmon's shipped headers.
Diagnostics are reported against the user's own file name and line numbers (callers that wrap user code
use `#line`).

Code compiled here may come from the network, so (docs/security.md):

* clang sees no system header directory (`-nostdinc`): only pynetmon's headers, the system headers
  copied at build time into `data/sysroot` (bpf/sandbox-headers.txt), clang's builtin headers and the
  directories a library caller names in `include_dirs`;
* `source_policy` checks the code before clang runs and clang's results before they are used;
* clang runs as a bounded, unprivileged child (`sandbox`) that lists every file it opened (`-MD`). Code
  without inline assembler compiles in one step with GNU asm switched off; code with some in two: C →
  LLVM IR, then IR → object, the IR's assembler text checked in between (no `.incbin`).
"""
from __future__ import annotations

import atexit
import contextlib
import functools
import hashlib
import os
import re
import shutil
import subprocess
import tempfile
import threading
from collections.abc import Callable, Sequence
from pathlib import Path

from . import sandbox, source_policy
from .errors import CompileError, ConfigError, NotSupportedError

PACKAGE_DIR = Path(__file__).resolve().parent
SHIPPED_INCLUDE = PACKAGE_DIR / "data" / "include"
SYSROOT = PACKAGE_DIR / "data" / "sysroot"
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
        found = shutil.which(candidate) if candidate else None
        if found:
            return found
    raise NotSupportedError("clang is not installed; it is needed to compile eBPF code (apt-get install clang)")


@functools.cache
def clang_version() -> str:
    out = subprocess.run([clang_path(), "--version"], capture_output=True, text=True, check=False)
    return out.stdout.splitlines()[0] if out.stdout else "unknown"


@functools.cache
def resource_include() -> str:
    """clang's builtin headers (stdint.h, stddef.h...): part of the compiler that runs, so taken from it."""
    out = subprocess.run([clang_path(), "-print-resource-dir"], capture_output=True, text=True, check=False)
    path = os.path.join(out.stdout.strip(), "include")
    if out.returncode != 0 or not os.path.isdir(path):
        raise NotSupportedError(f"{clang_path()} -print-resource-dir names no include directory")
    return path


def include_dirs(extra: Sequence[str | os.PathLike] = ()) -> tuple[str, ...]:
    """The directories clang searches, in order: pynetmon's headers, `extra` (a library caller's own),
    the shipped system headers (multiarch before /usr/include, as Debian's clang has them) with clang's
    builtin headers between the two, as in clang's default order."""
    dirs = [*_visible(SHIPPED_INCLUDE), *(d for e in extra for d in _visible(Path(e)))]
    arch, usr = SYSROOT / "arch", SYSROOT / "usr"
    if not usr.is_dir():
        raise NotSupportedError(f"{SYSROOT} is missing: pynetmon was not built (`make build`, `pip install .`)")
    return (*dirs, *_visible(arch), resource_include(), *_visible(usr))


_mirrors: dict[tuple[Path, str], str] = {}


def _visible(path: Path) -> list[str]:
    """`path` as the compiler's user can read it: the directory itself, or (when clang runs as `nobody`
    and cannot reach it, e.g. a package under /root) a copy, made again when the directory changes."""
    path = path.resolve()
    if not path.is_dir():
        return []
    if not sandbox.drops_privileges() or sandbox.readable_by_others(path):
        return [str(path)]
    key = (path, tree_digest(path))
    with _lock:
        if key not in _mirrors:
            root = tempfile.mkdtemp(prefix="pynetmon-headers-", dir=sandbox.reachable_tmpdir())
            atexit.register(shutil.rmtree, root, True)
            os.chmod(root, 0o755)
            copy = os.path.join(root, "include")
            shutil.copytree(path, copy, symlinks=False)
            for d, _, files in os.walk(copy):
                os.chmod(d, 0o755)
                for f in files:
                    os.chmod(os.path.join(d, f), 0o644)
            _mirrors[key] = copy
        return [_mirrors[key]]


def tree_digest(root: Path) -> str:
    """A digest of the names and contents of every file under `root` (part of the cache key)."""
    digest = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        digest.update(str(path.relative_to(root)).encode() + b"\0")
        digest.update(path.read_bytes())
    return digest.hexdigest()


@functools.cache
def _headers_digest() -> str:
    return "".join(tree_digest(root) for root in (SHIPPED_INCLUDE, SYSROOT) if root.is_dir())


def cache_key(source: str, cflags: tuple[str, ...], include: tuple[str, ...] = ()) -> str:
    digest = hashlib.sha256()
    for part in (clang_version(), _headers_digest(), "\0".join(cflags), "\0".join(include), source):
        digest.update(part.encode())
        digest.update(b"\0")
    return digest.hexdigest()


_search_dirs = include_dirs  # compile_c's parameter of the same name hides the function


def compile_c(source: str, *, filename: str = "program.bpf.c", cflags: Sequence[str] = (),
              include_dirs: Sequence[str | os.PathLike] = (), use_cache: bool = True,
              timeout: float | None = None) -> bytes:
    """Compile eBPF C source into an ELF object (bytes).

    The code may include only pynetmon's shipped headers and those under `include_dirs` (a caller's
    own, named explicitly); `cflags` may define macros, warnings, -O and -mcpu, nothing that opens files.
    Raises ConfigError naming the line of anything refused (docs/security.md) and CompileError with
    clang's diagnostics, or when clang exceeds its time (`timeout` seconds per clang run, by default
    `sandbox.limits().timeout`: 10 s unless changed with `sandbox.configure`).

    >>> obj = compile_c('#include <linux/bpf.h>\\n#include <bpf/bpf_helpers.h>\\n'
    ...                 'SEC("tc") int f(struct __sk_buff *s) { return 0; }\\nchar LICENSE[] SEC("license") = "GPL";')
    """
    cflags = tuple(cflags)
    source_policy.check_cflags(cflags)
    extra = tuple(str(Path(d).resolve()) for d in include_dirs)
    search = _search_dirs(extra)
    name = _plain_name(filename)
    source_policy.check_source(source, filename=name, search_dirs=search)
    key = cache_key(source, cflags, tuple(f"{d}:{tree_digest(Path(d))}" for d in extra))
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
    data = _run_clang(source, name, cflags, search, timeout)
    if use_cache:
        with _lock:
            _memory_cache[key] = data
        _store(cache_dir() / f"{key}.o", data)
    return data


def _plain_name(filename: str) -> str:
    """The file name clang is given: a base name of plain characters (it also names the file in messages)."""
    name = os.path.basename(filename)
    if not re.fullmatch(r"[A-Za-z0-9_][A-Za-z0-9_.+-]*", name):
        raise ConfigError([("filename", f"{filename!r} is not a plain file name")])
    return name


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


_LINE_NAMES = re.compile(r'^[ \t]*#[ \t]*(?:line[ \t]+)?\d+[ \t]+"([^"\n]*)"', re.MULTILINE)
# Front-end options that keep a hostile file from costing more than its error: stop after 20 errors,
# write no crash reproducer (clang would put the preprocessed source in TMPDIR).
_FRONTEND = ("-nostdinc", "-ferror-limit=20", "-fno-crash-diagnostics", "-fno-color-diagnostics")


def _run_clang(source: str, name: str, cflags: tuple[str, ...], search: tuple[str, ...],
               timeout: float | None) -> bytes:
    run = functools.partial(sandbox.run, timeout=timeout)
    with sandbox.workdir() as tmp:
        src = sandbox.write_input(tmp, name, source)
        front = [clang_path(), *BASE_CFLAGS, *_FRONTEND, *(a for d in search for a in ("-isystem", d)), *cflags,
                 "-MD", "-MF", "deps.d", name]
        user_files = {name, *_LINE_NAMES.findall(source)}
        # Most code has no inline assembler: one clang run with GNU asm switched off (an empty asm(""), a
        # compiler barrier, stays allowed; the shipped bpf_helpers.h leaves out its one asm function, see
        # bpf/sandbox_headers.py). Code that has some, and code that fails (for clang's real diagnostics),
        # is compiled again in two checked steps.
        proc = run([*front, "-fno-gnu-inline-asm", "-D__PYNETMON_NO_GNU_ASM", "-c", "-o", "out.o"], tmp)
        if proc.returncode != 0 or not (tmp / "out.o").exists():
            (tmp / "deps.d").unlink(missing_ok=True)
            return _compile_checking_asm(run, tmp, src, front, cflags, search, user_files)
        _check_dependencies(tmp, src, search)
        return sandbox.read_output(tmp / "out.o", sandbox.limits().file_size)


def _compile_checking_asm(run: Callable[..., subprocess.CompletedProcess], tmp: Path, src: Path, front: list[str], cflags: tuple[str, ...], search: tuple[str, ...],
                          user_files: set[str]) -> bytes:
    """C → LLVM IR (no LLVM passes: step 2 runs them, as one -O2 step would), the IR's assembler text
    checked for directives, then IR → object: the assembler only ever sees checked text."""
    proc = run([*front, "-S", "-emit-llvm", "-Xclang", "-disable-llvm-passes", "-o", "out.ll"], tmp)
    _check_run(proc, tmp, src, user_files, "out.ll")
    _check_dependencies(tmp, src, search)
    source_policy.check_ir(sandbox.read_output(tmp / "out.ll", sandbox.limits().file_size).decode(errors="replace"))
    codegen = [f for f in (*BASE_CFLAGS, *cflags) if f.startswith(("-O", "-mcpu="))]
    proc = run([clang_path(), "-target", "bpf", *codegen, "-fno-crash-diagnostics",
                        "-Wno-override-module", "-c", "out.ll", "-o", "out.o"], tmp)
    _check_run(proc, tmp, src, user_files, "out.o")
    return sandbox.read_output(tmp / "out.o", sandbox.limits().file_size)


def _check_run(proc, tmp: Path, src: Path, user_files: set[str], output: str) -> None:
    if proc.returncode != 0 or not (tmp / output).exists():
        raise CompileError(f"clang failed to compile {src.name}", _diagnostics(proc.stderr, tmp, src, user_files))


def _check_dependencies(tmp: Path, src: Path, search: tuple[str, ...]) -> None:
    deps = sandbox.read_output(tmp / "deps.d", sandbox.limits().file_size).decode(errors="replace")
    source_policy.check_dependencies(deps, search, [str(src)], str(tmp))


def _diagnostics(stderr: bytes, tmp: Path, src: Path, user_files: set[str]) -> str:
    text = stderr.decode(errors="replace").replace(str(src), src.name).replace(str(tmp) + "/", "")
    text = source_policy.quote_user_lines(text, user_files)
    return text.rstrip()[:_MAX_DIAGNOSTICS]


_MAX_DIAGNOSTICS = 64 << 10

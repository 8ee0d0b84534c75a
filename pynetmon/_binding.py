"""The one place that imports the cffi extension: ffi/lib, the error checker, and the libbpf log hook.

libbpf returns -errno (or NULL with errno set); `check()` and `check_ptr()` turn that into the right
pynetmon exception. libbpf's messages go to the `pynetmon.libbpf` logger; while a load is in progress
they are also captured so that verifier logs can be attached to the exception.
"""
from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Iterator
from typing import Any

from .errors import error_from_errno

try:
    from ._libbpf import ffi, lib
except ImportError as exc:  # pragma: no cover - only without a build
    raise ImportError(
        "pynetmon's libbpf binding is not built: run `make build` (or `pip install .`)"
    ) from exc

log = logging.getLogger("pynetmon.libbpf")
_LEVELS = {lib.LIBBPF_WARN: logging.WARNING, lib.LIBBPF_INFO: logging.INFO, lib.LIBBPF_DEBUG: logging.DEBUG}
_capture = threading.local()


@ffi.def_extern()
def _pynetmon_libbpf_log(level, msg):
    text = ffi.string(msg).decode("utf-8", "replace")
    sink = getattr(_capture, "lines", None)
    if sink is not None:
        # Captured output (verifier logs) travels with the exception; keep it out of WARNING logs.
        sink.append(text)
        log.debug("%s", text.rstrip())
    elif level != lib.LIBBPF_DEBUG or log.isEnabledFor(logging.DEBUG):
        log.log(_LEVELS.get(level, logging.DEBUG), "%s", text.rstrip())


lib.pynetmon_install_print()


@contextlib.contextmanager
def captured_libbpf_output() -> Iterator[list[str]]:
    """Collect what libbpf prints on this thread inside the block (verifier logs among it)."""
    previous = getattr(_capture, "lines", None)
    lines: list[str] = []
    _capture.lines = lines
    try:
        yield lines
    finally:
        _capture.lines = previous


def check(ret: int, what: str, detail: str | None = None) -> int:
    """Raise the pynetmon exception for a negative libbpf/syscall return, else return `ret`."""
    if ret < 0:
        raise error_from_errno(-ret, what, detail)
    return ret


def check_ptr(ptr: Any, what: str, detail: str | None = None) -> Any:
    """Raise for a NULL pointer from libbpf (errno carries the reason), else return `ptr`."""
    if ptr == ffi.NULL:
        raise error_from_errno(ffi.errno or 22, what, detail)
    return ptr


LIBBPF_VERSION = (lib.libbpf_major_version(), lib.libbpf_minor_version())

"""pynetmon's exception tree, rooted in `Error`.

Every error that comes from the kernel or libbpf keeps the errno and the kernel's own words.
"""
from __future__ import annotations

import errno as _errno
import os

# The kernel's own ENOTSUPP (include/linux/errno.h, not a userspace errno, so not in Python's errno): what
# bpf() returns, for instance, for a batch operation a map type does not implement.
ENOTSUPP = 524


class Error(Exception):
    """Base class of every error pynetmon raises."""


class NotSupportedError(Error):
    """The running kernel, libbpf or libpcap lacks a feature this call needs."""


class BPFError(Error, OSError):
    """A bpf() system call or libbpf function failed; `.errno` is the kernel's errno."""

    def __init__(self, err: int, what: str, detail: str | None = None):
        err = abs(err)
        text = f"{what}: {os.strerror(err)} (errno {err})"
        if detail:
            text += f": {detail}"
        OSError.__init__(self, err, text)
        self.what = what

    def __str__(self) -> str:  # OSError would prefix "[Errno n]"; our text already carries it
        return self.strerror or ""


class PermissionDeniedError(BPFError, PermissionError):
    """Missing privileges. The message names the capabilities needed."""

    CAPABILITIES = "CAP_BPF, CAP_NET_ADMIN and CAP_PERFMON (or root)"

    def __init__(self, err: int, what: str, detail: str | None = None):
        hint = f"needs {self.CAPABILITIES}"
        super().__init__(err, what, f"{detail}; {hint}" if detail else hint)


class MapKeyError(Error, KeyError):
    """A map has no entry for the key; `.errno` is ENOENT."""

    def __init__(self, key: object, map_name: str = ""):
        KeyError.__init__(self, key)
        self.key = key
        self.map_name = map_name
        self.errno = _errno.ENOENT

    def __str__(self) -> str:
        where = f" in map {self.map_name!r}" if self.map_name else ""
        return f"no entry for key {self.key!r}{where}"


class ClosedError(Error, ValueError):
    """The map or object was closed before (or while) it was used; `.errno` is EBADF."""

    errno = _errno.EBADF


class MapFullError(BPFError):
    """The map is full (E2BIG) and cannot take another key."""


class LoadError(BPFError):
    """An object failed to open or load for a reason other than the verifier."""


class VerifierError(LoadError):
    """The verifier rejected a program. `.log` is the whole verifier log; the message ends with its last lines."""

    def __init__(self, err: int, program: str, log: str):
        self.program = program
        self.log = log
        tail = "\n".join(line for line in log.rstrip().splitlines()[-12:])
        super().__init__(err, f"verifier rejected program {program!r}", "\n" + tail if tail else None)


class CompileError(Error):
    """clang failed to compile C code; `.diagnostics` is clang's output, mapped to the user's lines."""

    def __init__(self, message: str, diagnostics: str = ""):
        super().__init__(message + ("\n" + diagnostics if diagnostics else ""))
        self.diagnostics = diagnostics


class InterfaceNotFoundError(Error, LookupError):
    """No network interface of that name exists (in this network namespace)."""

    def __init__(self, ifname: str):
        super().__init__(f"no network interface named {ifname!r}")
        self.ifname = ifname


class FilterError(Error, ValueError):
    """A packet filter expression or a classic BPF program is invalid."""


class MissingExtraError(Error, ImportError):
    """An optional dependency is not installed; the message names the pip extra that brings it."""

    def __init__(self, module: str, extra: str, what: str):
        super().__init__(f"{what} needs {module}, which is not installed: pip install 'pynetmon[{extra}]'",
                         name=module)
        self.extra = extra


class ResourceLimitError(Error):
    """A request would go over a resource limit (checked before anything is created).

    `.limit` names the limit ("kernel memory in total", "open files", ...), `.requested` and `.allowed` are
    amounts in `.unit`, `.setting` says how to raise it; `.errno` is ENOMEM, or EMFILE for descriptors.
    """

    def __init__(self, limit: str, what: str, requested: int, allowed: int, setting: str, *, detail: str = "",
                 unit: str = "bytes"):
        self.limit, self.what, self.requested, self.allowed = limit, what, requested, allowed
        self.setting, self.detail, self.unit = setting, detail, unit
        self.errno = _errno.EMFILE if unit == "descriptors" else _errno.ENOMEM
        super().__init__(self.describe() + f"; raise it with {setting}")

    def describe(self) -> str:
        """The message without the hint on how to raise the limit (the daemon adds its own option)."""
        text = (f"{self.what} would need {_amount(self.requested, self.unit)}, over the limit "
                f"({self.limit}) of {_amount(self.allowed, self.unit)}")
        return f"{text}: {self.detail}" if self.detail else text


def _amount(n: int, unit: str) -> str:
    if unit != "bytes":
        return f"{n} {unit}"
    for name, size in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= size:
            return f"{n / size:.1f} {name} ({n} bytes)"
    return f"{n} bytes"


class ConfigError(Error, ValueError):
    """A configuration is invalid. `.problems` lists (json_path, reason) pairs; the message shows them all."""

    def __init__(self, problems: list[tuple[str, str]]):
        self.problems = list(problems)
        super().__init__("; ".join(f"{path}: {reason}" if path else reason for path, reason in self.problems))


def error_from_errno(err: int, what: str, detail: str | None = None) -> BPFError:
    """The exception class for a failed kernel call, chosen by errno."""
    err = abs(err)
    if err in (_errno.EPERM, _errno.EACCES):
        return PermissionDeniedError(err, what, detail)
    if err == _errno.E2BIG:
        return MapFullError(err, what, detail)
    return BPFError(err, what, detail)

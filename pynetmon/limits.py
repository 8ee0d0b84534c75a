"""Resource limits: kernel memory of BPF maps (per owner and in total), ring buffer size, and file
descriptors, checked from the map specs BEFORE anything is created, so an oversized request is refused
with a `ResourceLimitError` instead of costing gigabytes of kernel memory or a half-loaded object.

Every `BPFObject.load()` is charged: to the process-wide total, and to every `MemoryAccount` the calling
thread is inside (an account is what one monitor, capture or service cube may use):

>>> import pynetmon.limits as limits
>>> limits.configure(kernel_memory_total=512 << 20)
>>> with limits.MemoryAccount("my monitor", limit=64 << 20):
...     dyn.set_dataplane_config(cfg)       # ResourceLimitError if its maps need more than 64 MiB

The charge is released when the object is closed (or garbage collected).

The estimate (`map_memory`) is deliberately simple and documented in docs/security.md: per map,
`MAP_OVERHEAD` plus `max_entries` × (key + value, each rounded up to 8 bytes, plus `HASH_ELEM_OVERHEAD`
for hashed types), the value counted once per possible CPU for per-CPU maps; arrays store no keys;
ring buffers cost their size in bytes; map-in-map, prog and perf-event arrays a pointer per entry.
"""
from __future__ import annotations

import contextvars
import os
import resource
import threading
import weakref
from collections.abc import Iterable
from dataclasses import dataclass
from types import EllipsisType
from typing import Self

from .errors import ResourceLimitError
from .maps import ARRAY_TYPES, KEYLESS_TYPES, PER_CPU_TYPES

MAP_OVERHEAD = 1024            # struct bpf_map, its file and BTF references: about 1 KiB per map
HASH_ELEM_OVERHEAD = 48        # struct htab_elem (hash node, lock-free list, pointers) per entry
# Maps whose entries are references to other kernel objects: a pointer (plus the key, if hashed) each.
POINTER_MAPS = {"prog_array", "perf_event_array", "cgroup_array", "array_of_maps", "hash_of_maps",
                "devmap", "devmap_hash", "cpumap", "xskmap", "sockmap", "sockhash"}
RINGBUFS = {"ringbuf", "user_ringbuf"}
FD_FIXED_COST = 4              # the object's BTF, a program's line info, libbpf's temporaries

def _round8(n: int) -> int:
    return (n + 7) & ~7


def map_memory(map_type: str, key_size: int, value_size: int, max_entries: int, ncpus: int = 1) -> int:
    """Estimated kernel memory (bytes) of one map, from its spec (see the module docstring)."""
    if map_type in RINGBUFS:
        return MAP_OVERHEAD + max_entries
    if map_type in POINTER_MAPS:
        return MAP_OVERHEAD + max_entries * (8 + (0 if map_type in ARRAY_TYPES else _round8(key_size)))
    value = _round8(value_size) * (ncpus if map_type in PER_CPU_TYPES else 1)
    if map_type in ARRAY_TYPES or map_type in KEYLESS_TYPES:
        return MAP_OVERHEAD + max_entries * value
    per_entry = _round8(key_size) + value + HASH_ELEM_OVERHEAD
    if map_type in PER_CPU_TYPES:
        per_entry += 8  # the per-CPU pointer kept in the element
    return MAP_OVERHEAD + max_entries * per_entry


@dataclass
class Settings:
    """Process-wide limits (None: no limit). Change them with `configure()`."""

    kernel_memory_total: int | None = None
    max_ring_bytes: int | None = None
    fd_reserve: int = 64  # descriptors kept free for everything else (sockets, files, connections)


def _default_total() -> int | None:
    # The library's default: half of the machine's memory, so that a typo (1 << 30 entries) fails
    # clearly instead of pushing the machine into the OOM killer. The daemon sets its own.
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") // 2
    except (ValueError, OSError):
        return None


settings = Settings(kernel_memory_total=_default_total())
_lock = threading.Lock()
_total_used = 0


def configure(*, kernel_memory_total: int | None | EllipsisType = ..., max_ring_bytes: int | None | EllipsisType = ...,
              fd_reserve: int | EllipsisType = ...) -> Settings:
    """Change the process-wide limits (arguments left out stay as they are); returns the settings."""
    with _lock:
        if not isinstance(kernel_memory_total, EllipsisType):
            settings.kernel_memory_total = kernel_memory_total
        if not isinstance(max_ring_bytes, EllipsisType):
            settings.max_ring_bytes = max_ring_bytes
        if not isinstance(fd_reserve, EllipsisType):
            settings.fd_reserve = fd_reserve
    return settings


def total_used() -> int:
    """Kernel memory (estimated bytes) of every BPF object this process has loaded and not closed."""
    return _total_used


class MemoryAccount:
    """Kernel memory charged to one owner, with an optional `limit` in bytes, and an optional largest ring
    buffer (`max_ring_bytes`). Objects loaded while the calling thread is inside `with account:` are
    charged to it and to its `parent` (a daemon's account holding its monitors' accounts, say); accounts
    entered inside one another are all charged too.

    `option` says how to raise the limits (for error messages); `limit_name` names `limit` in them.
    """

    def __init__(self, name: str, limit: int | None = None, *, parent: MemoryAccount | None = None,
                 max_ring_bytes: int | None = None, option: str = "the MemoryAccount's limit",
                 limit_name: str = "kernel memory per monitor", ring_option: str | None = None):
        self.name = name
        self.limit = limit
        self.parent = parent
        self.max_ring_bytes = max_ring_bytes
        self.option = option
        self.ring_option = ring_option or option
        self.limit_name = limit_name
        self.used = 0

    def chain(self) -> list[MemoryAccount]:
        """This account and its ancestors."""
        out, account = [], self
        while account is not None:
            out.append(account)
            account = account.parent
        return out

    def __enter__(self) -> Self:
        _accounts.set((*_accounts.get(), self))
        return self

    def __exit__(self, *exc) -> None:
        # The innermost entry of this account goes (an account may be entered again inside itself, and
        # by several threads at once: each thread has its own stack).
        stack = list(_accounts.get())
        for i in range(len(stack) - 1, -1, -1):
            if stack[i] is self:
                del stack[i]
                break
        _accounts.set(tuple(stack))

    def __repr__(self) -> str:
        return f"<MemoryAccount {self.name!r} used={self.used} limit={self.limit}>"


_accounts: contextvars.ContextVar[tuple[MemoryAccount, ...]] = contextvars.ContextVar("pynetmon_accounts",
                                                                                       default=())


class Charge:
    """Memory charged for one loaded object; `release()` (idempotent) gives it back."""

    def __init__(self, nbytes: int, accounts: tuple[MemoryAccount, ...]):
        self.nbytes = nbytes
        self._accounts = accounts
        self._released = False

    def release(self) -> None:
        global _total_used
        with _lock:
            if self._released:
                return
            self._released = True
            _total_used -= self.nbytes
            for account in self._accounts:
                account.used -= self.nbytes


@dataclass(frozen=True)
class MapNeed:
    """What one map of an object about to load will cost."""

    name: str
    type: str
    key_size: int
    value_size: int
    max_entries: int

    def memory(self, ncpus: int) -> int:
        return map_memory(self.type, self.key_size, self.value_size, self.max_entries, ncpus)


def check_ring(name: str, size: int, accounts: Iterable[MemoryAccount] = ()) -> None:
    """ResourceLimitError if a ring buffer of `size` bytes is over `settings.max_ring_bytes` or the
    `max_ring_bytes` of one of `accounts`."""
    limits = [(settings.max_ring_bytes, "pynetmon.limits.configure(max_ring_bytes=...)")]
    limits += [(a.max_ring_bytes, a.ring_option) for a in accounts]
    for limit, option in limits:
        if limit is not None and size > limit:
            raise ResourceLimitError("ring buffer size", f"ring buffer {name!r}", size, limit, option)


def current_accounts() -> tuple[MemoryAccount, ...]:
    """Every account the calling thread is charged to now (entered ones and their parents), innermost first."""
    out: list[MemoryAccount] = []
    for entered in reversed(_accounts.get()):
        out += [a for a in entered.chain() if all(a is not b for b in out)]
    return tuple(out)


def charge(what: str, maps: Iterable[MapNeed], ncpus: int, owner: object | None = None) -> Charge:
    """Check `maps` against every limit, then charge their memory (before they are created).

    Raises ResourceLimitError naming the first limit that would be exceeded; nothing is charged then.
    With `owner`, the charge is released when `owner` is garbage collected (if not before).
    """
    global _total_used
    maps = list(maps)
    accounts = current_accounts()
    for m in maps:
        if m.type in RINGBUFS:
            check_ring(m.name, m.max_entries, accounts)
    need = sum(m.memory(ncpus) for m in maps)
    with _lock:
        for account in accounts:
            if account.limit is not None and account.used + need > account.limit:
                raise ResourceLimitError(
                    account.limit_name, f"{what} of {account.name}", account.used + need, account.limit,
                    account.option, detail=_biggest(maps, ncpus))
        total = settings.kernel_memory_total
        if total is not None and _total_used + need > total:
            raise ResourceLimitError("kernel memory in total", what, _total_used + need, total,
                                     "pynetmon.limits.configure(kernel_memory_total=...)",
                                     detail=_biggest(maps, ncpus))
        _total_used += need
        for account in accounts:
            account.used += need
    result = Charge(need, accounts)
    if owner is not None:
        weakref.finalize(owner, result.release)
    return result


def _biggest(maps: list[MapNeed], ncpus: int) -> str:
    if not maps:
        return ""
    m = max(maps, key=lambda m: m.memory(ncpus))
    return (f"the largest map is {m.name!r} ({m.type}, {m.max_entries} entries of key {m.key_size} + value "
            f"{m.value_size} bytes: about {m.memory(ncpus) >> 20} MiB)")


def open_fds() -> int:
    """Descriptors this process has open now."""
    try:
        return len(os.listdir("/proc/self/fd")) - 1  # listdir's own descriptor
    except OSError:
        return 0


def check_fds(what: str, needed: int) -> None:
    """ResourceLimitError if opening `needed` more descriptors would leave fewer than `settings.fd_reserve`
    free under RLIMIT_NOFILE (so the process never runs into EMFILE halfway through a load)."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return
    in_use = open_fds()
    if in_use + needed + settings.fd_reserve > soft:
        raise ResourceLimitError("open files", what, in_use + needed, soft - settings.fd_reserve,
                                 "RLIMIT_NOFILE (ulimit -n)",
                                 detail=f"{in_use} descriptors are open, {needed} more are needed and "
                                        f"{settings.fd_reserve} are kept free", unit="descriptors")


def raise_fd_limit(target: int | None = None) -> int:
    """Raise RLIMIT_NOFILE's soft limit to `target` (default: the hard limit); returns the new soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = hard if target is None else target
    if hard != resource.RLIM_INFINITY:
        want = min(want, hard)
    if want != soft:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
    return want

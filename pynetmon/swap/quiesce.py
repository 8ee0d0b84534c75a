"""Waiting out BPF program invocations: after `wait()` returns, every TC/XDP program invocation that was
running (or had already read shared state) when `wait()` was called has finished.

This is what makes a swap-on-read flip exact (pynetmon/swap/dataplane.py): the pivot program reads the active
index once per invocation, so once every invocation that may have read the old index has finished, the
inactive instance's maps are no longer written by anyone and can be read and emptied.

Two proofs, chosen once per process (`mechanism`):

* ``"cpu-hop"`` (default on non-RT kernels, tens of microseconds). TC and XDP programs run with bottom
  halves disabled: in softirq (NAPI, backlog), under `rcu_read_lock_bh()` on transmit, and, for
  BPF_PROG_TEST_RUN, inside `local_bh_disable()` around every single run (net/bpf/test_run.c, since 6.6;
  the outer loop only disables migration, but each run is bracketed by bh-disable). On a kernel without
  PREEMPT_RT a bh-disabled section cannot be preempted, so when *a* thread executes in user mode on CPU
  c, no invocation is in progress on c and every invocation that started there earlier has finished.
  So after the flip a thread of ours must run once on every online CPU: the caller on its own CPU
  (sched_getcpu() after the flip), and on every other one a native helper thread pinned there
  (pynetmon/_cffi_src/cpuhop.py), woken through a futex after the flip and answering with the CPU
  sched_getcpu() reports. The helpers answer in parallel, as SCHED_FIFO threads when the process may
  (CAP_SYS_NICE), and the caller neither migrates nor changes scheduling class. Where helpers cannot be
  started, the caller itself hops over the CPUs (its affinity, then restored) as before.
* ``"rcu"`` (fallback, one RCU grace period: ~8 ms measured here). `membarrier(MEMBARRIER_CMD_GLOBAL)`
  is `synchronize_rcu()` in the kernel (kernel/sched/membarrier.c), and every TC/XDP/test-run invocation
  runs inside an RCU read-side section, so this holds also where the hop does not: PREEMPT_RT kernels
  (bh-disabled sections are preemptible there), CPUs we may not run on (cpuset), and CPU hotplug (the set
  of online CPUs changed during the wait).

A per-invocation "in flight" counter in the pivot was rejected: a tail call never returns to the pivot, so
it cannot mark the end of an invocation, and an atomic per packet costs more than the whole pivot.
"""
from __future__ import annotations

import errno
import os
import threading
import time

from .._binding import ffi, lib
from ..errors import NotSupportedError

_ONLINE = "/sys/devices/system/cpu/online"
# A helper that has not answered by then makes this wait fall back to RCU. Only a CPU that cannot run the
# helper (a long non-preemptible kernel section, higher real-time tasks, a stolen virtual CPU) delays an
# answer, and a grace period would have to wait for that CPU as well; so the limit is generous.
HELPER_TIMEOUT_NS = 1_000_000_000
HELPER_PRIORITY = 1              # SCHED_FIFO priority of the helpers (they run a few microseconds per wait)

def sched_getcpu() -> int:
    """The CPU the calling thread is running on right now (glibc's vDSO read: well under a microsecond)."""
    cpu = lib.sched_getcpu()
    if cpu < 0:
        err = ffi.errno
        raise OSError(err, f"sched_getcpu: {os.strerror(err)}")
    return cpu


def parse_cpu_list(text: str) -> frozenset[int]:
    """'0-3,5,7-8' (the kernel's cpulist format) → {0, 1, 2, 3, 5, 7, 8}."""
    cpus: set[int] = set()
    for part in text.strip().split(","):
        if not part:
            continue
        first, _, last = part.partition("-")
        cpus.update(range(int(first), int(last or first) + 1))
    return frozenset(cpus)


def online_cpus() -> frozenset[int]:
    with open(_ONLINE) as f:
        return parse_cpu_list(f.read())


class OnlineCPUs:
    """The online CPU set, re-read cheaply at every wait: the sysfs file stays open and is re-read with
    pread() at offset 0 (sysfs regenerates it), and the text is parsed only when it changed."""

    def __init__(self):
        self._fd = -1
        self._text = b""
        self._cpus: frozenset[int] = frozenset()

    def read(self) -> frozenset[int]:
        if self._fd < 0:
            self._fd = os.open(_ONLINE, os.O_RDONLY | os.O_CLOEXEC)
        text = os.pread(self._fd, 4096, 0)
        if text != self._text:
            self._cpus = parse_cpu_list(text.decode())
            self._text = text
        return self._cpus

    def close(self) -> None:
        """Close the file (a later `read()` opens it again)."""
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


def realtime_kernel() -> bool:
    """True on PREEMPT_RT kernels, where bh-disabled code can be preempted."""
    try:
        with open("/sys/kernel/realtime") as f:
            if f.read().strip() == "1":
                return True
    except OSError:
        pass
    return "PREEMPT_RT" in os.uname().version


def synchronize_rcu() -> None:
    """One full RCU grace period (membarrier(MEMBARRIER_CMD_GLOBAL) = synchronize_rcu())."""
    ret = lib.pynetmon_membarrier(lib.MEMBARRIER_CMD_GLOBAL, 0)
    if ret < 0:
        raise NotSupportedError(
            f"membarrier(MEMBARRIER_CMD_GLOBAL) failed: {os.strerror(-ret)} (errno {-ret}); the kernel "
            "refuses it with nohz_full CPUs, and without it pynetmon cannot wait for an RCU grace period")


def _rcu_available() -> bool:
    supported = lib.pynetmon_membarrier(lib.MEMBARRIER_CMD_QUERY, 0)
    return supported >= 0 and bool(supported & lib.MEMBARRIER_CMD_GLOBAL)


def _hop_unavailable_reason() -> str | None:
    if realtime_kernel():
        return "PREEMPT_RT kernel: bh-disabled sections are preemptible"
    try:
        here = sched_getcpu()
    except OSError as exc:
        return f"sched_getcpu unavailable ({exc})"
    online = online_cpus()
    allowed = os.sched_getaffinity(0)
    if here not in online:
        return "sched_getcpu disagrees with the online CPU list"
    outside = sorted(online - allowed)
    if outside:
        # Only the cpuset (not a plain affinity mask) can forbid them; try once to be sure.
        try:
            os.sched_setaffinity(0, online)
        except OSError:
            return f"this process may not run on online CPU(s) {outside} (cpuset)"
        finally:
            os.sched_setaffinity(0, allowed)
    return None


class Quiescer:
    """Waits until every TC/XDP invocation that started before `wait()` has finished.

    >>> q = Quiescer()
    >>> q.mechanism             # "cpu-hop" or "rcu"
    >>> q.wait()

    `mechanism="auto"` picks "cpu-hop" where its proof holds and "rcu" elsewhere; a hop that cannot
    complete (a CPU went offline or came online, a helper answered late or from the wrong CPU, an
    affinity change was refused) falls back to "rcu" for that wait. `stats` counts the waits done each
    way. `helpers=False` makes the caller hop over the CPUs itself instead of waking the helper threads
    (the former way, kept for where helpers cannot be started); `boost` runs the helpers (or that hop) as
    SCHED_FIFO when the process may.
    """

    def __init__(self, mechanism: str = "auto", *, boost: bool = True, helpers: bool = True):
        self.boost = boost
        if mechanism not in ("auto", "cpu-hop", "rcu"):
            raise ValueError(f"mechanism must be 'auto', 'cpu-hop' or 'rcu', not {mechanism!r}")
        rcu_ok = _rcu_available()
        hop_problem = _hop_unavailable_reason() if mechanism != "rcu" else "not requested"
        if mechanism == "cpu-hop" and hop_problem:
            raise NotSupportedError(f"the cpu-hop wait does not hold here: {hop_problem}")
        if mechanism == "rcu" or (mechanism == "auto" and hop_problem):
            if not rcu_ok:
                why = f" and the cpu-hop proof does not hold ({hop_problem})" if mechanism == "auto" else ""
                raise NotSupportedError("cannot wait for BPF invocations: membarrier(MEMBARRIER_CMD_GLOBAL) "
                                        f"is unavailable{why}")
            self.mechanism = "rcu"
        else:
            self.mechanism = "cpu-hop"
        self.fallback_reason = hop_problem if self.mechanism == "rcu" else None
        self._online_cpus = OnlineCPUs()
        self._online = self._online_cpus.read()
        # One wait at a time: the helpers answer one generation at a time.
        self._lock = threading.Lock()
        self.helpers = helpers and self.mechanism == "cpu-hop"
        self.helper_problem: str | None = None   # why the helpers could not be started, if they could not
        self._hop_helpers = None                  # the native helper set (cdata), started at the first wait
        self._helpers_pid = 0
        self.stats = {"cpu-hop": 0, "rcu": 0}
        self.last_fallback: str | None = None  # why the last cpu-hop wait that fell back to RCU did

    def wait(self) -> str:
        """Block until every invocation that started before this call has finished; returns how."""
        with self._lock:
            if self.mechanism == "cpu-hop" and self._hop():
                used = "cpu-hop"
            else:
                synchronize_rcu()
                used = "rcu"
            self.stats[used] += 1
        return used

    def close(self) -> None:
        """Stop the helper threads and close the CPU list (a later wait starts and opens them again)."""
        with self._lock:
            self._drop_helpers()
            self._online_cpus.close()

    def _hop(self) -> bool:
        """Run on every online CPU once. False (caller falls back) when that could not be proven."""
        online = self._online_cpus.read()
        if online != self._online:  # hotplug in progress or just done: a CPU may be missed
            self._online = online
            self._drop_helpers()
            self.last_fallback = "the online CPUs changed"
            return False
        helpers = self._helpers_for(online) if self.helpers else None
        if helpers is not None:
            ret = lib.pynetmon_hop_run(helpers, HELPER_TIMEOUT_NS)
            if ret != 0:
                self._drop_helpers()  # late or moved: start afresh at the next wait
                self.last_fallback = ("a helper thread answered from another CPU" if ret == -errno.EXDEV else
                                      f"the helper threads did not answer ({os.strerror(-ret)})")
                return False
        elif not self._hop_by_migration(online):
            self.last_fallback = "the caller could not run on every online CPU"
            return False
        if self._online_cpus.read() != online:
            self.last_fallback = "the online CPUs changed during the hop"
            return False
        return True

    def _helpers_for(self, online: frozenset[int]):
        """The helper threads for `online` (started on first use, and again after a fork); None when they
        cannot be started (the caller hops itself then)."""
        if self._hop_helpers is not None and self._helpers_pid == os.getpid():
            return self._hop_helpers
        if self._hop_helpers is not None:
            # A forked child: the helpers did not survive the fork, so never join them (that would hang);
            # their memory is left alone.
            ffi.gc(self._hop_helpers, None)
            self._hop_helpers = None
        cpus = sorted(online)
        error = ffi.new("int *")
        hop = lib.pynetmon_hop_new(ffi.new("int[]", cpus), len(cpus), HELPER_PRIORITY if self.boost else 0, error)
        if hop == ffi.NULL:
            self.helpers = False
            self.helper_problem = f"cannot start the cpu-hop helper threads: {os.strerror(error[0])}"
            return None
        self._hop_helpers = ffi.gc(hop, lib.pynetmon_hop_free)
        self._helpers_pid = os.getpid()
        return self._hop_helpers

    @property
    def helpers_realtime(self) -> bool:
        """True when the helper threads run as SCHED_FIFO."""
        return self._hop_helpers is not None and bool(lib.pynetmon_hop_realtime(self._hop_helpers))

    def _drop_helpers(self) -> None:
        helpers, self._hop_helpers = self._hop_helpers, None
        if helpers is not None and self._helpers_pid == os.getpid():
            ffi.gc(helpers, None)  # freed here, not again by the garbage collector
            lib.pynetmon_hop_free(helpers)

    def _hop_by_migration(self, online: frozenset[int]) -> bool:
        """The caller runs on every online CPU itself by changing its affinity, then restores it."""
        restore = os.sched_getaffinity(0)
        moved = False
        boosted = self._boost()
        try:
            # Executing in user mode on a CPU proves that CPU is quiescent, so the one we are on counts.
            here = sched_getcpu()
            for cpu in sorted(online - {here}):
                moved = True
                os.sched_setaffinity(0, {cpu})
                if not self._arrived(cpu):
                    return False
        except OSError as exc:
            if exc.errno not in (errno.EINVAL, errno.EPERM):
                raise
            return False
        finally:
            if moved:
                os.sched_setaffinity(0, restore)
            if boosted is not None:
                os.sched_setscheduler(0, *boosted)
        return True

    def _boost(self) -> tuple | None:
        """Make the calling thread SCHED_FIFO for a migration hop; returns how to restore it (None: unchanged).

        A migrated SCHED_OTHER thread queues behind whatever already runs on the target CPU and may wait
        for a whole time slice there (p99 of 31 ms measured with three CPU hogs on two CPUs, against
        0.15 ms as SCHED_FIFO). The flip side: dropping back to SCHED_OTHER makes the scheduler reschedule
        the thread at once, so under load the hop's cost moves there (the helper threads avoid both).
        Without CAP_SYS_NICE the hop simply runs at normal priority (correct, only slower under load)."""
        if not self.boost:
            return None
        try:
            policy = os.sched_getscheduler(0)
            if policy in (os.SCHED_FIFO, os.SCHED_RR):
                return None
            param = os.sched_getparam(0)
            os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(1))
        except OSError:
            self.boost = False
            return None
        return policy, param

    @staticmethod
    def _arrived(cpu: int) -> bool:
        # sched_setaffinity() on oneself returns after the migration; the check makes the proof not
        # depend on that, and tolerates a concurrent affinity change by retrying briefly.
        for _ in range(100):
            if sched_getcpu() == cpu:
                return True
            os.sched_yield()
        deadline = time.monotonic() + 0.05
        while time.monotonic() < deadline:
            if sched_getcpu() == cpu:
                return True
            time.sleep(0)
        return False


_default: Quiescer | None = None
_default_lock = threading.Lock()


def default_quiescer() -> Quiescer:
    """The process-wide Quiescer (its mechanism is probed once)."""
    global _default
    with _default_lock:
        if _default is None:
            _default = Quiescer()
        return _default

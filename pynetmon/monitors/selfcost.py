"""What a monitor costs the kernel, as ebpf_exporter reports it: per program the run count and run time
(from the kernel's program info) and the memory of its maps.

The kernel counts run time only while run-time statistics are on: the `kernel.bpf_stats_enabled` sysctl
(global; we never change it, other users rely on its value) or a `BPF_ENABLE_STATS` descriptor, which
turns statistics on for as long as some process holds one (reference-counted by the kernel) and needs
CAP_SYS_ADMIN. Every started monitor holds one reference to this process's single descriptor; without
the capability `run_count`/`run_time_ns` are null and `stats` says why and how to enable them.

>>> cost(monitor.objects)
{'run_count': 12, 'run_time_ns': 4711, 'maps_bytes': 1056768, 'stats': 'BPF_ENABLE_STATS', 'programs': {...}}
"""
from __future__ import annotations

import os
import threading
from collections.abc import Iterable
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from .._binding import lib
from ..errors import error_from_errno
from ..maps import Map
from ..object import BPFObject
from ..program import Program

BPF_STATS_RUN_TIME = 0  # enum bpf_stats_type
SYSCTL = "/proc/sys/kernel/bpf_stats_enabled"
HOW_TO_ENABLE = ("run pynetmon with CAP_SYS_ADMIN (it then holds a BPF_ENABLE_STATS descriptor while monitors "
                 "run) or set the sysctl kernel.bpf_stats_enabled=1")


def sysctl_enabled() -> bool:
    """True when the global sysctl already has statistics on (then no descriptor is needed)."""
    try:
        with open(SYSCTL) as f:
            return f.read().strip() == "1"
    except OSError:
        return False


class RunTimeStats:
    """This process's one BPF_ENABLE_STATS descriptor, shared by reference count among started monitors."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._users = 0
        self._fd = -1
        self.reason: str | None = None
        """Why statistics are off (None when they are on)."""

    def acquire(self) -> None:
        """One more user; opens the descriptor for the first. Never raises: a refusal is kept in `reason`."""
        with self._lock:
            self._users += 1
            if self._fd < 0:
                fd = lib.bpf_enable_stats(BPF_STATS_RUN_TIME)
                if fd >= 0:
                    self._fd, self.reason = fd, None
                else:
                    err = error_from_errno(-fd, "BPF_ENABLE_STATS")
                    self.reason = f"{err}; {HOW_TO_ENABLE}"

    def release(self) -> None:
        """One user fewer; the last closes the descriptor (the kernel turns statistics off when no one
        else holds one and the sysctl is 0)."""
        with self._lock:
            self._users = max(0, self._users - 1)
            if self._users == 0 and self._fd >= 0:
                os.close(self._fd)
                self._fd = -1

    @property
    def source(self) -> str | None:
        """"BPF_ENABLE_STATS" or "sysctl" when the kernel is counting, else None."""
        if self._fd >= 0:
            return "BPF_ENABLE_STATS"
        return "sysctl" if sysctl_enabled() else None


STATS = RunTimeStats()


def map_memlock(fd: int) -> int:
    """The bytes the kernel charges for a map (its `memlock` in /proc/self/fdinfo), 0 when unknown."""
    try:
        with open(f"/proc/self/fdinfo/{fd}") as f:
            for line in f:
                if line.startswith("memlock:"):
                    return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return 0


def _programs(objects: Iterable[BPFObject]) -> list[Program]:
    return [p for obj in objects for p in obj.programs.values() if isinstance(p, Program) and p._fd >= 0]


def _maps(objects: Iterable[BPFObject]) -> list[Map]:
    return [m for obj in objects for m in obj.maps.values() if isinstance(m, Map) and m._fd >= 0]


def cost(objects: Iterable[BPFObject]) -> dict[str, Any]:
    """`snapshot()["self"]`: run_count and run_time_ns summed over the programs (null with `stats`
    saying why when the kernel is not counting), maps_bytes, and the same per program."""
    objects = list(objects)
    source = STATS.source
    programs: dict[str, dict[str, int | None]] = {}
    for prog in _programs(objects):
        info = prog.info()
        programs[prog.name] = {"run_count": info["run_cnt"] if source else None,
                               "run_time_ns": info["run_time_ns"] if source else None}
    counted = source is not None
    return {
        "run_count": sum(p["run_count"] or 0 for p in programs.values()) if counted else None,
        "run_time_ns": sum(p["run_time_ns"] or 0 for p in programs.values()) if counted else None,
        "maps_bytes": sum(map_memlock(m.fd) for m in _maps(objects)),
        "stats": source or (STATS.reason or f"run-time statistics are off; {HOW_TO_ENABLE}"),
        "programs": programs,
    }


def families(snapshot_self: dict[str, Any]) -> list[Metric]:
    """ebpf_exporter-style self-metrics from a `cost()` result, labelled by program (the service adds
    `monitor`): pynetmon_program_run_seconds_total, pynetmon_program_run_count_total and
    pynetmon_monitor_maps_bytes. Without statistics the run families have no samples."""
    seconds = CounterMetricFamily("pynetmon_program_run_seconds", "Time the kernel spent running the program "
                                  "(counted while run-time statistics are on)", labels=["program"])
    runs = CounterMetricFamily("pynetmon_program_run_count", "Times the kernel ran the program "
                               "(counted while run-time statistics are on)", labels=["program"])
    for name, prog in sorted(snapshot_self.get("programs", {}).items()):
        if prog["run_time_ns"] is not None:
            seconds.add_metric([name], prog["run_time_ns"] / 1e9)
            runs.add_metric([name], prog["run_count"])
    maps = GaugeMetricFamily("pynetmon_monitor_maps_bytes", "Memory the kernel charges for the monitor's maps",
                             value=snapshot_self.get("maps_bytes", 0))
    return [seconds, runs, maps]

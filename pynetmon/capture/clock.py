"""Wall-clock time for packets stamped in the kernel.

The capture program reads CLOCK_TAI (`bpf_ktime_get_tai_ns`) and adds an offset that user space
measures: CLOCK_REALTIME - CLOCK_TAI. TAI is chosen over the monotonic and boot clocks because it is
CLOCK_REALTIME shifted by a constant (the kernel's TAI offset, 0 or 37 s on most systems): NTP slewing
and clock steps move both alike, so one offset stays right for the whole capture. The offset only
changes when the TAI offset itself is changed (adjtimex) or at a leap second; the capture re-measures it
on every flush tick to follow that too.
"""
from __future__ import annotations

import time

__all__ = ["realtime_minus_tai_ns"]


def realtime_minus_tai_ns(samples: int = 5) -> int:
    """CLOCK_REALTIME - CLOCK_TAI in nanoseconds, from the tightest of a few bracketed readings."""
    best = None
    for _ in range(samples):
        before = time.clock_gettime_ns(time.CLOCK_REALTIME)
        tai = time.clock_gettime_ns(time.CLOCK_TAI)
        after = time.clock_gettime_ns(time.CLOCK_REALTIME)
        width = after - before
        if best is None or width < best[0]:
            best = (width, (before + after) // 2 - tai)
    return best[1]

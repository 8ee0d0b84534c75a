"""The kernel's timestamps, through BPF_PROG_TEST_RUN: each record's (seconds, nanoseconds) is the TAI
clock at the run plus the configured offset, exactly - also when the second changes between packets and
when the offset moves the clock backwards or forwards (the program keeps the current second per CPU and
divides only when a stamp leaves it)."""
from __future__ import annotations

import time

from pynetmon.capture.capture import compile_filter
from pynetmon.capture.dataplane import Dataplane
from pynetmon.capture.pcap import RECORD_HEADER, iter_records
from pynetmon.ringbuf import BatchRing

FRAME = bytes(range(6)) * 2 + b"\x08\x00" + bytes(46)  # 60 bytes


def _stamps(ring: BatchRing) -> list[tuple[int, int, int, int]]:
    batch, _ = ring.consume_batch()
    return [RECORD_HEADER.unpack_from(batch, start) for start, _ in iter_records(batch)]


def test_timestamps_are_exact_across_seconds_and_offset_steps():
    dp = Dataplane(compile_filter("all"), ring_bytes=1 << 16)
    ring = BatchRing(dp.maps["capture_ring"])
    prog = dp.object.programs["capture_ingress"]
    try:
        base = 1_700_000_000_000_000_000 - time.clock_gettime_ns(time.CLOCK_TAI)
        # Forwards, backwards by less than a second and by more, and a stamp every 0.3 s: several seconds
        # begin between packets, and every step leaves the second the program kept.
        for offset in (base, base - 700_000_000, base + 2_300_000_000, base - 5_000_000_000, base):
            dp.configure(snaplen=96, clock_offset_ns=offset, wakeup_bytes=0)
            for _ in range(4):
                before = time.clock_gettime_ns(time.CLOCK_TAI) + offset
                prog.test_run(FRAME)
                after = time.clock_gettime_ns(time.CLOCK_TAI) + offset
                (record,) = _stamps(ring)
                sec, nsec, caplen, wirelen = record
                assert 0 <= nsec < 1_000_000_000
                assert before <= sec * 1_000_000_000 + nsec <= after
                assert (caplen, wirelen) == (60, 60)
                time.sleep(0.3)
    finally:
        ring.close()
        dp.close()


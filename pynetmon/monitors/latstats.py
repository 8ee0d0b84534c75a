"""The user side of bpf/monitors/latstats.h, shared by the delay monitors (rtt, dns, latency): one key's
latency statistics (count, sum, min, max and a log-linear histogram of microseconds) decoded into the
snapshot fields, and the monitor-wide HISTOGRAM read from its per-CPU slot array.

Log-linear slots: 0..15 µs have one slot each; above, each power of two [2^e, 2^(e+1)) is cut into 8
equal sub-slots, so a quantile read from them is within 12.5% before interpolation (a log2 slot is a
factor of two wide). Quantiles are clamped to the observed [min, max].

>>> s = LatStats(count=2, sum_ns=3000, min_ns=1000, max_ns=2000, last_ns=0, slots=(0, 1, 1) + (0,) * 189)
>>> s.summary()["p50_us"], s.summary()["avg_us"]
(1.0, 1.5)
"""
from __future__ import annotations

import functools
import math
import struct
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from pydantic import Field

from ..errors import Error
from ..maps import Map
from . import flowkey
from .base import Monitor, MonitorOptions
from .cardinality import SeriesTTL, top_keys
from .flowkey import FlowKey
from .histogram import LOG2_SLOTS, Histogram

DIRECT = 16      # PNM_LAT_DIRECT
SUB_BITS = 3     # PNM_LAT_SUB_BITS
SLOTS = 192      # PNM_LAT_SLOTS
STATS = struct.Struct(f"=QQQQQ{SLOTS}I")  # struct pnm_lat_stats
HIST_CONFIG = struct.Struct("=QI4x")      # struct pnm_hist_config


@functools.cache
def slot_bounds() -> list[float]:
    """Inclusive upper bound (µs) of each log-linear slot; the last is +Inf."""
    bounds: list[float] = [float(i) for i in range(DIRECT)]
    sub = 1 << SUB_BITS
    for slot in range(DIRECT, SLOTS):
        e, k = 4 + (slot - DIRECT) // sub, (slot - DIRECT) % sub
        width = 1 << (e - SUB_BITS)
        bounds.append(float((1 << e) + (k + 1) * width - 1))
    bounds[-1] = math.inf
    return bounds


def slot_of(us: int) -> int:
    """The slot of `us` microseconds (pnm_lat_slot in latstats.h), for tests and documentation."""
    if us < DIRECT:
        return us
    e = us.bit_length() - 1
    return min(DIRECT + ((e - 4) << SUB_BITS) + ((us >> (e - SUB_BITS)) & 7), SLOTS - 1)


def _us(ns: float) -> float:
    return round(ns / 1000, 3)


class LatStats(NamedTuple):
    """One key's statistics as the kernel keeps them (nanoseconds; slots count microseconds)."""

    count: int  # type: ignore[assignment]  # the kernel's name; shadows tuple.count, which nothing uses
    sum_ns: int
    min_ns: int
    max_ns: int
    last_ns: int
    slots: Sequence[int]

    @classmethod
    def decode(cls, raw: bytes | memoryview, offset: int = 0) -> LatStats:
        fields = STATS.unpack_from(raw, offset)
        return cls(*fields[:5], fields[5:])  # type: ignore[call-arg]  # see `count`

    def quantile_us(self, q: float) -> float | None:
        """The `q` quantile in µs, interpolated in its slot and clamped to [min, max]; None when empty."""
        if not self.count:
            return None
        value = Histogram(slot_bounds(), list(self.slots)).quantile(q)
        if value is None:
            return None
        return round(min(max(value, self.min_ns / 1000), self.max_ns / 1000), 3)

    def summary(self) -> dict[str, Any]:
        """The snapshot fields: samples, min/avg/p50/p99/max in µs (None when there are no samples)."""
        empty = not self.count
        return {"samples": self.count,
                "min_us": None if empty else _us(self.min_ns),
                "avg_us": None if empty else _us(self.sum_ns / self.count),
                "p50_us": self.quantile_us(0.5), "p99_us": self.quantile_us(0.99),
                "max_us": None if empty else _us(self.max_ns)}


class HistogramOptions(MonitorOptions):
    """The options of a delay monitor's HISTOGRAM: log2 µs slots, or `linear=W` slots of W µs
    (`linear=1`: 1-µs buckets), `buckets` of them (the last takes everything above)."""

    linear: int | None = Field(None, ge=1, le=10_000_000, description="linear buckets of this many µs (default log2)")
    buckets: int = Field(LOG2_SLOTS, ge=2, le=100_000, description="histogram slots (the last is +Inf)")


def hist_config(options: HistogramOptions) -> tuple[bytes, int]:
    """(struct pnm_hist_config bytes, slots of the histogram map) for the options."""
    nslots = options.buckets if options.linear else min(options.buckets, LOG2_SLOTS)
    return HIST_CONFIG.pack(options.linear or 0, nslots), nslots


def read_histogram(slots_map: Map, options: HistogramOptions, sum_us: float) -> Histogram:
    """The HISTOGRAM of a per-CPU slot array (summed over CPUs) with its sum in µs."""
    _, values, n = slots_map.read_raw()
    # a per-CPU u64 is one 8-byte value per possible CPU, slot after slot (arrays batch in key order)
    flat = [v for (v,) in struct.iter_unpack("=Q", values[:n * slots_map.ncpus * 8])]
    counts = [sum(flat[i * slots_map.ncpus:(i + 1) * slots_map.ncpus]) for i in range(n)]
    return Histogram.from_slots(counts, linear=options.linear, sum=sum_us)


def per_cpu_sums(counters: Map, nr: int) -> list[int]:
    """Each index of a per-CPU u64 counter array, summed over CPUs."""
    return [sum(counters.lookup(i)) for i in range(nr)]


def read_table(table: Map) -> list[tuple[bytes, LatStats]]:
    """Every (raw key, LatStats) of a hash of struct pnm_lat_stats, in one batch read."""
    keys, values, n = table.read_raw()
    ks, vs = table.key_size, table.value_size
    return [(keys[i * ks:(i + 1) * ks], LatStats.decode(values, i * vs)) for i in range(n)]


def evict_idle(table: Map, idle_timeout: float, now_ns: int) -> int:
    """Remove the keys without a sample for `idle_timeout` seconds; returns how many went. A sample
    landing between the read and the delete is lost with its (idle) key."""
    limit = int(idle_timeout * 1e9)
    gone = 0
    for key, stats in read_table(table):
        if now_ns - stats.last_ns > limit:
            try:
                table.delete(key)
                gone += 1
            except KeyError:
                pass
    return gone


class IdleEvictor:
    """A daemon thread that calls `evict()` every `period()` seconds until `stop()`: the kernel tables of
    the delay monitors are plain hashes (overflow counted, nothing lost silently), so user space frees
    them of idle keys even when nobody reads the monitor."""

    def __init__(self, name: str, evict: Callable[[], object], period: Callable[[], float]) -> None:
        self._evict, self._period = evict, period
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stopped.wait(self._period()):
            try:
                self._evict()
            except Error:  # the map went away while closing; the loop ends with the next wait
                pass

    def stop(self) -> None:
        self._stopped.set()
        self._thread.join()


class FlowTable:
    """A kernel hash of `struct pnm_flow_key` → `struct pnm_lat_stats` (rtt, latency) as snapshot rows
    and metric families: the per-flow half every flow-keyed delay monitor has."""

    def __init__(self, table: Map, ttl: float):
        self.table = table
        self.evicted = 0
        self.series = SeriesTTL(ttl)

    def read(self) -> list[tuple[FlowKey, LatStats]]:
        """(flow, statistics) of every flow with samples."""
        return [(flowkey.decode(key), stats) for key, stats in read_table(self.table)]

    def evict_idle(self, idle_timeout: float, now_ns: int | None = None) -> int:
        gone = evict_idle(self.table, idle_timeout, time.monotonic_ns() if now_ns is None else now_ns)
        self.evicted += gone
        return gone

    def rows(self) -> list[dict[str, Any]]:
        """`{"src", "dst", "sport", "dport", "proto", "samples", "min_us", "avg_us", "p50_us", "p99_us",
        "max_us"}` per flow, most samples first."""
        rows = [{"src": k.src, "dst": k.dst, "sport": k.sport, "dport": k.dport, "proto": k.proto, **s.summary()}
                for k, s in self.read()]
        rows.sort(key=lambda r: -r["samples"])
        return rows

    def families(self, prefix: str, what: str, top: int, ttl: float) -> tuple[list[Metric], int]:
        """`PREFIX_samples_total` and `PREFIX_seconds_total` per flow (the `top` flows by samples, keys
        gone for `ttl` seconds dropped), `PREFIX_flows`; and how many flows were left out."""
        labels = ["src", "dst", "sport", "dport", "proto"]
        current = {(k.src, k.dst, str(k.sport), str(k.dport), str(k.proto)): s for k, s in self.read()}
        self.series.ttl = ttl
        kept, omitted, _ = top_keys(self.series.observe(current), top, weight=lambda s: s.count)
        samples = CounterMetricFamily(f"{prefix}_samples", f"{what} samples per flow", labels=labels)
        seconds = CounterMetricFamily(f"{prefix}_seconds", f"Sum of the {what} samples per flow", labels=labels)
        for label_values, stats in kept.items():
            samples.add_metric(list(label_values), stats.count)
            seconds.add_metric(list(label_values), stats.sum_ns / 1e9)
        return [samples, seconds, GaugeMetricFamily(f"{prefix}_flows", "Flows in the kernel table",
                                                    value=len(current))], omitted


class EvictingMonitor(Monitor):
    """A monitor whose kernel tables user space frees of idle keys: `_start_evicting()` at the end of
    `_start` runs `evict_idle()` every min(idle_timeout / 2, 5) seconds until the monitor closes."""

    _evictor: IdleEvictor | None = None

    def evict_idle(self, now_ns: int | None = None) -> int:
        """Remove the keys idle for `idle_timeout` seconds; returns how many went."""
        raise NotImplementedError

    def _start_evicting(self) -> None:
        self._evictor = IdleEvictor(f"pynetmon-{self.kind}-evict-{self.interface}", self.evict_idle,
                                    lambda: min(self.options.idle_timeout / 2, 5.0))  # type: ignore[attr-defined]

    def _stop(self) -> None:
        if self._evictor is not None:
            self._evictor.stop()
            self._evictor = None


class FlowDelayMonitor(EvictingMonitor):
    """rtt and latency: a `FlowTable` (`self._flows`) evicted by idle flows."""

    _flows: FlowTable

    def evict_idle(self, now_ns: int | None = None) -> int:
        """Remove flows without a sample for `idle_timeout` seconds; returns how many went."""
        with self.lock:
            return self._flows.evict_idle(self.options.idle_timeout, now_ns)  # type: ignore[attr-defined]

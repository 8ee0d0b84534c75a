"""Histograms as the monitors keep them: an array of per-slot counts in a map (slot = log2 or linear
bucket of the value, computed in the kernel by `bpf/monitors/common.bpf.h`) plus a sum, turned into the
JSON shape every snapshot uses and into real OpenMetrics histograms.

Slots (the convention of BCC's `log2l`, also Dynmon's): with log2 buckets slot 0 holds 0 and slot i
holds [2^(i-1), 2^i - 1]; with `linear=w` slot i holds [i*w, (i+1)*w - 1]. The last slot holds
everything above, so its bound is +Inf.

>>> h = Histogram.from_slots([0, 3, 1], sum=5)
>>> h.to_dict()
{'buckets': [{'le': 0, 'count': 0}, {'le': 1, 'count': 3}, {'le': '+Inf', 'count': 4}], 'count': 4, 'sum': 5}
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from prometheus_client.core import HistogramMetricFamily

LOG2_SLOTS = 64
"""Slots of a log2 histogram map (`PNM_LOG2_SLOTS` in common.bpf.h): every __u64 value has a slot."""


def slot_bounds(nslots: int, linear: int | None = None) -> list[float]:
    """Inclusive upper bound of each of `nslots` slots; the last is +Inf."""
    if nslots < 1:
        raise ValueError("a histogram needs at least one slot")
    if linear is not None and linear < 1:
        raise ValueError(f"linear bucket width must be ≥ 1, not {linear}")
    if linear:
        bounds = [float((i + 1) * linear - 1) for i in range(nslots)]
    else:
        bounds = [float(2 ** i - 1) for i in range(nslots)]
    bounds[-1] = math.inf
    return bounds


def _json_number(x: float) -> int | float | str:
    if math.isinf(x):
        return "+Inf"
    return int(x) if x == int(x) else x


@dataclass
class Histogram:
    """Per-slot `counts` (not cumulative) with each slot's inclusive upper `bounds`, and the `sum` of
    the values counted."""

    bounds: list[float]
    counts: list[int]
    sum: float = 0
    _cumulative: list[int] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if len(self.bounds) != len(self.counts):
            raise ValueError(f"{len(self.bounds)} bounds for {len(self.counts)} counts")
        total, self._cumulative = 0, []
        for c in self.counts:
            total += c
            self._cumulative.append(total)

    @classmethod
    def from_slots(cls, counts: Sequence[int], *, linear: int | None = None, sum: float = 0,
                   trim: bool = True) -> Histogram:
        """From a kernel slot array. With `trim`, empty slots above the highest used one are dropped
        (a log2 map has 64 slots; most are empty) and the last kept slot's bound becomes +Inf only if
        it was the map's last slot."""
        counts = [int(c) for c in counts]
        bounds = slot_bounds(len(counts), linear)
        if trim:
            used = max((i for i, c in enumerate(counts) if c), default=0)
            keep = min(len(counts), used + 2)  # one empty slot above the highest keeps `le` honest
            counts, bounds = counts[:keep], bounds[:keep]
            if bounds[-1] != math.inf:
                counts.append(0)
                bounds.append(math.inf)
        return cls(bounds, counts, sum)

    @property
    def count(self) -> int:
        return self._cumulative[-1] if self._cumulative else 0

    def quantile(self, q: float) -> float | None:
        """The `q` quantile (0 ≤ q ≤ 1) estimated by linear interpolation inside its slot (as
        Prometheus' histogram_quantile does); None when empty. In the +Inf slot, the slot's lower
        bound is the answer (there is nothing to interpolate towards)."""
        if not 0 <= q <= 1:
            raise ValueError(f"quantile must be within [0, 1], not {q}")
        n = self.count
        if n == 0:
            return None
        rank = q * n
        for i, cum in enumerate(self._cumulative):
            if cum >= rank and self.counts[i]:
                lower = self.bounds[i - 1] + 1 if i else 0.0
                upper = self.bounds[i]
                if math.isinf(upper):
                    return lower
                before = cum - self.counts[i]
                return lower + (upper - lower) * max(0.0, rank - before) / self.counts[i]
        return self.bounds[-2] if len(self.bounds) > 1 else 0.0

    def percentiles(self, *qs: float) -> dict[str, float | None]:
        """{"p50": ..., "p99": ...} for the given quantiles."""
        return {f"p{q * 100:g}": self.quantile(q) for q in qs}

    def to_dict(self) -> dict[str, Any]:
        """The snapshot shape: cumulative buckets, count and sum."""
        return {"buckets": [{"le": _json_number(b), "count": c} for b, c in zip(self.bounds, self._cumulative)],
                "count": self.count, "sum": _json_number(self.sum)}

    def merged(self, other: Histogram) -> Histogram:
        """The sum of two histograms with the same bounds."""
        if self.bounds != other.bounds:
            raise ValueError("histograms with different bounds cannot be merged")
        return Histogram(list(self.bounds), [a + b for a, b in zip(self.counts, other.counts)], self.sum + other.sum)

    def add_to(self, family: HistogramMetricFamily, labels: Sequence[str] = ()) -> None:
        """Add this histogram to an OpenMetrics histogram family under `labels`."""
        buckets = [("+Inf" if math.isinf(b) else repr(float(b)), c) for b, c in zip(self.bounds, self._cumulative)]
        family.add_metric(list(labels), buckets, self.sum)


def family(name: str, documentation: str, histogram: Histogram | None = None, labels: Sequence[str] = (),
           unit: str = "") -> HistogramMetricFamily:
    """A histogram family, with `histogram` added when given (more with `Histogram.add_to`)."""
    fam = HistogramMetricFamily(name, documentation, labels=list(labels), unit=unit)
    if histogram is not None:
        histogram.add_to(fam)
    return fam

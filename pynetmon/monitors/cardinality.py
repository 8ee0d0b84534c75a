"""Bounded label sets for /metrics: at most `top` keys per monitor, and no stale series.

A monitor's maps are bounded by `max_entries`; what reaches Prometheus is bounded again here. `top_keys`
keeps the `top` largest keys (the rest is summed, so totals stay right); `SeriesTTL` stops exporting a
key `ttl` seconds after it was last seen changing or present - the stale-series problem ebpf_exporter's
users report, where an evicted flow's counter is exported forever.

>>> top_keys({"a": 5, "b": 1, "c": 3}, 2)
({'a': 5, 'c': 3}, 1, 1)
"""
from __future__ import annotations

import heapq
import time
from collections.abc import Callable, Hashable, Mapping
from typing import Any, TypeVar

from pydantic import Field

from .base import MonitorOptions

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")

DEFAULT_TOP = 100
DEFAULT_TTL = 300.0


class CardinalityOptions(MonitorOptions):
    """The options every keyed monitor takes for its /metrics export (the snapshot always has every key)."""

    top: int = Field(DEFAULT_TOP, ge=1, le=100_000, description="keys exported on /metrics, largest first")
    ttl: float = Field(DEFAULT_TTL, gt=0, le=86_400,
                       description="seconds after which a key that stopped changing leaves /metrics")


def top_keys(values: Mapping[K, V], top: int, weight: Callable[[V], float] | None = None
             ) -> tuple[dict[K, V], int, float]:
    """The `top` entries of `values` by `weight` (the value itself by default), how many were left out
    and the summed weight of those left out."""
    weigh = weight or (lambda v: v)  # type: ignore[return-value]
    if len(values) <= top:
        return dict(values), 0, 0
    kept = heapq.nlargest(top, values.items(), key=lambda kv: weigh(kv[1]))
    kept_keys = {k for k, _ in kept}
    rest = sum(weigh(v) for k, v in values.items() if k not in kept_keys)
    return dict(kept), len(values) - top, rest


class SeriesTTL:
    """Which keys still deserve a series. Call `observe` with the current values at each scrape: a key
    that disappears from the map keeps its last value (a counter must not vanish and come back lower
    inside one scrape interval) until it has been unchanged for `ttl` seconds; then it is dropped, and
    comes back only when it changes again."""

    def __init__(self, ttl: float, clock: Callable[[], float] = time.monotonic):
        self.ttl = ttl
        self._clock = clock
        self._last: dict[Any, tuple[Any, float]] = {}  # key → (value, when it last changed)
        self._expired: dict[Any, Any] = {}  # key → value it expired with (still in the map, unchanged)

    def observe(self, current: Mapping[K, V]) -> dict[K, V]:
        """The values to export: current keys that changed within `ttl` plus vanished keys whose last
        change is within `ttl`."""
        now = self._clock()
        for key, value in current.items():
            seen = self._last.get(key)
            if seen is None:
                if key in self._expired and self._expired[key] == value:
                    continue  # expired and still unchanged: stays out
                self._expired.pop(key, None)
                self._last[key] = (value, now)
            elif seen[0] != value:
                self._last[key] = (value, now)
        self._expired = {k: v for k, v in self._expired.items() if k in current}
        for key in [k for k, (_, when) in self._last.items() if now - when > self.ttl]:
            value, _ = self._last.pop(key)
            if key in current:
                self._expired[key] = value
        return {k: v for k, (v, _) in self._last.items()}

    def __len__(self) -> int:
        return len(self._last)

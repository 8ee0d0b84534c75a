"""The delay monitors' per-key statistics (latstats.h / latstats.py): log-linear slots and quantiles
(pure; the kernel side is exercised by test_rtt/test_dns/test_latency)."""
from __future__ import annotations

import math

from hypothesis import given
from hypothesis import strategies as st

from pynetmon.monitors import latstats

BOUNDS = latstats.slot_bounds()


@given(st.integers(min_value=0, max_value=1 << 40))
def test_every_value_lands_in_the_slot_whose_bounds_hold_it(us):
    slot = latstats.slot_of(us)
    lower = BOUNDS[slot - 1] + 1 if slot else 0
    assert lower <= us <= BOUNDS[slot]
    if us >= latstats.DIRECT and not math.isinf(BOUNDS[slot]):
        assert (BOUNDS[slot] - lower + 1) / lower <= 0.125   # a slot is at most 12.5% wide


@given(st.lists(st.integers(min_value=1, max_value=10_000_000), min_size=1, max_size=200))
def test_quantiles_stay_within_the_samples_and_near_them(values_us):
    slots = [0] * latstats.SLOTS
    for v in values_us:
        slots[latstats.slot_of(v)] += 1
    stats = latstats.LatStats(len(values_us), sum(values_us) * 1000, min(values_us) * 1000, max(values_us) * 1000,
                              0, tuple(slots))
    summary = stats.summary()
    assert summary["min_us"] <= summary["p50_us"] <= summary["p99_us"] <= summary["max_us"]
    true_p50 = sorted(values_us)[math.ceil(len(values_us) * 0.5) - 1]
    # the estimate lies in the slot of the true quantile or its neighbour: within 25% (+1 µs)
    assert abs(summary["p50_us"] - true_p50) <= 0.25 * true_p50 + 1
    assert summary["avg_us"] == round(sum(values_us) / len(values_us), 3)


def test_an_empty_key_has_no_quantiles():
    stats = latstats.LatStats(0, 0, 0, 0, 0, (0,) * latstats.SLOTS)
    assert stats.summary() == {"samples": 0, "min_us": None, "avg_us": None, "p50_us": None, "p99_us": None,
                               "max_us": None}

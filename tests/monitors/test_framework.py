"""The monitor shape itself: registry, option validation, histogram maths (pure; no kernel needed)."""
from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st
from prometheus_client.openmetrics.parser import text_string_to_metric_families
from pydantic import Field

from pynetmon.errors import ConfigError
from pynetmon.monitors import Monitor, MonitorOptions, available, get, register, registry
from pynetmon.monitors.histogram import Histogram, family, slot_bounds


class _Options(MonitorOptions):
    top: int = Field(100, ge=1, le=10_000)
    ports: list[int] = Field(default_factory=lambda: [53])


class _Probe(Monitor):
    kind = "probe_for_tests"
    summary = "a monitor that attaches nothing (tests of the shape)"
    Options = _Options
    needs_interface = False

    def _start(self) -> None:
        pass

    def snapshot(self) -> dict:
        return {"top": self.options.top}

    def families(self) -> list:
        return [family("probe_latency_us", "probe", Histogram.from_slots([1, 2, 3], sum=9))]


@pytest.fixture(autouse=True)
def _registered_probe():
    """The probe is a kind only while a test of this file runs: other tests (the Grafana dashboard's,
    the service's) walk every registered kind and must not meet it."""
    register(_Probe)
    yield
    registry._kinds.pop(_Probe.kind, None)


def test_registry_lists_and_finds_kinds():
    assert available()["probe_for_tests"] == _Probe.summary
    assert get("probe_for_tests") is _Probe
    with pytest.raises(ConfigError, match="no monitor kind 'nope'"):
        get("nope")


def test_registering_a_kind_twice_is_refused():
    class Other(_Probe):
        pass
    with pytest.raises(TypeError, match="registered twice"):
        register(Other)


@pytest.mark.parametrize("options, path, words", [
    ({"top": "10"}, "options.top", "valid integer"),
    ({"top": 0}, "options.top", "greater than or equal to 1"),
    ({"topp": 3}, "options.topp", "unknown field"),
    ({"ports": [53, "x"]}, "options.ports[1]", "valid integer"),
])
def test_bad_options_name_their_json_path(options, path, words):
    with pytest.raises(ConfigError) as err:
        _Probe(options=options)
    found = dict(err.value.problems)
    assert path in found, found
    assert words in found[path]


def test_an_interface_is_required_where_the_kind_needs_one():
    class NeedsIf(_Probe):
        needs_interface = True
    with pytest.raises(ConfigError, match="needs an interface"):
        NeedsIf()


def test_life_cycle_and_open_metrics():
    with _Probe(options={"top": 5}) as m:
        assert m.started and m.snapshot() == {"top": 5}
        text = m.open_metrics()
    assert not m.started
    assert text.endswith("# EOF\n")
    fams = {f.name: f for f in text_string_to_metric_families(text)}
    counts = {s.labels.get("le"): s.value for s in fams["probe_latency_us"].samples if s.name.endswith("_bucket")}
    assert counts == {"0.0": 1, "1.0": 3, "+Inf": 6}
    assert m.describe() == {"kind": "probe_for_tests", "interface": None, "netns": None,
                            "options": {"top": 5, "ports": [53]}}


def test_log2_and_linear_bounds():
    assert slot_bounds(4) == [0, 1, 3, math.inf]
    assert slot_bounds(3, linear=10) == [9, 19, math.inf]
    with pytest.raises(ValueError):
        slot_bounds(3, linear=0)


def _slot(v: int, width: int, nslots: int) -> int:
    """The kernel's slot function (common.bpf.h), written again here as the model."""
    slot = v // width if width else (v.bit_length())
    return min(slot, nslots - 1)


@given(st.lists(st.integers(0, 10**7), min_size=1, max_size=200), st.sampled_from([0, 1, 7, 1000]))
def test_histogram_counts_each_value_within_its_bounds(values, width):
    nslots = 64 if not width else 50
    slots = [0] * nslots
    for v in values:
        slots[_slot(v, width, nslots)] += 1
    h = Histogram.from_slots(slots, linear=width or None, sum=sum(values))
    assert h.count == len(values)
    d = h.to_dict()
    assert d["buckets"][-1] == {"le": "+Inf", "count": len(values)}
    for v in values:  # every value is counted in the first bucket whose bound holds it
        i = next(i for i, b in enumerate(h.bounds) if v <= b)
        assert h.counts[i] > 0
    cums = [b["count"] for b in d["buckets"]]
    assert cums == sorted(cums)


@given(st.lists(st.integers(0, 10**6), min_size=1, max_size=300))
def test_quantiles_lie_in_the_true_values_bucket(values):
    slots = [0] * 64
    for v in values:
        slots[_slot(v, 0, 64)] += 1
    h = Histogram.from_slots(slots, sum=sum(values))
    ordered = sorted(values)
    for q in (0.5, 0.9, 0.99, 1.0):
        est = h.quantile(q)
        true = ordered[max(0, math.ceil(q * len(ordered)) - 1)]
        lo = 0 if true == 0 else 2 ** (true.bit_length() - 1)
        hi = 0 if true == 0 else 2 ** true.bit_length() - 1
        assert lo <= est <= hi, (q, true, est)


def test_empty_histogram_has_no_quantile():
    assert Histogram.from_slots([0] * 64).quantile(0.5) is None

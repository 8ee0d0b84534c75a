"""pynetmon.plot: each plot returns Axes with one bar or point per bucket, sample or talker (Agg backend)."""
from __future__ import annotations

import matplotlib.pyplot as plt
import pandas as pd
import pytest

import pynetmon
from pynetmon import plot
from pynetmon.plot import histogram_buckets


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


MONITOR_HISTOGRAM = {"buckets": [{"le": 0, "count": 0}, {"le": 1, "count": 3}, {"le": 3, "count": 3},
                                 {"le": 7, "count": 9}, {"le": "+Inf", "count": 10}], "count": 10, "sum": 40}


def test_monitor_histogram_shape_bars_are_per_bucket_counts():
    assert histogram_buckets(MONITOR_HISTOGRAM) == [("0", 0), ("1", 3), ("2-3", 0), ("4-7", 6), ("8+", 1)]
    ax = plot.histogram(MONITOR_HISTOGRAM, unit="us")
    heights = [p.get_height() for p in ax.patches]
    assert heights == [3, 0, 6, 1]  # leading empty bucket trimmed, the inner empty one kept
    assert [t.get_text() for t in ax.get_xticklabels()] == ["1", "2-3", "4-7", "8+"]
    assert ax.get_xlabel() == "value (us)"


def test_dynmon_histogram_metric_uses_log2_slots():
    metric = {"name": "latency", "value": [0, 1, 4, 0, 2, 0, 0], "timestamp": 0}
    ax = plot.histogram(metric)
    assert [p.get_height() for p in ax.patches] == [1, 4, 0, 2]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["1", "2-3", "4-7", "8-15"]
    assert len(plot.histogram(metric, trim=False).patches) == 7


def test_linear_histogram_and_its_errors():
    ax = plot.histogram([5, 0, 2], scale="linear", width=100)
    assert [t.get_text() for t in ax.get_xticklabels()] == ["0-99", "100-199", "200-299"]
    with pytest.raises(ValueError, match="linear buckets need their width"):
        plot.histogram([1, 2], scale="linear")
    with pytest.raises(ValueError, match=r"buckets\[0\]: expected"):
        plot.histogram({"buckets": [{"upper": 1}]})
    with pytest.raises(ValueError, match="scale must be"):
        plot.histogram([1], scale="log10")


def test_histogram_object_from_the_monitors():
    histogram = pytest.importorskip("pynetmon.monitors.histogram")
    h = histogram.Histogram.from_slots([0, 3, 1], sum=5)
    assert histogram_buckets(h) == [("0", 0), ("1", 3), ("2+", 1)]
    assert histogram_buckets(h.to_dict()) == histogram_buckets(h)


def test_rates_plot_has_one_point_per_interval():
    values = iter([0, 10, 30, 60, 100])
    rec = pynetmon.Recorder(lambda: {"rx_total": next(values), "tx_total": 0}, interval=10, start=False)
    for _ in range(5):
        rec.sample()
    ax = plot.rates(rec)
    assert len(ax.lines) == 2
    assert all(len(line.get_xdata()) == 4 for line in ax.lines)
    ax = plot.rates(rec, ["rx_total"])
    assert len(ax.lines) == 1 and ax.get_xlabel() == "seconds"


def test_top_bars_are_the_n_largest_largest_first():
    frame = pd.DataFrame({"saddr": [f"10.0.0.{i}" for i in range(20)], "bytes": [i * 100 for i in range(20)]})
    ax = plot.top(frame, n=5, by="bytes", label="saddr")
    assert [p.get_width() for p in ax.patches] == [1900, 1800, 1700, 1600, 1500]
    assert [t.get_text() for t in ax.get_yticklabels()] == [f"10.0.0.{i}" for i in (19, 18, 17, 16, 15)]
    assert ax.yaxis_inverted()
    assert len(plot.top({"a": 1, "b": 3}, n=10).patches) == 2
    with pytest.raises(ValueError, match="needs by= one of its columns"):
        plot.top(frame, by="packets")


def test_plots_draw_on_the_given_axes():
    _, ax = plt.subplots()
    assert plot.histogram([1, 2, 3], ax=ax) is ax

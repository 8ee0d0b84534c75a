"""Plots of what pynetmon measures (matplotlib, the `pynetmon[data]` extra). Each function draws on `ax`
(or on a new pyplot figure) and returns the matplotlib `Axes`; nothing is shown or saved unless the
caller asks (in Jupyter the inline backend shows the figure at the end of the cell).

>>> pynetmon.plot.histogram(monitor.snapshot()["rtt_us"])     # a monitor's histogram dict
>>> pynetmon.plot.histogram(dyn.metrics("ingress", "latency"))  # a Dynmon histogram metric (log2 slots)
>>> pynetmon.plot.rates(recorder)                             # rates of the recorded counters
>>> pynetmon.plot.top(flows.to_pandas(), by="bytes", label="saddr", n=10)
"""
from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from .frames.extra import require

__all__ = ["histogram", "histogram_buckets", "rates", "top"]


def _axes(ax: Any) -> Any:
    if ax is not None:
        return ax
    plt = require("matplotlib.pyplot", "pynetmon.plot")
    _, ax = plt.subplots()
    return ax


def _bound_text(x: float) -> str:
    if math.isinf(x):
        return "inf"
    for unit, size in (("G", 1 << 30), ("M", 1 << 20), ("K", 1 << 10)):
        if x >= size and x % size == 0:
            return f"{int(x) // size}{unit}"
    return f"{x:g}"


def histogram_buckets(data: Any, scale: str = "log2", width: float | None = None) -> list[tuple[str, int]]:
    """(label, count) per bucket of any histogram pynetmon produces:

    - a monitor's dict `{"buckets": [{"le": upper, "count": cumulative}, ...], "count", "sum"}`;
    - a `pynetmon.monitors.histogram.Histogram` (`bounds`, per-slot `counts`);
    - a Dynmon metric `{"name", "value": [slot counts]}` or a plain list of slot counts, with BCC's log2
      slots (slot 0 holds 0, slot i holds 2^(i-1)..2^i-1) or, with `scale="linear"`, slots `width` wide.
    """
    if scale not in ("log2", "linear"):
        raise ValueError(f"scale must be 'log2' or 'linear', not {scale!r}")
    if isinstance(data, Mapping) and "buckets" in data:
        out, previous, lower = [], 0, 0.0
        for i, bucket in enumerate(data["buckets"]):
            if not isinstance(bucket, Mapping) or "le" not in bucket or "count" not in bucket:
                raise ValueError(f"buckets[{i}]: expected {{'le': upper bound, 'count': cumulative count}}, "
                                 f"got {bucket!r}")
            upper = math.inf if bucket["le"] in ("+Inf", "inf", math.inf) else float(bucket["le"])
            count = int(bucket["count"])
            out.append((_range_text(lower, upper), count - previous))
            previous, lower = count, upper + 1 if math.isfinite(upper) and upper == int(upper) else upper
        return out
    if hasattr(data, "bounds") and hasattr(data, "counts"):
        bounds, counts, out, lower = list(data.bounds), list(data.counts), [], 0.0
        for upper, count in zip(bounds, counts):
            out.append((_range_text(lower, upper), int(count)))
            lower = upper + 1
        return out
    if isinstance(data, Mapping) and "value" in data:
        data = data["value"]
    if not isinstance(data, Sequence) or isinstance(data, (str, bytes)) or \
            not all(isinstance(c, (int, float)) for c in data):
        raise ValueError("a histogram is a monitor's {'buckets': [...]} dict, a Dynmon metric "
                         "{'name', 'value': [counts]} or a list of bucket counts")
    if scale == "linear":
        if not width or width <= 0:
            raise ValueError("linear buckets need their width: histogram(counts, scale='linear', width=W)")
        return [(_range_text(i * width, (i + 1) * width - 1), int(c)) for i, c in enumerate(data)]
    return [(_range_text(0 if i == 0 else 2 ** (i - 1), 0 if i == 0 else 2 ** i - 1), int(c))
            for i, c in enumerate(data)]


def _range_text(lower: float, upper: float) -> str:
    if math.isinf(upper):
        return f"{_bound_text(lower)}+"
    if lower >= upper:
        return _bound_text(upper)
    return f"{_bound_text(lower)}-{_bound_text(upper)}"


def histogram(data: Any, ax: Any = None, *, scale: str = "log2", width: float | None = None, trim: bool = True,
              title: str | None = None, xlabel: str = "value", unit: str = "") -> Any:
    """Bars of a histogram (see `histogram_buckets` for the shapes taken), one per bucket; with `trim`,
    the empty buckets before the first and after the last non-empty one are left out."""
    buckets = histogram_buckets(data, scale, width)
    if trim:
        used = [i for i, (_, c) in enumerate(buckets) if c]
        if used:
            buckets = buckets[used[0]:used[-1] + 1]
    ax = _axes(ax)
    labels = [label for label, _ in buckets]
    ax.bar(range(len(buckets)), [c for _, c in buckets], color="tab:blue")
    ax.set_xticks(range(len(buckets)), labels, rotation=45 if len(buckets) > 6 else 0, ha="right" if
                  len(buckets) > 6 else "center")
    ax.set_xlabel(f"{xlabel} ({unit})" if unit else xlabel)
    ax.set_ylabel("count")
    if title:
        ax.set_title(title)
    return ax


def rates(source: Any, columns: Sequence[str] | None = None, ax: Any = None, *, title: str | None = None) -> Any:
    """Lines of per-second rates over time: a `Recorder` (its `rates(columns)`) or a DataFrame of rates
    (one line per column, its index on the x axis)."""
    frame = source.rates(list(columns) if columns is not None else None) if hasattr(source, "rates") else source
    if columns is not None and not hasattr(source, "rates"):
        frame = frame[list(columns)]
    ax = _axes(ax)
    x = frame.index
    if hasattr(source, "rates"):  # seconds since the recording began read better than wall times
        elapsed = source.frame()["elapsed"].iloc[1:]
        x = elapsed.to_numpy()
        ax.set_xlabel("seconds")
    for name in frame.columns:
        ax.plot(x, frame[name].to_numpy(), marker=".", label=str(name))
    ax.set_ylabel("per second")
    if len(frame.columns) > 1:
        ax.legend(fontsize="small")
    if title:
        ax.set_title(title)
    return ax


def top(data: Any, n: int = 10, ax: Any = None, *, by: str | None = None, label: str | Sequence[str] | None = None,
        title: str | None = None) -> Any:
    """Horizontal bars of the `n` largest values, largest on top (top talkers, busiest ports).

    `data`: a DataFrame (sorted by column `by`, bars named by column(s) `label` or the index), a Series,
    or a dict {name: value}."""
    pd = require("pandas", "pynetmon.plot.top")
    if n < 1:
        raise ValueError(f"n must be at least 1, not {n}")
    if isinstance(data, Mapping):
        series = pd.Series(dict(data), dtype=float)
    elif isinstance(data, pd.DataFrame):
        if by is None or by not in data.columns:
            raise ValueError(f"top() of a DataFrame needs by= one of its columns {list(data.columns)}, not {by!r}")
        frame = data.nlargest(n, by)
        if label is None:
            names = [str(i) for i in frame.index]
        else:
            cols = [label] if isinstance(label, str) else list(label)
            names = [" ".join(str(v) for v in row) for row in frame[cols].itertuples(index=False)]
        series = pd.Series(frame[by].to_numpy(), index=names)
    else:
        series = pd.Series(data)
    series = series.nlargest(n)
    ax = _axes(ax)
    ax.barh(range(len(series)), series.to_numpy(), color="tab:orange")
    ax.set_yticks(range(len(series)), [str(i) for i in series.index])
    ax.invert_yaxis()  # largest on top
    ax.set_xlabel(by or "value")
    if title:
        ax.set_title(title)
    return ax

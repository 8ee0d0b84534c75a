"""A live view of what the daemon's monitors see, refreshed every second: packet and bit rates of every
counter, the top talkers of every keyed metric (by rate), and latency percentiles of every histogram.

It reads the daemon's /metrics (the same numbers Prometheus gets), so it works with any dynmon
dataplane: a counter is shown as a rate, a metric with labels (a flow table) as a top-N list, a histogram
as p50/p90/p99."""
from __future__ import annotations

import argparse
import math
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from ._client import Client, add_connection_arguments

if TYPE_CHECKING:
    from rich.console import Group, JustifyMethod

# The columns of the counters table ("metric") and of the top-talkers tables ("key"), with their alignment.
_COLUMNS: dict[str, tuple[tuple[str, JustifyMethod], ...]] = {
    kind: (("monitor", "left"), (kind, "left"), ("total", "right"), ("rate", "right")) for kind in ("metric", "key")}

NAME = "top"
HELP = "live terminal view of the daemon's monitors: rates, top talkers, latency percentiles"

SeriesKey = tuple[str, tuple[tuple[str, str], ...]]  # (sample name, sorted labels)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-i", "--interval", type=float, default=1.0, help="seconds between refreshes (default 1)")
    parser.add_argument("-n", "--top", type=int, default=10, help="rows per top-talkers table (default 10)")
    parser.add_argument("--once", action="store_true",
                        help="take two readings one interval apart, print one frame and exit")
    add_connection_arguments(parser)


@dataclass
class Reading:
    """One scrape: families by name with their type, and every sample's value."""

    at: float
    types: dict[str, str] = field(default_factory=dict)
    samples: dict[str, dict[SeriesKey, float]] = field(default_factory=dict)


def parse(text: str, at: float) -> Reading:
    """A Reading from Prometheus text exposition."""
    from prometheus_client.parser import text_string_to_metric_families
    reading = Reading(at)
    for family in text_string_to_metric_families(text):
        reading.types[family.name] = family.type
        series = reading.samples.setdefault(family.name, {})
        for s in family.samples:
            series[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return reading


@dataclass
class Rate:
    family: str
    labels: dict[str, str]
    value: float
    per_second: float


def rates(prev: Reading | None, cur: Reading, family: str) -> list[Rate]:
    """Every counter series of `family` with its increase per second since `prev` (0 on the first reading
    or after a reset)."""
    out = []
    dt = (cur.at - prev.at) if prev else 0.0
    before = prev.samples.get(family, {}) if prev else {}
    for (name, labels), value in cur.samples.get(family, {}).items():
        if name.endswith(("_created", "_bucket", "_count", "_sum")):
            continue
        old = before.get((name, labels))
        per_second = (value - old) / dt if old is not None and dt > 0 and value >= old else 0.0
        out.append(Rate(family, dict(labels), value, per_second))
    return out


def percentile(buckets: list[tuple[float, float]], q: float) -> float:
    """The q-quantile (0..1) of a histogram given as cumulative (upper bound, count) pairs, interpolated
    linearly inside the bucket as Prometheus's histogram_quantile does; NaN when empty."""
    buckets = sorted(buckets)
    if not buckets or buckets[-1][1] <= 0:
        return math.nan
    rank = q * buckets[-1][1]
    lower_bound, lower_count = 0.0, 0.0
    for bound, count in buckets:
        if count >= rank:
            if math.isinf(bound):
                return lower_bound
            if count == lower_count:
                return bound
            return lower_bound + (bound - lower_bound) * (rank - lower_count) / (count - lower_count)
        lower_bound, lower_count = bound, count
    return buckets[-1][0]


def histograms(cur: Reading, prev: Reading | None = None) -> list[tuple[str, dict[str, str], dict[str, float]]]:
    """(family, labels, {"p50","p90","p99","count"}) for every histogram series: over the last interval
    when `prev` is given and something was observed in it, else over everything observed."""
    out = []
    for family, kind in cur.types.items():
        if kind != "histogram":
            continue
        before = prev.samples.get(family, {}) if prev else {}
        total: dict[tuple, list[tuple[float, float]]] = {}
        recent: dict[tuple, list[tuple[float, float]]] = {}
        for (name, labels), value in cur.samples.get(family, {}).items():
            if not name.endswith("_bucket"):
                continue
            le = float(dict(labels)["le"])
            rest = tuple((k, v) for k, v in labels if k != "le")
            old = before.get((name, labels), 0.0)
            total.setdefault(rest, []).append((le, value))
            recent.setdefault(rest, []).append((le, value - old if value >= old else value))
        for rest, buckets in total.items():
            if prev is not None and max(c for _, c in recent[rest]) > 0:
                buckets = recent[rest]
            stats = {f"p{round(q * 100)}": percentile(buckets, q) for q in (0.5, 0.9, 0.99)}
            stats["count"] = max(c for _, c in buckets)
            out.append((family, dict(rest), stats))
    return out


def human(value: float, unit: str = "") -> str:
    """1234567 → '1.23 M' (SI prefixes), for rates people read at a glance."""
    if math.isnan(value):
        return "-"
    for prefix, scale in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(value) >= scale:
            return f"{value / scale:.2f} {prefix}{unit}"
    return f"{value:.0f} {unit}".rstrip() if value == int(value) else f"{value:.2f} {unit}".rstrip()


def _identity(labels: dict[str, str]) -> str:
    return ", ".join(f"{k}={v}" for k, v in labels.items() if k not in ("monitor",)) or "(total)"


def render(prev: Reading | None, cur: Reading, top_n: int, source: str) -> Group:
    """The frame: one rich Group with a table of totals, top talkers per keyed metric, and latencies."""
    from rich.console import Group, RenderableType
    from rich.table import Table
    from rich.text import Text

    totals = Table(title="Counters", expand=True, title_justify="left")
    for col, justify in _COLUMNS["metric"]:
        totals.add_column(col, justify=justify)
    talkers = []
    for family, kind in sorted(cur.types.items()):
        if kind not in ("counter", "gauge", "untyped", "unknown"):
            continue
        series = rates(prev, cur, family)
        keyed = [r for r in series if set(r.labels) - {"monitor", "direction"}]
        unit = "bit/s" if "byte" in family else ("pkt/s" if "packet" in family or "pkt" in family else "/s")
        scale = 8 if unit == "bit/s" else 1
        for r in series:
            if r in keyed:
                continue
            totals.add_row(r.labels.get("monitor", ""), family, human(r.value),
                           human(r.per_second * scale, unit) if kind != "gauge" else "")
        if keyed:
            table = Table(title=f"Top talkers: {family}", expand=True, title_justify="left")
            for col, justify in _COLUMNS["key"]:
                table.add_column(col, justify=justify)
            keyed.sort(key=lambda r: (r.per_second, r.value), reverse=True)
            for r in keyed[:top_n]:
                table.add_row(r.labels.get("monitor", ""), _identity(r.labels), human(r.value),
                              human(r.per_second * scale, unit) if kind != "gauge" else "")
            if len(keyed) > top_n:
                table.caption = f"{len(keyed) - top_n} more"
            talkers.append(table)
    parts: list[RenderableType] = [Text(f"pynetmon top — {source} — {time.strftime('%H:%M:%S', time.localtime(cur.at))}",
                  style="bold"), totals, *talkers]
    hist = histograms(cur, prev)
    if hist:
        lat = Table(title="Latency / histograms", expand=True, title_justify="left")
        for col in ("monitor", "metric", "p50", "p90", "p99", "samples"):
            lat.add_column(col, justify="left" if col in ("monitor", "metric") else "right")
        for family, labels, stats in hist:
            lat.add_row(labels.get("monitor", ""), family + (f" {_identity(labels)}" if len(labels) > 1 else ""),
                        *(human(stats[k]) for k in ("p50", "p90", "p99")), human(stats["count"]))
        parts.append(lat)
    if not cur.types:
        parts.append(Text("no metrics yet: inject a monitor with `pynetmon inject`", style="yellow"))
    return Group(*parts)


def run(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.live import Live

    client = Client.from_args(args)
    accept = "text/plain; version=0.0.4"

    def read() -> Reading:
        return parse(client.text("/metrics", accept=accept), time.time())

    prev = read()
    if args.once:
        time.sleep(args.interval)
        Console().print(render(prev, read(), args.top, client.base))
        return 0
    with Live(render(None, prev, args.top, client.base), refresh_per_second=4, screen=False) as live:
        while True:
            time.sleep(args.interval)
            cur = read()
            live.update(render(prev, cur, args.top, client.base))
            prev = cur

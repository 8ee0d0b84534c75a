"""Metrics in the OpenMetrics text exposition, written by prometheus_client's own exposition code.

How a map becomes samples (every sample also carries the metric's configured static labels):

* a number per entry: one sample per entry. Hash keys become labels: an integer key is `key="..."`,
  a struct key gives one label per field (nested fields joined with `_`); arrays with more than one
  element get an `index` label (Polycube instead appended `_<i>` to the name).
* struct values: one metric per numeric field, named `<metric>_<field>` (`<base>_<field>_total` for
  counters); numeric arrays inside values get an `index` label.
* `histogram`: the bucket counts are the elements of an array map, or a numeric array value (one
  histogram per hash key), or the one numeric array field of a struct value whose `sum` field, if
  any, gives `_sum` and `_count`. Bucket bounds: the metric's `buckets`, else BCC's log2 slots
  (slot i holds values up to 2^i - 1); the last bucket is +Inf.
* `summary`: struct values with `count` and `sum` fields.
"""
from __future__ import annotations

from typing import Any, Iterable

from prometheus_client.core import (CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric,
                                    SummaryMetricFamily, UnknownMetricFamily)
from prometheus_client.exposition import generate_latest as generate_prometheus_text
from prometheus_client.openmetrics.exposition import generate_latest as generate_openmetrics
from prometheus_client.utils import floatToGoString

from ..btf_codec import ArrayCodec, Codec, FloatCodec, IntCodec, StructCodec
from ..maps import Map
from .config import MetricConfig, histogram_bounds
from .entries import MapEntries, kind_of
from .metrics import bytes_text, prepared

Labels = list[tuple[str, str]]


# ---- shape checks (at injection, against the loaded map) -------------------------------------------

def _numeric(codec: Codec) -> bool:
    return isinstance(codec, (IntCodec, FloatCodec))


def _has_numeric_leaf(codec: Codec) -> bool:
    if _numeric(codec):
        return True
    if isinstance(codec, ArrayCodec):
        return _has_numeric_leaf(codec.elem)
    if isinstance(codec, StructCodec):
        return any(_has_numeric_leaf(c) for _, _, c in codec.fields)
    return False


def _bucket_field(codec: StructCodec) -> str | None:
    arrays = [n for n, _, c in codec.fields if isinstance(c, ArrayCodec) and _numeric(c.elem)]
    return arrays[0] if len(arrays) == 1 else None


def shape_problem(metric: MetricConfig, m: Map) -> tuple[str, str] | None:
    """(field, reason) when map `m` cannot be exported the way `metric` says; field is relative to the
    metric config ("map-name" or "open-metrics-metadata.type"). None when it can."""
    try:
        kind = kind_of(m.type)
    except ValueError as exc:
        return "map-name", f"map {m.name!r}: {exc}"
    meta = metric.open_metrics_metadata
    if meta is None:
        return None
    value = m.value_codec
    where = "open-metrics-metadata.type"
    if meta.type == "histogram":
        ok = (_numeric(value) and kind in ("array", "queue")) or \
             (isinstance(value, ArrayCodec) and _numeric(value.elem)) or \
             (isinstance(value, StructCodec) and _bucket_field(value) is not None)
        if not ok:
            return where, (f"a histogram needs bucket counts: an array map of numbers, numeric array values, or "
                           f"struct values with one numeric array field; map {m.name!r} is a {m.type} map with "
                           f"values of type {value.describe()}")
    elif meta.type == "summary":
        names = {n for n, _, c in value.fields if _numeric(c)} if isinstance(value, StructCodec) else set()
        if not {"count", "sum"} <= names:
            return where, (f"a summary needs struct values with numeric 'count' and 'sum' fields; map {m.name!r} "
                           f"has values of type {value.describe()}")
    elif not _has_numeric_leaf(value):
        return where, f"map {m.name!r} has no numeric values to export (values are {value.describe()})"
    return None


# ---- samples ------------------------------------------------------------------------------------------

def _label_value(v: Any) -> str:
    if isinstance(v, (bytes, bytearray)):
        return bytes_text(bytes(v))
    return str(v)


def key_labels(key: Any, prefix: str = "") -> Labels:
    """A hash key as labels: `key` for a scalar, one label per (nested) struct field otherwise."""
    if isinstance(key, dict):
        out: Labels = []
        for name, v in key.items():
            out.extend(key_labels(v, f"{prefix}{name}_" if isinstance(v, (dict, list)) else f"{prefix}{name}"))
        return out
    if isinstance(key, list):
        return [(f"{prefix}{i}", _label_value(v)) for i, v in enumerate(key)]
    return [(prefix or "key", _label_value(key))]


def flatten_value(value: Any, suffix: str = "", labels: Labels | None = None) -> Iterable[tuple[str, Labels, float]]:
    """(name suffix, extra labels, number) for every numeric leaf of a value."""
    labels = labels or []
    if isinstance(value, bool):
        yield suffix, labels, int(value)
    elif isinstance(value, (int, float)):
        yield suffix, labels, value
    elif isinstance(value, dict):
        for name, v in value.items():
            yield from flatten_value(v, f"{suffix}_{name}", labels)
    elif isinstance(value, list):
        label = "index" if not any(n == "index" for n, _ in labels) else f"index{len(labels)}"
        for i, v in enumerate(value):
            yield from flatten_value(v, suffix, labels + [(label, str(i))])


def _series(metric: MetricConfig, entries: MapEntries) -> list[tuple[Labels, Any]]:
    """(labels, value) per entry: hash keys and array indexes as labels."""
    keys, values = prepared(entries)
    if entries.kind == "hash":
        return [(_sanitize(key_labels(k)), v) for k, v in zip(keys, values)]
    if len(values) == 1:
        return [([], values[0])]
    return [([("index", str(i))], v) for i, v in enumerate(values)]


def _sanitize(labels: Labels) -> Labels:
    # Prometheus reserves label names that start with "__"; C fields such as "__pad" would be rejected.
    return [(n.lstrip("_") or "field", v) if n.startswith("__") else (n, v) for n, v in labels]


def _family(kind: str, name: str, help_: str, label_names: list[str]) -> Metric:
    cls = {"counter": CounterMetricFamily, "gauge": GaugeMetricFamily, "untyped": UnknownMetricFamily}[kind]
    return cls(name, help_, labels=label_names)


def families(metric: MetricConfig, entries: MapEntries) -> list[Metric]:
    """The metric families of one metric (several when values are structs)."""
    meta = metric.open_metrics_metadata
    if meta is None:
        return []
    static = [(label.name, label.value) for label in meta.labels]
    series = [(_merge(static, labels), value) for labels, value in _series(metric, entries)]
    if meta.type == "histogram":
        return [_histogram(metric, entries, series)]
    if meta.type == "summary":
        fam = None
        for labels, value in series:
            if fam is None:
                fam = SummaryMetricFamily(metric.name, meta.help, labels=[n for n, _ in labels])
            fam.add_metric([v for _, v in labels], count_value=value["count"], sum_value=value["sum"])
        return [fam or SummaryMetricFamily(metric.name, meta.help, labels=[])]
    base = metric.name.removesuffix("_total") if meta.type == "counter" else metric.name
    by_name: dict[str, Metric] = {}
    for labels, value in series:
        for suffix, extra, number in flatten_value(value):
            all_labels = _merge(labels, extra)
            fam = by_name.get(suffix)
            if fam is None:
                fam = by_name[suffix] = _family(meta.type, base + suffix, meta.help, [n for n, _ in all_labels])
            fam.add_metric([v for _, v in all_labels], number)
    if not by_name:  # an empty map still announces its metric
        by_name[""] = _family(meta.type, base, meta.help, [n for n, _ in static])
    return list(by_name.values())


def _merge(first: Labels, second: Labels) -> Labels:
    """Labels of `first` then `second`; a name already used is renamed (key labels never hide static ones)."""
    names = {n for n, _ in first}
    out = list(first)
    for n, v in second:
        while n in names:
            n = f"key_{n}"
        names.add(n)
        out.append((n, v))
    return out


def _histogram(metric: MetricConfig, entries: MapEntries, series: list[tuple[Labels, Any]]) -> Metric:
    meta = metric.open_metrics_metadata
    static = [(label.name, label.value) for label in meta.labels]
    if entries.kind in ("array", "queue") and series and isinstance(series[0][1], (int, float)):
        # An array of numbers is one histogram: element i is bucket i.
        groups = [(static, [v for _, v in series], None)]
    else:
        groups = []
        for labels, value in series:
            if isinstance(value, dict):
                field = next(n for n, v in value.items() if isinstance(v, list))
                groups.append((labels, value[field], value.get("sum")))
            else:
                groups.append((labels, value, None))
    fam = None
    for labels, counts, total in groups:
        if fam is None:
            fam = HistogramMetricFamily(metric.name, meta.help, labels=[n for n, _ in labels])
        bounds = histogram_bounds(meta, len(counts))
        cumulative, running = [], 0
        for bound, count in zip(bounds, counts):
            running += count
            cumulative.append((floatToGoString(bound), running))
        fam.add_metric([v for _, v in labels], cumulative, sum_value=total)
    return fam or HistogramMetricFamily(metric.name, meta.help, labels=[n for n, _ in static])


class _Families:
    """The minimal registry interface generate_latest() needs."""

    def __init__(self, fams: list[Metric]):
        self._fams = fams

    def collect(self) -> list[Metric]:
        return self._fams


FORMATS = {"openmetrics": generate_openmetrics, "prometheus": generate_prometheus_text}
CONTENT_TYPES = {"openmetrics": "application/openmetrics-text; version=1.0.0; charset=utf-8",
                 "prometheus": "text/plain; version=0.0.4; charset=utf-8"}


def exposition(fams: list[Metric], fmt: str = "openmetrics") -> str:
    """`fams` as text: "openmetrics" (OpenMetrics 1.0: `# HELP`, `# TYPE`, counters as `<name>_total`, a
    final `# EOF`) or "prometheus" (text format 0.0.4, which `promtool check metrics` lints; it names a
    counter's family after its `_total` sample, which OpenMetrics forbids, hence two formats)."""
    try:
        generate = FORMATS[fmt]
    except KeyError:
        raise ValueError(f"format must be one of {', '.join(FORMATS)}, not {fmt!r}") from None
    return generate(_Families(fams)).decode("utf-8")

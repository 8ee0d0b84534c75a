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

from collections.abc import Callable, Iterable
from operator import itemgetter
from typing import Any

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
    SummaryMetricFamily,
    UnknownMetricFamily,
)
from prometheus_client.exposition import generate_latest as generate_prometheus_text
from prometheus_client.openmetrics.exposition import generate_latest as generate_openmetrics
from prometheus_client.utils import floatToGoString

from ..btf_codec import ArrayCodec, Codec, FloatCodec, IntCodec, StructCodec
from ..maps import Map
from .config import MetricConfig, histogram_bounds
from .entries import MapEntries, kind_of
from .metrics import bytes_text, prepared

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

Path_ = tuple  # field names and indexes leading into a decoded key or value


def _leaves(obj: Any, path: Path_ = ()) -> Iterable[tuple[Path_, Any]]:
    """(path, scalar) for every scalar inside a decoded key or value, in field order."""
    if isinstance(obj, dict):
        for name, v in obj.items():
            yield from _leaves(v, path + (name,))
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            yield from _leaves(v, path + (i,))
    else:
        yield path, obj


def _getter(path: Path_) -> Callable[[Any], Any]:
    if not path:
        return lambda obj: obj
    if len(path) == 1:
        return itemgetter(path[0])

    def get(obj):
        for step in path:
            obj = obj[step]
        return obj
    return get


def _text(v: Any) -> str:
    return bytes_text(bytes(v)) if isinstance(v, (bytes, bytearray)) else str(v)


def _label_name(path: Path_) -> str:
    name = "_".join(str(p) for p in path) or "key"
    # Prometheus reserves label names that start with "__"; C fields such as "__pad" would be rejected.
    return (name.lstrip("_") or "field") if name.startswith("__") else name


def _merge_names(first: list[str], second: list[str]) -> list[str]:
    """`first` + `second`, a name of `second` already used renamed (key labels never hide static ones)."""
    used = set(first)
    out = list(first)
    for n in second:
        while n in used:
            n = f"key_{n}"
        used.add(n)
        out.append(n)
    return out


# Every entry of a map has the same C type, so the shape of the first key and value is planned once
# (label names, field getters) and each entry then costs one getter call per label and per sample.

def _series(entries: MapEntries) -> tuple[list[str], list[tuple[list[str], Any]]]:
    """(label names, [(label values, value), ...]): hash keys and array indexes as labels."""
    keys, values = prepared(entries)
    if entries.kind == "hash":
        if not keys:
            return [], []
        plan = [(_label_name(path), _getter(path)) for path, _ in _leaves(keys[0])]
        getters = [get for _, get in plan]
        return [n for n, _ in plan], [([_text(get(k)) for get in getters], v) for k, v in zip(keys, values)]
    if len(values) == 1:
        return [], [([], values[0])]
    return ["index"], [([str(i)], v) for i, v in enumerate(values)]


def _value_plan(value: Any) -> list[tuple[str, list[tuple[str, str]], Callable[[Any], Any]]]:
    """(name suffix, constant extra labels, getter) per numeric leaf of a value: struct fields become
    name suffixes, array positions `index` labels."""
    plan = []
    for path, leaf in _leaves(value):
        if isinstance(leaf, (int, float)):
            suffix = "".join(f"_{p}" for p in path if isinstance(p, str))
            positions = [p for p in path if isinstance(p, int)]
            extra = [("index" if i == 0 else f"index{i}", str(p)) for i, p in enumerate(positions)]
            plan.append((suffix, extra, _getter(path)))
    return plan


def _family(kind: str, name: str, help_: str, label_names: list[str]) -> Metric:
    cls = {"counter": CounterMetricFamily, "gauge": GaugeMetricFamily, "untyped": UnknownMetricFamily}[kind]
    return cls(name, help_, labels=label_names)


def families(metric: MetricConfig, entries: MapEntries) -> list[Metric]:
    """The metric families of one metric (several when values are structs)."""
    meta = metric.open_metrics_metadata
    if meta is None:
        return []
    static_names = [label.name for label in meta.labels]
    static_values = [label.value for label in meta.labels]
    key_names, rows = _series(entries)
    names = _merge_names(static_names, key_names)
    if meta.type == "histogram":
        return [_histogram(metric, entries, names, [(static_values + lv, v) for lv, v in rows])]
    if meta.type == "summary":
        fam = SummaryMetricFamily(metric.name, meta.help, labels=names)
        for label_values, value in rows:
            fam.add_metric(static_values + label_values, count_value=value["count"], sum_value=value["sum"])
        return [fam]
    base = metric.name.removesuffix("_total") if meta.type == "counter" else metric.name
    if not rows:  # an empty map still announces its metric
        return [_family(meta.type, base, meta.help, names)]
    by_suffix: dict[str, Metric] = {}
    samples = []
    for suffix, extra, get in _value_plan(rows[0][1]):
        all_names = _merge_names(names, [n for n, _ in extra])
        fam = by_suffix.get(suffix)
        if fam is None:
            fam = by_suffix[suffix] = _family(meta.type, base + suffix, meta.help, all_names)
        samples.append((fam.add_metric, [v for _, v in extra], get))
    for label_values, value in rows:
        label_values = static_values + label_values
        for add, extra_values, get in samples:
            add(label_values + extra_values if extra_values else label_values, get(value))
    return list(by_suffix.values())


def _histogram(metric: MetricConfig, entries: MapEntries, names: list[str], rows: list[tuple[list[str], Any]]) \
        -> Metric:
    meta = metric.open_metrics_metadata
    static = [label.value for label in meta.labels]
    if entries.kind in ("array", "queue") and rows and isinstance(rows[0][1], (int, float)):
        # An array of numbers is one histogram: element i is bucket i.
        names = names[:len(static)]
        groups = [(static, [v for _, v in rows], None)]
    else:
        groups = []
        for label_values, value in rows:
            if isinstance(value, dict):
                field = next(n for n, v in value.items() if isinstance(v, list))
                groups.append((label_values, value[field], value.get("sum")))
            else:
                groups.append((label_values, value, None))
    fam = HistogramMetricFamily(metric.name, meta.help, labels=names)
    for label_values, counts, total in groups:
        bounds = histogram_bounds(meta, len(counts))
        cumulative, running = [], 0
        for bound, count in zip(bounds, counts):
            running += count
            cumulative.append((floatToGoString(bound), running))
        fam.add_metric(label_values, cumulative, sum_value=total)
    return fam


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

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

from collections.abc import Callable, Iterable, Mapping
from operator import itemgetter
from typing import Any

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
    Sample,
    SummaryMetricFamily,
    UnknownMetricFamily,
)

from .. import exposition as _exposition
from ..btf_codec import ArrayCodec, Codec, FloatCodec, IntCodec, StructCodec, gc_paused
from ..maps import Map
from .config import MetricConfig, OpenMetricsMetadata, histogram_bounds
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
#
# Every entry of a map has the same C type, so the shape of the first key and value is planned once
# (label names, field getters, sample names) and the samples are then appended to each family's
# `samples` list directly: one label dict and one Sample per sample, no add_metric() call, no copies.

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


def _rename(name: str, used: set[str], prefix: str) -> str:
    while name in used:
        name = prefix + name
    used.add(name)
    return name


def constant_labels(meta: OpenMetricsMetadata, labels: Mapping[str, str] | None) -> dict[str, str]:
    """The labels every sample of a metric carries: `labels` (from the caller, e.g. the daemon's
    `monitor`) first, then the metric's configured static labels; a configured label whose name the
    caller already uses is exported as `exported_<name>` (Prometheus' convention for clashing labels)."""
    out = dict(labels or {})
    used = set(out)
    for label in meta.labels:
        out[_rename(label.name, used, "exported_")] = label.value
    return out


def _key_labels(entries: MapEntries, keys: list, used: set[str]) -> tuple[list[str], list[list[str]]]:
    """(label names, one column of label values per name): hash keys and array indexes as labels.
    A key label named like a constant label becomes `key_<name>` (key labels never hide those).
    `keys` are prepared (no bytes left), so str() is each label value's text."""
    if entries.kind == "hash":
        if not keys:
            return [], []
        leaves = [path for path, _ in _leaves(keys[0])]
        names = [_rename(_label_name(path), used, "key_") for path in leaves]
        if leaves == [()]:  # a scalar key
            return names, [list(map(str, keys))]
        return names, [list(map(str, map(_getter(path), keys))) for path in leaves]
    if len(entries.values) == 1:
        return [], []
    return [_rename("index", used, "key_")], [list(map(str, range(len(entries.values))))]


def _label_dicts(const: dict[str, str], names: list[str], columns: list[list[str]], count: int) \
        -> list[dict[str, str]]:
    """One label dict per entry: the constant labels plus the entry's value of each of `names`."""
    if not names:
        return [dict(const) for _ in range(count)]
    if len(names) == 1:
        (name,), (column,) = names, columns
        return [{**const, name: v} for v in column]
    return [{**const, **dict(zip(names, row))} for row in zip(*columns)]


def _value_plan(value: Any) -> list[tuple[str, dict[str, str], Callable[[Any], Any] | None]]:
    """(name suffix, constant extra labels, getter or None for the value itself) per numeric leaf of a
    value: struct fields become name suffixes, array positions `index` labels."""
    plan = []
    for path, leaf in _leaves(value):
        if isinstance(leaf, (int, float)):
            suffix = "".join(f"_{p}" for p in path if isinstance(p, str))
            positions = [p for p in path if isinstance(p, int)]
            extra = {("index" if i == 0 else f"index{i}"): str(p) for i, p in enumerate(positions)}
            plan.append((suffix, extra, _getter(path) if path else None))
    return plan


_FAMILIES = {"counter": CounterMetricFamily, "gauge": GaugeMetricFamily, "untyped": UnknownMetricFamily}


def families(metric: MetricConfig, entries: MapEntries, labels: Mapping[str, str] | None = None) -> list[Metric]:
    """The metric families of one metric (several when values are structs); `labels` are added to every
    sample (see `constant_labels`). The families are new objects the caller may keep or change."""
    meta = metric.open_metrics_metadata
    if meta is None:
        return []
    with gc_paused(len(entries.values) >= 10_000):  # the samples hold no cycles; see gc_paused
        keys, values = prepared(entries)
        const = constant_labels(meta, labels)
        key_names, columns = _key_labels(entries, keys, set(const))
        if meta.type == "histogram":
            return [_histogram(metric, entries, const, _label_dicts(const, key_names, columns, len(values)), values)]
        if meta.type == "summary":
            fam = SummaryMetricFamily(metric.name, meta.help)
            dicts = _label_dicts(const, key_names, columns, len(values))
            fam.samples = [s for d, v in zip(dicts, values) for s in (
                Sample(metric.name + "_count", d, v["count"], None, None),
                Sample(metric.name + "_sum", d, v["sum"], None, None))]
            return [fam]
        base = metric.name.removesuffix("_total") if meta.type == "counter" else metric.name
        cls = _FAMILIES[meta.type]
        if not values:  # an empty map still announces its metric
            return [cls(base, meta.help)]
        dicts = _label_dicts(const, key_names, columns, len(values))
        by_suffix: dict[str, list] = {}
        for suffix, extra, get in _value_plan(values[0]):
            by_suffix.setdefault(suffix, []).append((extra, get))
        out = []
        for suffix, leaves in by_suffix.items():
            fam = cls(base + suffix, meta.help)
            name = fam.name + "_total" if meta.type == "counter" else fam.name
            if len(leaves) == 1 and not leaves[0][0]:  # one number per entry: the common case
                get = leaves[0][1]
                column = values if get is None else map(get, values)
                fam.samples = [Sample(name, d, v) for d, v in zip(dicts, column)]
            else:  # numeric arrays in the value: an `index` label per element, an entry's samples together
                taken = set(const) | set(key_names)
                leaves = [({_rename(n, set(taken), "key_"): i for n, i in extra.items()}, get) for extra, get in leaves]
                fam.samples = [Sample(name, {**d, **extra}, get(v), None, None)
                               for d, v in zip(dicts, values) for extra, get in leaves]
            out.append(fam)
        return out


def _histogram(metric: MetricConfig, entries: MapEntries, const: dict[str, str], dicts: list[dict[str, str]],
               values: list) -> Metric:
    meta = metric.open_metrics_metadata
    if entries.kind in ("array", "queue") and values and isinstance(values[0], (int, float)):
        # An array of numbers is one histogram: element i is bucket i.
        groups = [(const, values, None)]
    else:
        groups = []
        for labels, value in zip(dicts, values):
            if isinstance(value, dict):
                field = next(n for n, v in value.items() if isinstance(v, list))
                groups.append((labels, value[field], value.get("sum")))
            else:
                groups.append((labels, value, None))
    fam = HistogramMetricFamily(metric.name, meta.help)
    bounds: dict[int, list[str]] = {}
    for labels, counts, total in groups:
        les = bounds.get(len(counts))
        if les is None:
            les = bounds[len(counts)] = [_exposition.go_float(b) for b in histogram_bounds(meta, len(counts))]
        running = 0
        for le, count in zip(les, counts):
            running += count
            fam.samples.append(Sample(metric.name + "_bucket", {**labels, "le": le}, running, None, None))
        # As HistogramMetricFamily.add_metric: _count only together with _sum, and not with negative buckets.
        if total is not None and les and float(les[0]) >= 0:
            fam.samples.append(Sample(metric.name + "_count", dict(labels), running, None, None))
            fam.samples.append(Sample(metric.name + "_sum", dict(labels), total, None, None))
    return fam


# ---- rendering ----------------------------------------------------------------------------------------
# The text formats live in pynetmon/exposition.py (one home for both formats and the daemon's /metrics).

FORMATS = _exposition.FORMATS


def render(fams: Iterable[Metric], fmt: str = "openmetrics") -> bytes:
    """`fams` in `fmt` ("openmetrics" or "prometheus") as bytes (see `pynetmon.exposition.render`).

    Families of one name (the same metric name in the ingress and the egress path, told apart by their
    `direction` label) are written as one family: the first one's header, then the samples of each."""
    groups: dict[str, list[Metric]] = {}
    for family in fams:
        groups.setdefault(family.name, []).append(family)
    if all(len(group) == 1 for group in groups.values()):
        return _exposition.render([group[0] for group in groups.values()], fmt)
    form = _exposition.as_format(fmt)
    parts = [_exposition.group_text(group, form) for group in groups.values()]
    parts.append(form.eof)
    return "".join(parts).encode("utf-8")


def exposition(fams: list[Metric], fmt: str = "openmetrics") -> str:
    """`fams` as text: "openmetrics" (OpenMetrics 1.0: `# HELP`, `# TYPE`, counters as `<name>_total`, a
    final `# EOF`) or "prometheus" (text format 0.0.4, which `promtool check metrics` lints; it names a
    counter's family after its `_total` sample, which OpenMetrics forbids, hence two formats)."""
    return render(fams, fmt).decode("utf-8")

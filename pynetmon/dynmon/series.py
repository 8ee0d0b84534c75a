"""The families of one exported metric, kept from read to read and rebuilt only as far as the map changed.

`MetricRenderer.families(entries)` gives what `openmetrics.families` gives, for the same entries, but:

* a map whose content did not change since the previous read gives the very same family objects;
* the common shape - a counter, gauge or untyped metric of a hash or array map whose values are a native
  number or a struct of native numbers (flow tables, counters by key) - is rendered in bulk from the
  batch read's bytes (`RawRead`), never decoded into Python dicts: the label text of each key is
  written once (with the generic code, so it is the same text) and kept, keyed by the key's bytes,
  while the key is in the map; values are taken out of the value buffer column by column with one
  `struct` pass; when the keys are the very ones of the previous read, only the samples whose value
  changed are written again; each family's text is one join. The families are `PrerenderedFamily`
  objects whose `samples` are decoded only if someone asks for them.

Every other shape (histograms, summaries, arrays inside values, big-endian or boolean fields, swap-on-read
collections, queues) is built by `openmetrics.families` and written by the generic writer.
"""
from __future__ import annotations

import struct
from collections.abc import Mapping
from itertools import compress
from operator import ne
from typing import Any

from prometheus_client.core import Metric

from ..btf_codec import ArrayCodec, FloatCodec, IntCodec, StructCodec, gc_paused, packed_struct
from ..exposition import (
    PrerenderedFamily,
    go_float,
    labels_text,
    legacy_label_name,
    legacy_metric_name,
    value_lines,
)
from .config import MetricConfig
from .entries import MapEntries, RawRead
from .openmetrics import families

_BULK_TYPES = ("counter", "gauge", "untyped")
_NATIVE = set("BHIQbhiqfd")
_INTEGER = set("BHIQbhiq")


def numeric_leaves(codec: Any, skip: Mapping[tuple, str], path: tuple = (), offset: int = 0) \
        -> list[tuple[tuple, int, str]] | None:
    """(field path, byte offset, struct code) of every numeric leaf of a value type, in field order, when
    each one is a native-order scalar number (no arrays, bitfields, booleans, big-endian or odd-size
    integers); None otherwise. Paths in `skip` (address-typed fields, shown as text) are left out."""
    if path in skip:
        return []
    if isinstance(codec, IntCodec):
        if codec.fmt not in _INTEGER or codec.big_endian or codec.is_bool:
            return None
        return [(path, offset, codec.fmt)]
    if isinstance(codec, FloatCodec):
        return [(path, offset, codec.fmt)] if codec.fmt in _NATIVE else None
    if isinstance(codec, StructCodec):
        if codec.bitfields:
            return None
        out = []
        for name, off, member in codec.fields:
            leaves = numeric_leaves(member, skip, path + (name,), offset + off)
            if leaves is None:
                return None
            out.extend(leaves)
        return out
    if isinstance(codec, ArrayCodec):
        return None  # numeric arrays become `index` labels; left to the generic path
    return []  # bytes (char arrays, unions) become text, not samples


def leaf_struct(leaves: list[tuple[tuple, int, str]], stride: int) -> struct.Struct:
    """One `struct` that unpacks just the `leaves` (from `numeric_leaves`) of values `stride` bytes apart."""
    return packed_struct([(off, code) for _, off, code in leaves], stride)


def known_texts(raw: RawRead, kept: dict[bytes, str]) -> tuple[list[bytes], list, list[int]]:
    """(each key's bytes, its text in `kept` or None, the indexes of the keys without one) for a read."""
    ks, buf = raw.key_size, raw.keys
    keys = [buf[i:i + ks] for i in range(0, raw.count * ks, ks)]
    texts = list(map(kept.get, keys))
    missing = [i for i, t in enumerate(texts) if t is None] if None in texts else []
    return keys, texts, missing


class _Bulk:
    """The state of the bulk path for one metric: what the previous read wrote."""

    def __init__(self, leaves: list[tuple[tuple, int, str]], raw: RawRead, names: list[tuple[str, str, str]]):
        self.names = names  # (family name, type, sample name) per leaf
        self.integers = [code in _INTEGER for _, _, code in leaves]
        self.row = leaf_struct(leaves, raw.value_stride)
        # One native number filling the whole value: memoryview.cast reads the column in one C call.
        self.cast = leaves[0][2] if len(leaves) == 1 and leaves[0][1] == 0 and self.row.size == struct.calcsize(
            "=" + leaves[0][2]) else None
        self.label_text: dict[bytes, str] = {}  # key bytes → "{labels} " (" " without labels)
        self.keys: bytes | None = None
        self.values: bytes | None = None
        self.key_list: list[bytes] = []
        self.columns: list[Any] = []
        self.prefixes: list[list[str]] = []
        self.lines: list[list[str]] = []

    def columns_of(self, raw: RawRead) -> list[Any]:
        """One sequence of numbers per leaf (per-CPU values summed, as the generic path does)."""
        rows = raw.count * raw.ncpus
        view = memoryview(raw.values)[: rows * raw.value_stride]
        if self.cast is not None:
            columns = [view.cast(self.cast).tolist()]  # type: ignore[call-overload]  # a str code
        elif rows:
            columns = list(zip(*self.row.iter_unpack(view)))
        else:
            columns = [() for _ in self.names]
        if raw.ncpus > 1:
            n = raw.ncpus
            columns = [list(map(sum, zip(*[iter(col)] * n))) for col in columns]
        return columns


class MetricRenderer:
    """Families of one metric of one loaded dataplane, for one set of caller labels (see the module
    docstring). Keep one per (metric, labels) and feed it every read of the metric's map."""

    def __init__(self, dataplane: Any, metric: MetricConfig, labels: Mapping[str, str] | None = None):
        self.dataplane = dataplane
        self.metric = metric
        self.labels = dict(labels or {})
        meta = metric.open_metrics_metadata
        self._bulk_ok = meta is not None and meta.type in _BULK_TYPES
        self._bulk: _Bulk | None = None
        self._digest: bytes | None = None
        self._families: list[Metric] | None = None
        self.bulk_reads = 0  # reads served by the bulk path (for tests and benchmarks)

    def serves(self, dataplane: Any, metric: MetricConfig, labels: Mapping[str, str]) -> bool:
        """True when this renderer was made for that dataplane, metric config and labels."""
        return dataplane is self.dataplane and metric is self.metric and self.labels == dict(labels)

    def families(self, entries: MapEntries) -> list[Metric]:
        """The families of `entries` (a read of the metric's map); the previous objects when the map's
        content is unchanged."""
        raw = entries.raw
        if raw is not None and self._bulk_ok and raw.count and raw.key_codec is not None:
            fams = self._bulk_families(entries, raw)
            if fams is not None:
                return fams
        self._bulk = None
        digest = entries.digest
        if digest is not None and digest == self._digest and self._families is not None:
            return self._families
        self._families = families(self.metric, entries, self.labels)
        self._digest = digest
        return self._families

    # ---- bulk path ------------------------------------------------------------------------------------
    def _bulk_families(self, entries: MapEntries, raw: RawRead) -> list[Metric] | None:
        bulk = self._bulk
        if bulk is not None and raw.keys == bulk.keys and raw.values == bulk.values and self._families is not None:
            return self._families
        with gc_paused(raw.count >= 10_000):
            if bulk is None:
                bulk = self._start(entries, raw)
                if bulk is None:
                    self._bulk_ok = False  # a shape for the generic path: it stays so for this dataplane
                    return None
            columns = bulk.columns_of(raw)
            if raw.keys == bulk.keys and bulk.lines:
                for f, (old, new) in enumerate(zip(bulk.columns, columns)):
                    lines, prefixes = bulk.lines[f], bulk.prefixes[f]
                    for i in compress(range(len(new)), map(ne, old, new)):
                        lines[i] = prefixes[i] + go_float(new[i]) + "\n"
            else:
                self._relabel(bulk, entries, raw)
                bulk.lines = [list(map(str.__add__, prefixes, value_lines(col, integers)))
                              for prefixes, col, integers in zip(bulk.prefixes, columns, bulk.integers)]
            bulk.columns, bulk.keys, bulk.values = columns, raw.keys, raw.values
            self._bulk = bulk
            self.bulk_reads += 1
            memo: list[list[Metric]] = []

            def samples_of(f: int):
                def make():  # the generic path's samples for these very entries, built once for all families
                    if not memo:
                        memo.append(families(self.metric, entries, self.labels))
                    return memo[0][f].samples
                return make

            self._families = [PrerenderedFamily(name, self.metric.open_metrics_metadata.help, typ, "".join(lines),
                                                samples_of(f))
                              for f, ((name, typ, _), lines) in enumerate(zip(bulk.names, bulk.lines))]
            self._digest = None
            return self._families

    def _start(self, entries: MapEntries, raw: RawRead) -> _Bulk | None:
        """The bulk state, when the map's shape is one the bulk path writes exactly as the generic path."""
        leaves = numeric_leaves(raw.value_codec, entries.value_addresses)
        if not leaves:
            return None
        # The generic path's families of the first entry tell the names, types and labels to expect.
        probe = families(self.metric, _subset(entries, raw, [0]), self.labels)
        if len(probe) != len(leaves) or any(len(f.samples) != 1 for f in probe):
            return None  # e.g. two leaves sharing a family name
        names = [(f.name, f.type, f.samples[0].name) for f in probe]
        label_names = set(probe[0].samples[0].labels)
        if not all(map(legacy_metric_name, [n for name, _, sample in names for n in (name, sample)])) or \
                not all(map(legacy_label_name, label_names)) or \
                any(set(f.samples[0].labels) != label_names for f in probe):
            return None
        return _Bulk(leaves, raw, names)

    def _relabel(self, bulk: _Bulk, entries: MapEntries, raw: RawRead) -> None:
        """Label text of every key of `raw`: kept texts for keys seen before, the generic path's labels
        for new ones; texts of keys no longer in the map are dropped."""
        key_list, texts, missing = known_texts(raw, bulk.label_text)
        if missing:
            # Arrays label by index only when they have more than one element: labels need the whole map.
            sub = entries if entries.kind != "hash" or len(missing) == raw.count else _subset(entries, raw, missing)
            (first, *_) = families(self.metric, sub, self.labels)
            new = [("{" + labels_text(s.labels) + "} ") if s.labels else " " for s in first.samples]
            if sub is entries:
                texts = new
            else:
                for i, text in zip(missing, new):
                    texts[i] = text
        bulk.label_text = dict(zip(key_list, texts))
        bulk.key_list = key_list
        bulk.prefixes = [list(map(sample.__add__, texts)) for _, _, sample in bulk.names]


def _subset(entries: MapEntries, raw: RawRead, indexes: list[int]) -> MapEntries:
    """The entries at `indexes` of a batch read, decoded (a hash map's new keys, or a probe)."""
    ks, vs = raw.key_size, raw.value_stride * raw.ncpus
    keys = b"".join(raw.keys[i * ks:(i + 1) * ks] for i in indexes)
    values = b"".join(raw.values[i * vs:(i + 1) * vs] for i in indexes)
    n = len(indexes)
    if raw.ncpus > 1:
        flat = raw.value_codec.decode_many(values, n * raw.ncpus, raw.value_stride)
        decoded = [flat[i * raw.ncpus:(i + 1) * raw.ncpus] for i in range(n)]
    else:
        decoded = raw.value_codec.decode_many(values, n)
    key_objs = raw.key_codec.decode_many(keys, n) if entries.kind == "hash" else []
    return MapEntries(entries.map_name, entries.map_type, entries.kind, key_objs, decoded, entries.per_cpu,
                      entries.key_addresses, entries.value_addresses)

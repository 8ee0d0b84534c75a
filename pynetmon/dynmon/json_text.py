"""Polycube JSON of a metric as text, kept from read to read and rewritten only where the map changed.

`JsonRenderer.value_text(entries)` is the JSON text of what `metrics.json_value(entries)` gives, written
as the REST service writes JSON (compact separators, UTF-8 kept). The common shape - a hash or array map
whose values are native integers or structs of them (flow tables, counters) - is written from the batch
read's bytes: each key's JSON text is written once (through `json_value` on that key alone, so it is the
same text) and kept, keyed by the key's bytes, while the key is in the map; the values are unpacked
with one `struct` pass and formatted with one C-level `%` per entry (a template built from the value
type); when the keys are the very ones of the previous read, only the entries whose value changed are
written again; one join. Every other shape goes through `json_value` and `json.dumps`.
"""
from __future__ import annotations

import json
import struct
from itertools import compress
from operator import ne
from typing import Any

from ..btf_codec import gc_paused
from .entries import MapEntries, RawRead
from .metrics import json_value
from .series import known_texts, leaf_struct, numeric_leaves

_INTEGER = set("BHIQbhiq")


def dumps(value: Any) -> str:
    """JSON text as the REST service writes it (Starlette's JSONResponse settings)."""
    return json.dumps(value, ensure_ascii=False, allow_nan=False, separators=(",", ":"))


def _template(codec: Any, leaves: list[tuple[tuple, int, str]]) -> str | None:
    """A `%` template that writes one value from its leaves' numbers: "%d" for a number, '{"a":%d,...}'
    for a struct (nested ones too); None when a struct member is not a leaf (bytes, addresses)."""
    paths = [path for path, _, _ in leaves]
    if paths == [()]:
        return "%d"

    def build(c: Any, path: tuple) -> str | None:
        if path in paths:
            return "%d"
        fields = getattr(c, "fields", None)
        if fields is None:
            return None
        parts = []
        for name, _, member in fields:
            inner = build(member, path + (name,))
            if inner is None:
                return None
            parts.append(json.dumps(name) + ":" + inner)
        return "{" + ",".join(parts) + "}"

    return build(codec, ())  # C field names hold no "%"


class JsonRenderer:
    """The JSON text of one metric's value; keep one per (dataplane, metric, per_cpu) and feed it every
    read of the metric's map."""

    def __init__(self, dataplane: Any, per_cpu: bool):
        self.dataplane = dataplane
        self.per_cpu = per_cpu
        self._plan: tuple[struct.Struct, str] | None | bool = None  # None: not planned yet; False: generic
        self._keys: bytes | None = None
        self._rows: list | None = None
        self._key_text: dict[bytes, str] = {}
        self._prefixes: list[str] = []
        self._items: list[str] = []
        self._text: str | None = None
        self._values: bytes | None = None
        self.bulk_reads = 0  # reads served by the bulk path (for tests and benchmarks)

    def value_text(self, entries: MapEntries) -> str:
        """The JSON text of the metric's value for this read (see the module docstring)."""
        raw = entries.raw
        if raw is not None and raw.count and raw.key_codec is not None and (not entries.per_cpu or not self.per_cpu):
            if self._plan is None:
                self._plan = self._make_plan(entries, raw) or False
            if self._plan:
                with gc_paused(raw.count >= 10_000):
                    return self._bulk(entries, raw)
        self._keys = self._rows = self._text = None
        return dumps(json_value(entries, self.per_cpu))

    @staticmethod
    def _make_plan(entries: MapEntries, raw: RawRead) -> tuple[struct.Struct, str] | None:
        leaves = numeric_leaves(raw.value_codec, entries.value_addresses)
        if not leaves or any(code not in _INTEGER for _, _, code in leaves):
            return None  # floats (NaN, exponents) and text values: the generic path writes those
        template = _template(raw.value_codec, leaves)
        if template is None:
            return None
        return leaf_struct(leaves, raw.value_stride), template

    def _bulk(self, entries: MapEntries, raw: RawRead) -> str:
        if raw.keys == self._keys and raw.values == self._values and self._text is not None:
            return self._text
        plan = self._plan
        assert isinstance(plan, tuple)  # value_text planned it
        row, template = plan
        view = memoryview(raw.values)[: raw.count * raw.ncpus * raw.value_stride]
        rows = list(row.iter_unpack(view))
        if raw.ncpus > 1:  # summed per CPU, field by field, as json_value does
            n = raw.ncpus
            rows = [tuple(map(sum, zip(*rows[i:i + n]))) for i in range(0, len(rows), n)]
        if raw.keys == self._keys and self._rows is not None:
            items = self._items
            for i in compress(range(len(rows)), map(ne, self._rows, rows)):
                items[i] = self._prefixes[i] + (template % rows[i]) + self._closing
        else:
            self._relabel(entries, raw)
            items = self._items = list(map(str.__add__, self._prefixes, map(template.__mod__, rows)))
            if self._closing:
                items[:] = [item + self._closing for item in items]
        self._keys, self._values, self._rows = raw.keys, raw.values, rows
        self._text = "[" + ",".join(items) + "]"
        self.bulk_reads += 1
        return self._text

    def _relabel(self, entries: MapEntries, raw: RawRead) -> None:
        """The text before each value: `{"key":K,"value":` for hash maps (kept per key bytes), nothing for
        arrays."""
        if entries.kind != "hash":
            self._prefixes, self._closing = [""] * raw.count, ""
            return
        self._closing = "}"
        keys, texts, missing = known_texts(raw, self._key_text)
        if missing:
            decoded = raw.key_codec.decode_many(b"".join(keys[i] for i in missing), len(missing))
            one = MapEntries(entries.map_name, entries.map_type, "hash", decoded, [0] * len(missing), False,
                             entries.key_addresses, {})
            for i, item in zip(missing, json_value(one)):
                texts[i] = '{"key":' + dumps(item["key"]) + ',"value":'
        self._key_text = dict(zip(keys, texts))
        self._prefixes = texts

    _closing = ""


__all__ = ["JsonRenderer", "dumps"]

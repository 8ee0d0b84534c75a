"""Metric values and OpenMetrics text exactly as Polycube's dynmon produces them, for clients written
against polycubed (`?raw=true`, `open-metrics?format=polycube`); pynetmon's defaults are better and stay
the defaults (docs/polycube.md, "Where pynetmon differs").

Polycube reads a map entry's bytes as the C types BCC names (`MapExtractor::valueFromPrimitiveType` in
src/services/pcn-dynmon/src/extractor/MapExtractor.cpp, polycube-network/polycube): a `__be16` port is
the native integer of its network-order bytes (53 reads 13568), an address is a number; per-CPU maps are
not read at all ("Unhandled Map Type"). `raw_json_value` gives those numbers, and per-CPU values one per
CPU (unsummed). `polycube_text` writes `Dynmon::toOpenMetrics` (src/services/pcn-dynmon/src/Dynmon.cpp):
one `#HELP`/`#TYPE` pair per sample, `NAME_<i>` per array element, labels joined by ", ", integers.
"""
from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from ..btf_codec import ArrayCodec, Codec, IntCodec, StructCodec
from .config import MetricConfig
from .entries import MapEntries
from .metrics import jsonable

__all__ = ["polycube_text", "raw_json_value", "raw_value"]


def raw_value(value: Any, codec: Codec | None) -> Any:
    """A decoded key or value as Polycube reads its bytes: big-endian (`__be`) integers as the native
    integer of their bytes, everything else as decoded (bytes as text)."""
    if isinstance(codec, IntCodec):
        to_wire = getattr(codec, "_to_wire", None)
        return to_wire(value) if codec.big_endian and to_wire is not None and isinstance(value, int) else value
    if isinstance(codec, StructCodec) and isinstance(value, dict):
        fields = {name: c for name, _, c in codec.fields}
        return {k: raw_value(v, fields.get(k)) for k, v in value.items()}
    if isinstance(codec, ArrayCodec) and isinstance(value, list):
        return [raw_value(v, codec.elem) for v in value]
    return jsonable(value)


def raw_json_value(entries: MapEntries, key_codec: Codec | None, value_codec: Codec | None) -> list:
    """The map's content in Polycube's shape with Polycube's numbers: hash maps `[{"key", "value"}]`,
    arrays and queues `[v0, v1, ...]`; addresses not turned into text, per-CPU values a list per entry
    (one per possible CPU, not summed)."""
    def value_of(v: Any) -> Any:
        return [raw_value(x, value_codec) for x in v] if entries.per_cpu else raw_value(v, value_codec)

    if entries.kind == "hash":
        return [{"key": raw_value(k, key_codec), "value": value_of(v)} for k, v in zip(entries.keys, entries.values)]
    return [value_of(v) for v in entries.values]


def _metric_text(metric: MetricConfig, value: Any) -> str:
    meta = metric.open_metrics_metadata
    if meta is None or not isinstance(value, list) or not value or not _number(value[0]):
        return ""  # Polycube logs "Unable to convert metric ... to OpenMetrics format" and gives ""
    labels = ", ".join(f'{label.name}="{label.value}"' for label in meta.labels)
    lines = []
    for i, v in enumerate(value):
        if not _number(v):
            break  # nlohmann's get<uint64_t> throws; Polycube keeps the lines written so far
        name = metric.name if len(value) == 1 else f"{metric.name}_{i}"
        lines += [f"#HELP {metric.name} {meta.help}", f"#TYPE {metric.name} {meta.type}",
                  f"{name}{{{labels}}} {int(v) % (1 << 64)}"]
    return "\n".join(lines)


def _number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def polycube_text(ingress: Iterable[tuple[MetricConfig, Any]], egress: Iterable[tuple[MetricConfig, Any]]) -> str:
    """`Dynmon::getOpenMetrics()`'s text from (metric, raw JSON value) pairs of each path (metrics without
    open-metrics-metadata are left out by the caller, as Polycube does): each path's metrics joined by
    newlines, ingress first; no final newline, no `# EOF`."""
    parts = ["\n".join(_metric_text(m, v) for m, v in path) for path in (ingress, egress)]
    return "\n".join(p for p in parts if p) if all(parts) else parts[0] or parts[1]

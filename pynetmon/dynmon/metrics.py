"""Metrics in Polycube's JSON shape.

Each metric is `{"name", "value", "timestamp"}` (timestamp in microseconds since the epoch). The value is
the map's content as Polycube shows it: hash maps `[{"key": K, "value": V}, ...]`, arrays `[V0, V1, ...]`,
queues and stacks their values in pop order. Keys and values are decoded from BTF (structs → objects);
per-CPU maps are summed unless `per_cpu=True`; address-typed fields are address strings; char arrays
are strings when they hold text, else hex.
"""
from __future__ import annotations

import time
from typing import Any

from ..btf_codec import gc_paused
from .entries import MapEntries, apply_addresses


def timestamp_us() -> int:
    """Now, in microseconds since the epoch (Polycube's metric timestamps)."""
    return time.time_ns() // 1000


def sum_per_cpu(per_cpu_values: list) -> Any:
    """Add up one value per CPU: numbers are summed, structs field by field, arrays element by element."""
    first = per_cpu_values[0]
    if isinstance(first, (int, float)) and not isinstance(first, bool):
        return sum(per_cpu_values)
    if isinstance(first, dict):
        return {k: sum_per_cpu([v[k] for v in per_cpu_values]) for k in first}
    if isinstance(first, list):
        return [sum_per_cpu([v[i] for v in per_cpu_values]) for i in range(len(first))]
    return first  # bytes and the like cannot be added: show the first CPU's


def bytes_text(raw: bytes) -> str:
    """A char array as text (up to the first NUL) when it is printable, else as 0x-prefixed hex."""
    text = raw.split(b"\0", 1)[0]
    try:
        decoded = text.decode("utf-8")
        if decoded.isprintable() and not any(raw[len(text):]):
            return decoded
    except UnicodeDecodeError:
        pass
    return "0x" + raw.hex()


def jsonable(value: Any) -> Any:
    """`value` with every bytes object replaced by text (JSON has no bytes)."""
    if isinstance(value, (bytes, bytearray)):
        return bytes_text(bytes(value))
    if isinstance(value, dict):
        return {k: jsonable(v) for k, v in value.items()}
    if isinstance(value, list):
        return [jsonable(v) for v in value]
    return value


def _has_bytes(value: Any) -> bool:
    if isinstance(value, (bytes, bytearray)):
        return True
    if isinstance(value, dict):
        return any(_has_bytes(v) for v in value.values())
    if isinstance(value, list):
        return any(_has_bytes(v) for v in value)
    return False


def prepared(entries: MapEntries, per_cpu: bool = False) -> tuple[list, list]:
    """(keys, values) ready for output: per-CPU values summed (unless `per_cpu`), addresses as strings,
    bytes as text. Every entry of a map has the same C type, so the first one decides which
    conversions are needed and the common case (plain numbers) costs nothing per entry."""
    keys, values = entries.keys, entries.values
    if entries.per_cpu and not per_cpu:
        values = [sum_per_cpu(v) for v in values]
    if entries.key_addresses:
        keys = [apply_addresses(k, entries.key_addresses) for k in keys]
    if entries.value_addresses:
        if entries.per_cpu and per_cpu:
            values = [[apply_addresses(x, entries.value_addresses) for x in v] for v in values]
        else:
            values = [apply_addresses(v, entries.value_addresses) for v in values]
    if keys and _has_bytes(keys[0]):
        keys = [jsonable(k) for k in keys]
    if values and _has_bytes(values[0]):
        values = [jsonable(v) for v in values]
    return keys, values


def json_value(entries: MapEntries, per_cpu: bool = False) -> list:
    """The map's content in Polycube's shape (see the module docstring)."""
    with gc_paused(len(entries.values) >= 10_000):  # many small containers, no cycles: see gc_paused
        keys, values = prepared(entries, per_cpu)
        if entries.kind == "hash":
            return [{"key": k, "value": v} for k, v in zip(keys, values)]
        return values if isinstance(values, list) and values is not entries.values else list(values)


def metric_json(name: str, entries: MapEntries, per_cpu: bool = False) -> dict:
    """One metric: `{"name", "value", "timestamp"}`."""
    return {"name": name, "value": json_value(entries, per_cpu), "timestamp": timestamp_us()}

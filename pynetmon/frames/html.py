"""Compact HTML tables for Jupyter's rich display (`_repr_html_` of Map, Recorder and snapshots).

A display must never read a whole million-entry map or fail a notebook cell: a map shows its first
`PREVIEW_ROWS` entries (found key by key, so the cost does not grow with the map), and an error while
reading is shown in the table instead of raised.
"""
from __future__ import annotations

import html
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ..maps import Map

PREVIEW_ROWS = 20
MAX_CELL = 80  # characters shown of one value


def _cell(value: Any) -> str:
    text = value.hex() if isinstance(value, (bytes, bytearray)) else str(value)
    if len(text) > MAX_CELL:
        text = text[:MAX_CELL - 1] + "…"
    return html.escape(text)


def table_html(columns: list[str], rows: Iterable[Iterable[Any]], caption: str = "", note: str = "") -> str:
    """An HTML table with a caption (a title line) and an optional note under it."""
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in columns)
    body = "".join("<tr>" + "".join(f"<td>{_cell(v)}</td>" for v in row) + "</tr>" for row in rows)
    cap = f"<caption style='text-align:left'>{html.escape(caption)}</caption>" if caption else ""
    foot = f"<div style='font-size:smaller'>{html.escape(note)}</div>" if note else ""
    return f"<table class='pynetmon'>{cap}<thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>{foot}"


def _leaves(value: Any, path: str, out: dict[str, Any]) -> None:
    if isinstance(value, dict):
        for k, v in value.items():
            _leaves(v, f"{path}.{k}" if path else str(k), out)
    elif isinstance(value, list) and 0 < len(value) <= 8 and not isinstance(value[0], (dict, list)):
        for i, v in enumerate(value):
            out[f"{path}[{i}]"] = v
    else:
        out[path] = value


def map_html(m: Map, rows: int = PREVIEW_ROWS) -> str:
    """The map's properties and its first `rows` entries."""
    from ..errors import Error
    caption = (f"map {m.name!r}: {m.type}, key {m.key_size} B, value {m.value_size} B, "
               f"max_entries {m.max_entries}")
    try:
        pairs = _first_entries(m, rows)
    except (Error, OSError, ValueError) as exc:
        return table_html(["error"], [[str(exc)]], caption)
    flat = []
    for key, value in pairs:
        k: dict[str, Any] = {}
        v: dict[str, Any] = {}
        _leaves(key, "key", k)
        _leaves(value, "value", v)
        flat.append({**k, **v})
    columns = list(dict.fromkeys(c for row in flat for c in row))
    more = len(pairs) == rows
    return table_html(columns, ([row.get(c, "") for c in columns] for row in flat), caption,
                      f"first {rows} entries shown" if more else f"{len(pairs)} entries")


def _first_entries(m: Map, rows: int) -> list[tuple[Any, Any]]:
    from .._binding import ffi
    from ..errors import MapKeyError
    if m.type in ("queue", "stack", "bloom_filter", "ringbuf", "user_ringbuf", "perf_event_array"):
        return []
    out = []
    for raw in m._iter_raw_keys():
        key = m.key_codec.decode(ffi.buffer(raw, m.key_size)[:])
        try:
            out.append((key, m.lookup(key)))
        except MapKeyError:
            continue  # deleted since its key was seen
        if len(out) >= rows:
            break
    return out


def snapshot_html(snapshot: dict, title: str = "snapshot") -> str:
    """A monitor snapshot (nested dict) as path/value rows; histograms as one compact row each."""
    flat: dict[str, Any] = {}
    _snapshot_leaves(snapshot, "", flat)
    return table_html(["metric", "value"], flat.items(), title)


def _snapshot_leaves(value: Any, path: str, out: dict[str, Any]) -> None:
    if isinstance(value, dict) and "buckets" in value and isinstance(value["buckets"], list):
        out[path] = f"histogram: count {value.get('count')}, sum {value.get('sum')}, {len(value['buckets'])} buckets"
    elif isinstance(value, dict):
        for k, v in value.items():
            _snapshot_leaves(v, f"{path}.{k}" if path else str(k), out)
    elif isinstance(value, list) and value and isinstance(value[0], dict):
        for i, v in enumerate(value[:PREVIEW_ROWS]):
            _snapshot_leaves(v, f"{path}[{i}]", out)
        if len(value) > PREVIEW_ROWS:
            out[f"{path}[…]"] = f"{len(value) - PREVIEW_ROWS} more"
    else:
        out[path] = value

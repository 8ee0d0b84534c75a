"""Whole maps and batches of ring/perf buffer records as NumPy structured arrays.

A map is read with the kernel's batch lookups into one small buffer reused from batch to batch
(`Map.iter_batches`), so the kernel writes into memory that is already in the CPU's cache; each batch is
viewed through the dtypes built from BTF and copied once into its place in the `("key", "value")`
records returned. No Python object is made per entry.
"""
from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from ..btf_codec import BytesCodec, Codec
from ..errors import NotSupportedError
from .dtype import dtype as out_dtype
from .dtype import materialize, raw_dtype, sum_per_cpu, summed_dtype
from .extra import require

if TYPE_CHECKING:
    from ..maps import Map

PER_CPU_MODES = ("axis", "sum")
# Up to this many bytes of records are reserved at once for the map's max_entries (NumPy's untouched
# pages cost nothing); bigger maps start smaller and grow by doubling.
RESERVE_BYTES = 1 << 30
_LENGTH_BYTES = 4  # the u32 length before each record of a framed batch (see ringbuf.split_records)


def _np():
    return require("numpy", "NumPy arrays of maps and buffers")


def codec_dtype(codec: Codec, size: int) -> tuple[Codec, Any]:
    """`codec` and its in-place dtype, or raw bytes of `size` when the codec does not cover exactly `size`
    bytes (a map whose BTF disagrees with its declared sizes)."""
    dt = raw_dtype(codec)
    if dt.itemsize != size:
        codec = BytesCodec(size)
        dt = raw_dtype(codec)
    return codec, dt


def map_dtype(m: Map, per_cpu: str = "axis") -> Any:
    """The dtype of the records `map_to_numpy(m, per_cpu)` returns."""
    np = _np()
    key = out_dtype(codec_dtype(m.key_codec, m.key_size)[0])
    value = out_dtype(codec_dtype(m.value_codec, m.value_size)[0])
    if m.per_cpu:
        value = summed_dtype(value) if per_cpu == "sum" else np.dtype((value, (m.ncpus,)))
    return np.dtype([("key", key), ("value", value)])


def map_to_numpy(m: Map, per_cpu: str = "axis") -> Any:
    """Every entry of `m` as a structured array with fields `key` and `value` (see `Map.to_numpy`)."""
    np = _np()
    if per_cpu not in PER_CPU_MODES:
        raise ValueError(f"per_cpu must be one of {PER_CPU_MODES}, not {per_cpu!r}")
    if m.type in ("queue", "stack"):
        raise NotSupportedError(f"a {m.type} map is read by popping its values: use pop_items()")
    if m.type in ("bloom_filter", "ringbuf", "user_ringbuf"):
        raise NotSupportedError(f"map {m.name!r} ({m.type}) has no entries to read")
    kcodec, kdt = codec_dtype(m.key_codec, m.key_size)
    vcodec, vdt = codec_dtype(m.value_codec, m.value_size)
    ncpus, vstride = (m.ncpus, m._stride) if m.per_cpu else (1, m.value_size)
    out_dt = map_dtype(m, per_cpu)
    # Room for max_entries at once when that is affordable (untouched pages cost nothing), else grown.
    capacity = m.max_entries if m.max_entries * out_dt.itemsize <= RESERVE_BYTES else 1 << 16
    out = np.empty(max(capacity, 1), out_dt)
    total = 0
    # Each batch lands in a small buffer that stays in the CPU cache and goes from there into its place
    # in the records: the only pass over the result's memory.
    for kbuf, vbuf, n in m.iter_batches():
        if total + n > len(out):
            grown = np.empty(max(2 * len(out), total + n), out_dt)
            grown[:total] = out[:total]
            out = grown
        keys = np.frombuffer(kbuf, kdt, n)
        if m.per_cpu:
            values = np.ndarray((n, ncpus), vdt, buffer=vbuf, strides=(ncpus * vstride, vstride))
        else:
            values = np.frombuffer(vbuf, vdt, n)
        values = materialize(values, vcodec)
        out["key"][total:total + n] = materialize(keys, kcodec)
        out["value"][total:total + n] = sum_per_cpu(values) if m.per_cpu and per_cpu == "sum" else values
        total += n
    # A result much smaller than its reservation is copied out, so the reservation is not kept alive.
    return out[:total].copy() if total < len(out) // 2 else out[:total]


def records_to_numpy(batch: bytes | memoryview, count: int, dt: Any, framed: bool = True) -> Any:
    """The `count` records of a ring/perf buffer batch as an array of `dt` (each record's first
    `dt.itemsize` bytes; perf samples carry up to 7 bytes of padding after them).

    `framed` batches hold a u32 length before each record, 8-byte aligned (`split_records`); otherwise
    records lie back to back and must all be `dt.itemsize` long. A record shorter than the dtype is an
    error naming it.
    """
    np = _np()
    dt = np.dtype(dt)
    size = dt.itemsize
    if count == 0:
        return np.empty(0, dt)
    raw = np.frombuffer(batch, np.uint8)
    if not framed:
        if len(raw) != count * size:
            raise ValueError(f"{count} back-to-back records of {size} bytes expected, the batch holds "
                             f"{len(raw)} bytes")
        return raw.view(dt).copy()
    first = int.from_bytes(bytes(raw[:_LENGTH_BYTES]), "little")
    frame = (_LENGTH_BYTES + first + 7) & ~7
    if frame * count == len(raw) and first >= size:
        # Every record as long as the first (the usual case of one C struct per record): one strided view.
        lengths = np.ndarray((count,), np.dtype("=u4"), buffer=raw, strides=(frame,))
        if (lengths == first).all():
            return np.ndarray((count,), dt, buffer=raw, offset=_LENGTH_BYTES, strides=(frame,)).copy()
    out = np.empty(count, dt)
    flat = out.view(np.uint8).reshape(count, size) if size else None
    offset = 0
    for i in range(count):
        length = int.from_bytes(bytes(raw[offset:offset + _LENGTH_BYTES]), "little")
        if length < size:
            raise ValueError(f"record {i} of the batch is {length} bytes, shorter than the {size} of dtype {dt}")
        if flat is not None:
            flat[i] = raw[offset + _LENGTH_BYTES:offset + _LENGTH_BYTES + size]
        offset += (_LENGTH_BYTES + length + 7) & ~7
    return out


def collect_records(reader: Any, dt: Any, max_records: int, timeout_ms: int) -> Any:
    """Poll `reader` (a RingBuffer or PerfBuffer) until `max_records` records or `timeout_ms` passed;
    records beyond `max_records` stay with the reader for its next `to_numpy` call."""
    np = _np()
    codec = dt if isinstance(dt, Codec) else None
    dt = raw_dtype(codec) if codec is not None else np.dtype(dt)
    if max_records < 0:
        raise ValueError(f"max_records must be at least 0, not {max_records}")
    parts, have = [], 0
    surplus = reader._numpy_surplus
    if surplus is not None and surplus.dtype == dt:
        parts.append(surplus)
        have = len(surplus)
    reader._numpy_surplus = None
    deadline = time.monotonic() + max(timeout_ms, 0) / 1000
    while have < max_records:
        left_ms = max(0, round((deadline - time.monotonic()) * 1000))
        batch, count = reader.poll_batch(left_ms)
        if count:
            part = records_to_numpy(batch, count, dt, framed=not reader.concatenate)
            parts.append(part)
            have += len(part)
        if left_ms == 0:
            break
    records = np.concatenate(parts) if parts else np.empty(0, dt)
    if len(records) > max_records:
        reader._numpy_surplus = records[max_records:]
        records = records[:max_records]
    return materialize(records, codec) if codec is not None else records

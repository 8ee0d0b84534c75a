"""BTF codecs as NumPy structured dtypes, and the way back to the shapes `Map.items()` gives.

A codec (`pynetmon.btf_codec`) becomes a dtype that reads the C bytes in place:

- integers and enums → `u1`…`u8`/`i1`…`i8`, big-endian typedefs (`__be16`, `__be32`) → `>u2`, `>u4`
  (NumPy converts on access, so the values read are the host-order numbers `items()` shows);
  `_Bool` → `?`, floats → `f4`/`f8`, 128-bit and odd-sized integers → `V16`/`Vn` (raw bytes);
- char arrays → `Sn` (NumPy's C-string type), unions and opaque bytes → `Vn`;
- arrays → subarray fields (nested arrays → more dimensions), structs → fields at their C offsets with
  the C size as itemsize (padding skipped, never copied).

Bitfields have no NumPy type: the in-place ("raw") dtype holds each bitfield as the bytes that cover it
(an overlapping `u1` subarray), and `materialize` turns that into a plain unsigned field, one vectorised
shift-and-mask per bitfield. Types without bitfields need no such step: their raw dtype is the result.
"""
from __future__ import annotations

from typing import Any

from ..btf_codec import ArrayCodec, BytesCodec, Codec, FloatCodec, IntCodec, StructCodec
from .extra import require


def _np():
    return require("numpy", "NumPy arrays of maps")


def raw_dtype(codec: Codec) -> Any:
    """The NumPy dtype that views `codec`'s C bytes in place (bitfields as their covering bytes)."""
    cached = codec.__dict__.get("_numpy_raw")  # codecs are immutable once built: one dtype each
    if cached is None:
        cached = codec.__dict__["_numpy_raw"] = _raw_dtype(codec)
    return cached


def _raw_dtype(codec: Codec) -> Any:
    np = _np()
    if isinstance(codec, IntCodec):
        if codec.fmt.endswith("s"):
            return np.dtype(f"V{codec.size}")
        if codec.is_bool and codec.size == 1:
            return np.dtype("?")
        order = ">" if codec.big_endian else "<" if codec.size > 1 else "|"
        return np.dtype(f"{order}{'i' if codec.signed else 'u'}{codec.size}")
    if isinstance(codec, FloatCodec):
        return np.dtype(f"<f{codec.size}" if codec.size in (4, 8) else f"V{codec.size}")
    if isinstance(codec, BytesCodec):
        if not codec.size:
            return np.dtype(("u1", (0,)))
        return np.dtype(f"S{codec.size}" if codec.text else f"V{codec.size}")
    if isinstance(codec, ArrayCodec):
        return np.dtype((raw_dtype(codec.elem), (codec.count,)))
    if isinstance(codec, StructCodec):
        names, formats, offsets = [], [], []
        for name, off, field in codec.fields:
            names.append(name)
            formats.append(raw_dtype(field))
            offsets.append(off)
        for name, bit_off, bits in codec.bitfields:
            start, end = bit_off // 8, (bit_off + bits + 7) // 8
            names.append(name)
            formats.append(np.dtype(("u1", (end - start,))))
            offsets.append(start)
        return np.dtype({"names": names, "formats": formats, "offsets": offsets, "itemsize": codec.size})
    return np.dtype(f"V{codec.size}") if codec.size else np.dtype(("u1", (0,)))


def has_bitfields(codec: Codec) -> bool:
    """Whether `codec` or anything inside it has bitfields (then `materialize` must copy)."""
    if isinstance(codec, StructCodec):
        return bool(codec.bitfields) or any(has_bitfields(c) for _, _, c in codec.fields)
    if isinstance(codec, ArrayCodec):
        return has_bitfields(codec.elem)
    return False


def _bitfield_dtype(bits: int) -> str:
    return "u1" if bits <= 8 else "u2" if bits <= 16 else "u4" if bits <= 32 else "u8"


def dtype(codec: Codec) -> Any:
    """The dtype of `codec`'s values as `Map.to_numpy()` returns them (bitfields as unsigned fields)."""
    cached = codec.__dict__.get("_numpy_out")
    if cached is None:
        cached = codec.__dict__["_numpy_out"] = _out_dtype(codec)
    return cached


def _out_dtype(codec: Codec) -> Any:
    np = _np()
    if not has_bitfields(codec):
        return raw_dtype(codec)
    if isinstance(codec, ArrayCodec):
        return np.dtype((dtype(codec.elem), (codec.count,)))
    assert isinstance(codec, StructCodec)
    members = [(off * 8, name, dtype(c)) for name, off, c in codec.fields]
    members += [(bit_off, name, np.dtype(_bitfield_dtype(bits))) for name, bit_off, bits in codec.bitfields]
    members.sort(key=lambda m: m[0])
    return np.dtype([(name, dt) for _, name, dt in members])


def materialize(raw: Any, codec: Codec) -> Any:
    """`raw` (an array of `raw_dtype(codec)`, any shape) as an array of `dtype(codec)`: the same array
    when there are no bitfields, else a copy with every bitfield extracted."""
    np = _np()
    if not has_bitfields(codec):
        return raw
    if isinstance(codec, ArrayCodec):  # the array axis is already part of raw's shape
        return materialize(raw, codec.elem)
    assert isinstance(codec, StructCodec)
    out = np.empty(raw.shape, dtype(codec))
    for name, _, field in codec.fields:
        out[name] = materialize(raw[name], field)
    for name, bit_off, bits in codec.bitfields:
        covering = raw[name]  # (..., nbytes) little-endian bytes holding the bitfield
        value = np.zeros(raw.shape, np.uint64)
        for i in range(covering.shape[-1]):
            value |= covering[..., i].astype(np.uint64) << np.uint64(8 * i)
        out[name] = (value >> np.uint64(bit_off % 8)) & np.uint64((1 << bits) - 1)
    return out


def summed_dtype(dt: Any) -> Any:
    """The dtype `sum_per_cpu` gives for per-CPU values of dtype `dt` (integers in 64 bits, floats in double)."""
    np = _np()
    if dt.names:
        return np.dtype([(name, summed_dtype(dt.fields[name][0])) for name in dt.names])
    if dt.subdtype is not None:
        base, shape = dt.subdtype
        return np.dtype((summed_dtype(base), shape))
    return {"u": np.dtype("u8"), "i": np.dtype("i8"), "f": np.dtype("f8")}.get(dt.kind, dt)


def sum_per_cpu(values: Any) -> Any:
    """Per-CPU values (shape (n, ncpus)) summed over the CPU axis, field by field.

    Integers add up in 64 bits (wrapping like the kernel's counters), floats in double; `bool` fields
    are "any CPU", and fields that are not numbers (bytes) are CPU 0's."""
    np = _np()
    out = np.empty(values.shape[:1], summed_dtype(values.dtype))
    _sum_into(out, values)
    return out


def _sum_into(out: Any, values: Any) -> None:
    np = _np()
    dt = values.dtype
    if dt.names:
        for name in dt.names:
            _sum_into(out[name], values[name])  # a field of an array is a view: filled in place
        return
    if dt.kind in "uif":
        with np.errstate(invalid="ignore", over="ignore"):  # inf - inf is NaN, as in C
            np.sum(values, axis=1, dtype=out.dtype, out=out)
    elif dt.kind == "b":
        np.any(values, axis=1, out=out)
    else:
        out[...] = values[:, 0]


def to_python(value: Any, codec: Codec) -> Any:
    """One value read from an array of `dtype(codec)` in the shape `Map.items()` gives for it."""
    if isinstance(codec, IntCodec):
        if codec.fmt.endswith("s"):
            return int.from_bytes(bytes(value), "big" if codec.big_endian else "little", signed=codec.signed)
        return bool(value) if codec.is_bool else int(value)
    if isinstance(codec, FloatCodec):
        return float(value) if codec.size in (4, 8) else bytes(value)
    if isinstance(codec, BytesCodec):
        # NumPy's C strings drop trailing NULs; the map holds (and items() shows) all of them.
        return bytes(value).ljust(codec.size, b"\0") if codec.size else b""
    if isinstance(codec, ArrayCodec):
        return [to_python(v, codec.elem) for v in value]
    if isinstance(codec, StructCodec):
        result = {name: to_python(value[name], field) for name, _, field in codec.fields}
        for name, _, _ in codec.bitfields:
            result[name] = int(value[name])
        return result
    return bytes(value)

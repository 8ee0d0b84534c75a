"""The raw-bytes fold (RawTotals) against the value-by-value fold (DecodedTotals, built on `fold`): same keys,
same totals, same order, over random periods (keys in any order, new and missing keys, emptying reads in
between), for every value shape RawTotals takes, including totals that outgrow their C type. Pure: no BPF."""
from __future__ import annotations

import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pynetmon.btf_codec import ArrayCodec, BytesCodec, FloatCodec, IntCodec, StructCodec, per_cpu_stride
from pynetmon.swap.collected import DecodedTotals, RawTotals, summable, widened

U8, U16, U32, U64 = IntCodec(1), IntCodec(2), IntCodec(4), IntCodec(8)
S32 = IntCodec(4, signed=True)
FLOW = StructCodec("flow", 16, [("packets", 0, U64), ("bytes", 8, U64)])
# Mixed widths with padding: u32 at 0, u64 at 8 (4 bytes of padding), u16[3] at 16, s32 at 24, f32 at 28.
MIXED = StructCodec("mixed", 32, [("n", 0, U32), ("bytes", 8, U64), ("hist", 16, ArrayCodec(U16, 3)),
                                  ("delta", 24, S32), ("ratio", 28, FloatCodec(4))])
ODD = StructCodec("odd", 12, [("a", 0, U32), ("b", 4, U32), ("c", 8, U32)])   # per-CPU stride 16
KEY_PAIR = StructCodec("pair", 8, [("addr", 0, U32), ("port", 4, U16)])         # 2 bytes of tail padding
KEY_WIDE = StructCodec("wide", 12, [("a", 0, U32), ("b", 4, U64)])

SHAPES = {
    "u64": (U32, U64, 1),
    "flow": (U32, FLOW, 1),
    "mixed": (KEY_PAIR, MIXED, 1),
    "u8 histogram": (U32, ArrayCodec(U8, 4), 1),
    "per-cpu odd": (KEY_WIDE, ODD, 3),
    "per-cpu u64": (U16, U64, 2),
}


def _leaf_struct(codec):
    return struct.Struct("=" + codec.fmt)


def _leaf_ranges(codec) -> list[tuple[int, int, bool]]:
    """(low, high, is_float) per leaf of a summable codec, in `fmt` order."""
    out = []
    for code in _leaf_struct(codec).format.lstrip("="):
        if code.isdigit() or code == "x":
            continue
        if code == "f":
            out.append((-1000, 1000, True))
        else:
            size = struct.calcsize(code)
            out.append((-(1 << (8 * size - 1)), 1 << (8 * size - 1), False) if code.islower()
                       else (0, 1 << (8 * size), False))
    return out


def _pack_key(codec, ident: int) -> bytes:
    leaves = _leaf_struct(codec).unpack(bytes(codec.size))
    return _leaf_struct(codec).pack(ident, *leaves[1:])


@st.composite
def periods(draw, shape):
    key_codec, value_codec, slots = SHAPES[shape]
    ranges = _leaf_ranges(value_codec)
    stride = per_cpu_stride(value_codec.size) if slots > 1 else value_codec.size
    # Values near the top of each type's range, so that totals soon outgrow it.
    leaf = [st.floats(lo, hi, width=32) if is_float else st.integers(max(lo, hi - 4), hi - 1) | st.integers(lo, hi - 1)
            for lo, hi, is_float in ranges]
    out = []
    for _ in range(draw(st.integers(1, 6))):
        keys = draw(st.lists(st.integers(0, 20), unique=True, max_size=12))
        raw_keys, raw_values = b"", b""
        for k in keys:
            raw_keys += _pack_key(key_codec, k)
            for _ in range(slots):
                raw_values += _leaf_struct(value_codec).pack(*[draw(s) for s in leaf]).ljust(stride, b"\0")
        out.append((raw_keys, raw_values, len(keys), draw(st.booleans())))
    return out


def _same(raw: RawTotals, decoded: DecodedTotals) -> None:
    assert len(raw) == len(decoded)
    raw_keys, raw_values = raw.columns()
    keys, values = decoded.columns()
    assert raw_keys == keys
    assert raw_values == values


@pytest.mark.parametrize("shape", sorted(SHAPES))
@settings(max_examples=60, deadline=None)
@given(data=st.data())
def test_raw_fold_equals_the_value_by_value_fold(shape, data):
    key_codec, value_codec, slots = SHAPES[shape]
    assert summable(value_codec)
    per_cpu = slots > 1
    raw = RawTotals(key_codec, value_codec, slots, per_cpu=per_cpu)
    decoded = DecodedTotals(key_codec, value_codec, slots, per_cpu=per_cpu)
    for raw_keys, raw_values, count, empty_after in data.draw(periods(shape)):
        raw.add(raw_keys, raw_values, count)
        decoded.add(raw_keys, raw_values, count)
        _same(raw, decoded)
        if empty_after:
            raw.clear()
            decoded.clear()


def test_totals_outgrow_their_c_type_without_wrapping():
    raw = RawTotals(U32, StructCodec("s", 12, [("small", 0, U32), ("big", 4, U64)]))
    period = struct.pack("=I", 7), struct.pack("=IQ", 0xFFFF_FFFF, 0xFFFF_FFFF_FFFF_FFFF), 1
    for _ in range(3):
        raw.add(*period)
    assert raw.columns() == ([7], [{"small": 3 * 0xFFFF_FFFF, "big": 3 * 0xFFFF_FFFF_FFFF_FFFF}])


def test_new_and_missing_keys_keep_first_seen_order():
    raw = RawTotals(U32, FLOW)
    rows = struct.Struct("=QQ").pack
    raw.add(struct.pack("=3I", 5, 1, 9), rows(1, 10) + rows(2, 20) + rows(3, 30), 3)
    raw.add(struct.pack("=2I", 4, 1), rows(100, 1000) + rows(1, 1), 2)
    assert raw.columns() == ([5, 1, 9, 4], [{"packets": 1, "bytes": 10}, {"packets": 3, "bytes": 21},
                                            {"packets": 3, "bytes": 30}, {"packets": 100, "bytes": 1000}])


def test_two_alternating_key_orders_then_a_new_key():
    """The two instances return the same keys in two orders (their hash seeds differ); a gather index is
    kept per order, and must be recomputed once a new key adds a row."""
    raw, decoded = RawTotals(U32, FLOW), DecodedTotals(U32, FLOW)
    row = struct.Struct("=QQ").pack
    orders = [[3, 1, 2], [2, 3, 1], [2, 3, 1, 8], [3, 1, 2], [1, 2]]
    for rnd, keys in enumerate(orders * 2):
        period = struct.pack(f"={len(keys)}I", *keys), b"".join(row(k + rnd, 10 * k) for k in keys), len(keys)
        raw.add(*period)
        decoded.add(*period)
        _same(raw, decoded)


def test_what_is_not_only_numbers_is_folded_value_by_value():
    tagged = StructCodec("t", 12, [("n", 0, U64), ("tag", 8, BytesCodec(4))])
    assert not summable(tagged)
    assert not summable(IntCodec(2, big_endian=True)) and not summable(IntCodec(1, is_bool=True))
    assert summable(MIXED) and widened(MIXED).fmt == "QQQQQqd"

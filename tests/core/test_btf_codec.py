"""BTF codecs against the real BTF of bpf/maptypes.bpf.c (opened, never loaded: no privileges needed).

Known-answer tests pin the byte layout clang chose (offsets read from `bpftool btf dump`); property tests
check that decode and encode are inverse on every value the C type can hold.
"""
from __future__ import annotations

import math
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import pynetmon
from pynetmon._binding import lib
from pynetmon.btf_codec import ArrayCodec, BTFTypes, BytesCodec, IntCodec, StructCodec, per_cpu_stride

FAST = settings(max_examples=60, deadline=None)


@pytest.fixture(scope="module")
def btf_types():
    with pynetmon.BPFObject.from_package("maptypes") as obj:  # open only: parses ELF and BTF
        yield _Lookup(BTFTypes(obj.btf))


class _Lookup:
    def __init__(self, types: BTFTypes):
        self.types = types

    def __getitem__(self, name: str):
        type_id = lib.btf__find_by_name(self.types.btf, name.encode())
        assert type_id > 0, f"type {name!r} missing from maptypes BTF"
        return self.types.codec(type_id)


# ---- layout: known answers -------------------------------------------------------------------------

def test_flow_key_is_network_order_with_explicit_padding(btf_types):
    codec = btf_types["flow_key"]
    assert isinstance(codec, StructCodec) and codec.size == 16
    key = {"saddr": 0x0A000001, "daddr": 0xC0A80102, "sport": 80, "dport": 0x1F90, "proto": 6, "pad": b""}
    raw = codec.encode(key)
    assert raw == bytes.fromhex("0a000001" "c0a80102" "0050" "1f90" "06" "000000")
    assert codec.decode(raw) == {**key, "pad": b"\0\0\0"}


def test_rich_value_layout(btf_types):
    codec = btf_types["rich_value"]
    assert codec.size == 72
    value = {
        "nested": {"a": 0x0102, "b": -2, "c": [3, 0xFFFFFFFF]},
        "pairs": [{"a": 5, "b": 6, "c": [7, 8]}, {"a": 9, "b": -128, "c": [11, 12]}],
        "name": b"eth0", "verdict": -1, "flag_a": 1, "flag_b": 5, "level": 4000,
        "port": 8080, "addr": 0xC0A80001, "delta": -5, "ratio": 0.5,
    }
    raw = codec.encode(value)
    assert raw[0:12] == struct.pack("<Hbx2I", 0x0102, -2, 3, 0xFFFFFFFF)   # 1 byte of padding after b
    assert raw[12:36] == struct.pack("<Hbx2IHbx2I", 5, 6, 7, 8, 9, -128, 11, 12)
    assert raw[36:44] == b"eth0\0\0\0\0"
    assert raw[44:48] == b"\xff\xff\xff\xff"                          # signed enum
    assert raw[48:50] == (1 | 5 << 1 | 4000 << 4).to_bytes(2, "little")  # three bitfields in 16 bits
    assert raw[50:52] == b"\x1f\x90"                                  # __be16: network order
    assert raw[52:56] == b"\xc0\xa8\x00\x01"                          # __be32
    assert raw[56:64] == struct.pack("<q", -5)
    assert raw[64:68] == struct.pack("<f", 0.5)
    assert raw[68:] == bytes(4)                                       # tail padding
    assert codec.decode(raw) == {**value, "name": b"eth0\0\0\0\0"}


def test_shapes_of_members(btf_types):
    rich = {name: c for name, _, c in btf_types["rich_value"].fields}
    assert isinstance(rich["nested"], StructCodec)
    assert isinstance(rich["pairs"], ArrayCodec) and rich["pairs"].count == 2
    assert isinstance(rich["name"], BytesCodec) and rich["name"].size == 8        # char array → bytes
    assert isinstance(rich["verdict"], IntCodec) and rich["verdict"].signed       # enum with -1
    assert rich["port"].big_endian and rich["addr"].big_endian
    assert not btf_types["flow_stats"].fields[0][2].big_endian
    assert [name for name, _, _ in btf_types["rich_value"].bitfields] == ["flag_a", "flag_b", "level"]
    lpm = {name: c for name, _, c in btf_types["lpm_v4_key"].fields}
    assert isinstance(lpm["addr"], BytesCodec)                                     # __u8[4] is a byte string


def test_missing_fields_encode_as_zero(btf_types):
    assert btf_types["flow_stats"].encode({"packets": 7}) == struct.pack("<QQ", 7, 0)
    assert btf_types["rich_value"].encode({}) == bytes(72)


def test_raw_bytes_of_the_right_size_pass_through(btf_types):
    raw = bytes(range(16))
    assert btf_types["flow_key"].encode(raw) == raw


# ---- errors name what was wrong ---------------------------------------------------------------------

@pytest.mark.parametrize("value, words", [
    ({"packets": 1, "octets": 2}, ["octets", "flow_stats"]),
    ({"packets": -1}, ["-1"]),
    ({"packets": 1 << 64}, [str(1 << 64)]),
    ({"packets": "many"}, ["'many'"]),
    ([1, 2], ["dict", "flow_stats"]),
    (bytes(15), ["16 bytes", "15"]),
])
def test_bad_values_are_refused_with_a_clear_message(btf_types, value, words):
    with pytest.raises(ValueError) as info:
        btf_types["flow_stats"].encode(value)
    for word in words:
        assert word in str(info.value)


@pytest.mark.parametrize("value, words", [
    ({"level": 1 << 12}, ["level", "12 bits", "4096"]),
    ({"name": b"too long!"}, ["9 bytes", "8"]),
    ({"pairs": [{}]}, ["2 items", "got 1"]),
    ({"nested": {"b": 200}}, ["200", "int8"]),
])
def test_bad_members_are_refused(btf_types, value, words):
    with pytest.raises(ValueError) as info:
        btf_types["rich_value"].encode(value)
    for word in words:
        assert word in str(info.value)


# ---- properties -------------------------------------------------------------------------------------

def _u(bits):
    return st.integers(0, (1 << bits) - 1)


def _s(bits):
    return st.integers(-(1 << (bits - 1)), (1 << (bits - 1)) - 1)


_inner = st.fixed_dictionaries({"a": _u(16), "b": _s(8), "c": st.lists(_u(32), min_size=2, max_size=2)})
_rich = st.fixed_dictionaries({
    "nested": _inner, "pairs": st.lists(_inner, min_size=2, max_size=2),
    "name": st.binary(min_size=8, max_size=8), "verdict": _s(32),
    "flag_a": _u(1), "flag_b": _u(3), "level": _u(12), "port": _u(16), "addr": _u(32), "delta": _s(64),
    "ratio": st.floats(width=32, allow_nan=False),
})


@FAST
@given(value=_rich)
def test_rich_value_round_trips(btf_types, value):
    codec = btf_types["rich_value"]
    assert codec.decode(codec.encode(value)) == value


@FAST
@given(raw=st.binary(min_size=16, max_size=16))
def test_every_flow_key_byte_string_round_trips(btf_types, raw):
    codec = btf_types["flow_key"]  # no implicit padding: every byte is a field
    assert codec.encode(codec.decode(raw)) == raw


@FAST
@given(rows=st.lists(st.binary(min_size=72, max_size=72), max_size=20))
def test_decode_many_agrees_with_decode(btf_types, rows):
    codec = btf_types["rich_value"]
    decoded = codec.decode_many(b"".join(rows), len(rows))
    for got, raw in zip(decoded, rows, strict=True):
        expected = codec.build(iter(codec._struct.unpack_from(raw)))
        assert _same(got, expected) and _same(codec.decode(raw), expected)


@FAST
@given(values=st.lists(_u(32), min_size=1, max_size=8), junk=st.binary(min_size=4, max_size=4))
def test_decode_many_with_per_cpu_stride(btf_types, values, junk):
    codec = btf_types["__u32"]
    stride = per_cpu_stride(4)
    assert stride == 8
    data = b"".join(struct.pack("<I", v) + junk for v in values)  # the 4 bytes after each value are not ours
    assert codec.decode_many(data, len(values), stride) == values


@FAST
@given(rows=st.lists(st.fixed_dictionaries({"packets": _u(64), "bytes": _u(64)}), max_size=20))
def test_flat_struct_fast_path_agrees_with_encode(btf_types, rows):
    codec = btf_types["flow_stats"]
    data = b"".join(codec.encode(r) for r in rows)
    assert codec.decode_many(data, len(rows)) == rows


def _same(a, b) -> bool:
    """Equality that treats NaN as equal to itself (random bytes decode to NaN floats)."""
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    return a == b


# ---- compiled batch decoders --------------------------------------------------------------------------

def test_compiled_rows_agree_with_per_value_decode_for_every_type(btf_types):
    import random
    btf = btf_types.types.btf
    rng = random.Random(5)
    checked = 0
    for type_id in range(1, lib.btf__type_cnt(btf)):
        kind = lib.btf_kind(lib.btf__type_by_id(btf, type_id))
        if kind not in (lib.BTF_KIND_INT, lib.BTF_KIND_STRUCT, lib.BTF_KIND_ARRAY, lib.BTF_KIND_TYPEDEF,
                        lib.BTF_KIND_ENUM, lib.BTF_KIND_FLOAT):
            continue
        codec = btf_types.types.codec(type_id)
        if not codec.size:
            continue
        for stride in (codec.size, per_cpu_stride(codec.size) + 8):
            rows = [rng.randbytes(stride) for _ in range(7)]
            data = b"".join(rows)
            # the interpretive path (struct.unpack + per-type build) is the reference
            expected = [codec.build(iter(codec._struct.unpack_from(row))) for row in rows]
            assert _same(codec.decode_many(data, 7, stride), expected), (codec.describe(), stride)
        checked += 1
    assert checked > 20


def test_big_endian_only_structs_unpack_in_one_pass(btf_types):
    from pynetmon.btf_codec import compile_rows
    flow_key = compile_rows(btf_types["flow_key"], 16)
    record = compile_rows(btf_types["flow_record"], 32)
    assert [n for n in flow_key.__globals__ if n.startswith("_vs")] == ["_vs0"]
    assert flow_key.__globals__["_vs0"].format.startswith(">")
    assert sorted(n for n in record.__globals__ if n.startswith("_vs")) == ["_vs0", "_vs1"]  # native + big-endian
    value = {"key": {"saddr": 1, "daddr": 2, "sport": 3, "dport": 4, "proto": 5, "pad": b"\0\0\0"},
             "stats": {"packets": 6, "bytes": 7}}
    assert record(memoryview(btf_types["flow_record"].encode(value) * 2)) == [value, value]


def test_gc_paused_restores_the_collector():
    import gc

    from pynetmon.btf_codec import gc_paused
    assert gc.isenabled()
    with gc_paused():
        assert not gc.isenabled()
        with gc_paused():
            assert not gc.isenabled()
        assert not gc.isenabled()
    assert gc.isenabled()
    with pytest.raises(RuntimeError), gc_paused():
        raise RuntimeError
    assert gc.isenabled()
    with gc_paused(False):
        assert gc.isenabled()


def test_pairs_decoder_equals_keys_and_values_decoded_apart(btf_types):
    import random

    from pynetmon.btf_codec import compile_pairs
    rng = random.Random(5)
    for key_name, value_name in (("flow_key", "flow_stats"), ("flow_record", "rich_value"), ("inner", "flow_key")):
        key, value = btf_types[key_name], btf_types[value_name]
        keys, values = rng.randbytes(key.size * 9), rng.randbytes(value.size * 9)
        pairs = compile_pairs(key, value)
        assert pairs is not None
        expected = [[k, v] for k, v in zip(key.decode_many(keys, 9), value.decode_many(values, 9))]
        got = pairs(memoryview(keys), memoryview(values))
        assert all(type(p) is tuple for p in got)
        assert _same([list(p) for p in got], expected)

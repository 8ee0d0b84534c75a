"""Map.to_numpy() and Map.to_pandas() agree with Map.items() on every map type the core supports
(bpf/maptypes.bpf.c, real maps in the real kernel), and on random struct layouts compiled by clang."""
from __future__ import annotations

import ipaddress
import math
import random

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import pynetmon
from pynetmon.frames.dtype import to_python
from pynetmon.toolchain import compile_c

NCPUS = pynetmon.maps.possible_cpus()
SETTINGS = settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def freeze(value):
    """A hashable, comparable form of a decoded value (random bytes make NaN floats: all the same here)."""
    if isinstance(value, dict):
        return tuple(sorted((k, freeze(v)) for k, v in value.items()))
    if isinstance(value, list):
        return tuple(freeze(v) for v in value)
    if isinstance(value, float) and math.isnan(value):
        return "nan"
    return value


def as_items(m: pynetmon.Map, arr) -> dict:
    """The records of `arr` decoded back to the shapes items() gives, keyed by frozen key."""
    out = {}
    for rec in arr:
        key = to_python(rec["key"], m.key_codec)
        if m.per_cpu:
            value = [to_python(v, m.value_codec) for v in rec["value"]]
        else:
            value = to_python(rec["value"], m.value_codec)
        out[freeze(key)] = freeze(value)
    return out


def fill_random(m: pynetmon.Map, count: int, seed: int) -> None:
    """`count` entries of random bytes (keys distinct; LPM keys with a valid prefix length)."""
    rng = random.Random(seed)
    keys: dict[bytes, bytes] = {}
    value_bytes = m._value_bytes
    while len(keys) < count:
        if m.type in ("array", "percpu_array"):
            key = rng.randrange(m.max_entries).to_bytes(4, "little")
        elif m.type == "lpm_trie":
            key = rng.randrange(33).to_bytes(4, "little") + rng.randbytes(4)
        else:
            key = rng.randbytes(m.key_size)
        value = rng.randbytes(value_bytes)
        if m.per_cpu:  # the padding of each per-CPU slot is not stored by the kernel: keep it zero
            stride = m._stride
            value = b"".join(value[i * stride:i * stride + m.value_size] + bytes(stride - m.value_size)
                             for i in range(m.ncpus))
        keys[key] = value
        if m.type in ("array", "percpu_array") and len(keys) == m.max_entries:
            break
    m.update_batch(keys.items())


MAP_NAMES = ["hash_int", "hash_flows", "hash_rich", "hash_records", "array_int", "array_struct",
             "percpu_hash_int", "percpu_array_struct", "lru_int", "lru_percpu_flows", "lpm_v4"]


@pytest.mark.parametrize("name", MAP_NAMES)
def test_to_numpy_equals_items_on_every_map_type(maptypes, name):
    m = maptypes.maps[name]
    fill_random(m, min(m.max_entries, 60), seed=len(name))
    items = {freeze(k): freeze(v) for k, v in m.items()}
    arr = m.to_numpy()
    assert len(arr) == len(items)
    assert as_items(m, arr) == items
    if m.per_cpu:
        assert arr["value"].shape[1] == NCPUS


@pytest.mark.parametrize("name", ["percpu_hash_int", "percpu_array_struct", "lru_percpu_flows"])
def test_per_cpu_sum_is_the_sum_of_every_cpu(maptypes, name):
    m = maptypes.maps[name]
    fill_random(m, min(m.max_entries, 40), seed=7)
    summed = m.to_numpy(per_cpu="sum")
    assert summed["value"].ndim == 1
    got = {freeze(to_python(r["key"], m.key_codec)): r["value"] for r in summed}
    for key, per_cpu in m.items():
        value = got[freeze(key)]
        if isinstance(per_cpu[0], dict):
            for field in per_cpu[0]:
                assert int(value[field]) == sum(v[field] for v in per_cpu) % (1 << 64)
        else:
            assert int(value) == sum(per_cpu) % (1 << 64)


def test_empty_map_and_one_entry(maptypes):
    m = maptypes.maps["hash_flows"]
    empty = m.to_numpy()
    assert len(empty) == 0 and empty.dtype.names == ("key", "value")
    assert list(m.to_pandas().columns) == ["saddr", "daddr", "sport", "dport", "proto", "pad", "packets", "bytes"]
    m[{"saddr": 0x0A000001, "daddr": 0x0A000002, "sport": 1234, "dport": 443, "proto": 6}] = \
        {"packets": 3, "bytes": 4500}
    one = m.to_numpy()
    assert one["key"]["dport"][0] == 443 and one["key"]["saddr"][0] == 0x0A000001  # big-endian read right
    assert one["value"]["bytes"][0] == 4500


def test_queue_and_stack_are_refused_with_a_reason(maptypes):
    for name in ("queue_int", "stack_struct"):
        with pytest.raises(pynetmon.NotSupportedError, match="pop_items"):
            maptypes.maps[name].to_numpy()


def test_bad_per_cpu_mode_is_named(maptypes):
    with pytest.raises(ValueError, match="per_cpu must be one of"):
        maptypes.maps["percpu_hash_int"].to_numpy(per_cpu="mean")


def test_large_map_grows_its_buffers(maptypes, monkeypatch):
    """More entries than the first buffers hold: the reads continue in grown buffers."""
    import pynetmon.frames.arrays
    monkeypatch.setattr(pynetmon.frames.arrays, "RESERVE_BYTES", 1)  # to_numpy reserves 65,536 entries
    spec = pynetmon.BPFObject.from_package("maptypes")
    spec.maps["hash_int"].set_max_entries(300_000)
    with spec as obj:
        obj.load()
        m = obj.maps["hash_int"]
        n = 250_000
        keys = np.arange(n, dtype="<u4")
        m.update_batch(zip(keys.tolist(), (keys.astype(np.uint64) * 3).tolist()))
        arr = m.read_buffers(expect=10)  # the smallest start: grows many times
        assert arr[2] == n
        got = m.to_numpy()
        assert len(got) == n
        assert np.array_equal(np.sort(got["key"]), keys)
        assert np.all(got["value"] == got["key"].astype(np.uint64) * 3)


# ---- to_pandas ------------------------------------------------------------------------------------

def test_to_pandas_columns_equal_items(maptypes):
    m = maptypes.maps["hash_flows"]
    fill_random(m, 50, seed=3)
    frame = m.to_pandas(addresses={"daddr": "ipv4"})
    assert len(frame) == 50
    by_key = {freeze(k): v for k, v in m.items()}
    for row in frame.itertuples(index=False):
        key = {"saddr": row.saddr, "daddr": int(ipaddress.IPv4Address(row.daddr)), "sport": row.sport,
               "dport": row.dport, "proto": row.proto}
        match = [v for k, v in by_key.items() if all(dict(k)[f] == key[f] for f in key)]
        assert match == [{"packets": row.packets, "bytes": row.bytes}]
    assert frame["sport"].dtype.byteorder in "=|<"  # big-endian fields converted to host order
    assert str(frame["daddr"].dtype) == "category"


def test_to_pandas_index_and_per_cpu(maptypes):
    m = maptypes.maps["percpu_array_struct"]
    m[2] = [{"packets": i + 1, "bytes": 10 * (i + 1)} for i in range(NCPUS)]
    summed = m.to_pandas(index=True)
    assert summed.index.name == "key"
    assert summed.loc[2, "packets"] == sum(range(1, NCPUS + 1))
    axis = m.to_pandas(per_cpu="axis")
    assert list(axis.columns[:3]) == ["key", "cpu0.packets", "cpu0.bytes"]
    assert axis.loc[axis["key"] == 2, f"cpu{NCPUS - 1}.bytes"].item() == 10 * NCPUS


def test_to_pandas_nested_arrays_bitfields_text_and_signed(maptypes):
    m = maptypes.maps["hash_rich"]
    value = {"nested": {"a": 1, "b": -2, "c": [3, 4]}, "pairs": [{"a": 5, "b": 6, "c": [7, 8]}] * 2,
             "name": b"eth0", "verdict": -1, "flag_a": 1, "flag_b": 5, "level": 4000, "port": 8080,
             "addr": 0xC0A80001, "delta": -7, "ratio": 0.5}
    m[9] = value
    row = m.to_pandas(addresses={"addr": "ipv4"}).iloc[0]
    assert row["nested.c[1]"] == 4 and row["pairs[1].c[0]"] == 7 and row["nested.b"] == -2
    assert row["name"] == "eth0" and row["verdict"] == -1 and row["delta"] == -7
    assert (row["flag_a"], row["flag_b"], row["level"]) == (1, 5, 4000)
    assert row["port"] == 8080 and row["addr"] == "192.168.0.1" and row["ratio"] == 0.5
    assert to_python(m.to_numpy()[0]["value"], m.value_codec) == m[9]


def test_unknown_address_kind_is_named(maptypes):
    with pytest.raises(ValueError, match=r"addresses\['saddr'\]: unknown address kind 'ip4'"):
        maptypes.maps["hash_flows"].to_pandas(addresses={"saddr": "ip4"})


def test_missing_extra_names_the_extra(monkeypatch, maptypes):
    import sys
    monkeypatch.setitem(sys.modules, "pandas", None)  # import pandas now fails
    with pytest.raises(pynetmon.errors.MissingExtraError, match=r"pip install 'pynetmon\[data\]'") as info:
        maptypes.maps["hash_int"].to_pandas()
    assert isinstance(info.value, ImportError) and info.value.extra == "data"


# ---- random struct layouts, compiled by clang -----------------------------------------------------

SCALARS = ["__u8", "__u16", "__u32", "__u64", "__s8", "__s16", "__s32", "__s64", "__be16", "__be32",
           "float", "double", "char"]


@st.composite
def c_struct(draw, depth: int = 0) -> str:
    """The body of a random C struct: scalars, arrays, nested structs, bitfields, tagged addresses."""
    fields = []
    for i in range(draw(st.integers(1, 6))):
        kind = draw(st.sampled_from(["scalar", "array", "struct", "bitfield", "address"]
                                    if depth < 2 else ["scalar", "array", "bitfield"]))
        if kind == "scalar":
            fields.append(f"{draw(st.sampled_from(SCALARS))} f{i};")
        elif kind == "array":
            fields.append(f"{draw(st.sampled_from(SCALARS))} f{i}[{draw(st.integers(1, 5))}];")
        elif kind == "struct":
            fields.append(f"struct {{ {draw(c_struct(depth + 1))} }} f{i};")
        elif kind == "bitfield":
            fields.append(f"__u32 f{i} : {draw(st.integers(1, 20))};")
        else:
            ctype, tag = draw(st.sampled_from([("__be32", "ipv4"), ("__u8", "mac"), ("__u8", "ipv6")]))
            dims = {"ipv4": "", "mac": "[6]", "ipv6": "[16]"}[tag]
            fields.append(f'{ctype} f{i}{dims} __attribute__((btf_decl_tag("{tag}")));')
    return " ".join(fields)


PROGRAM = """
#include <linux/types.h>
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
struct key {{ {key} }};
struct value {{ {value} }};
struct {{ __uint(type, BPF_MAP_TYPE_{kind}); __uint(max_entries, 64); __type(key, struct key);
         __type(value, struct value); }} m SEC(".maps");
char LICENSE[] SEC("license") = "GPL";
"""


@SETTINGS
@given(key=c_struct(), value=c_struct(), kind=st.sampled_from(["HASH", "PERCPU_HASH"]),
       seed=st.integers(0, 1 << 30))
def test_random_layouts_agree_with_items(bpf, key, value, kind, seed):
    source = PROGRAM.format(key=key, value=value, kind=kind)
    with pynetmon.BPFObject(compile_c(source, filename="layout.bpf.c"), name="layout") as obj:
        obj.load()
        m = obj.maps["m"]
        fill_random(m, 20, seed)
        items = {freeze(k): freeze(v) for k, v in m.items()}
        assert as_items(m, m.to_numpy()) == items
        frame = m.to_pandas()
        pairs = m.items()  # the same batch order as to_pandas: rows line up
        assert len(frame) == len(pairs)
        for row, (k, v) in zip(frame.to_dict("records"), pairs):
            expected = expected_columns(m, k, v, set(frame.columns))
            assert set(expected) == set(row)
            for column, want in expected.items():
                got = row[column]
                assert got == want or (_isnan(want) and _isnan(got)), (column, got, want)


def expected_columns(m: pynetmon.Map, key, value, columns: set[str]) -> dict:
    """What to_pandas should show for one (key, value) of items(): leaf paths, per-CPU values summed,
    char arrays as text, tagged addresses formatted, key./value. prefixes when the frame has them."""
    out: dict = {}
    prefixed = any(c.startswith("key.") for c in columns) and any(c.startswith("value.") for c in columns)
    for side, codec, data in (("key", m.key_codec, key), ("value", m.value_codec, value)):
        if side == "value" and m.per_cpu:
            data = _sum_cpus(data)
        root = side if not isinstance(data, dict) else (side if prefixed else "")
        _flat(data, codec, root, out, summed=side == "value" and m.per_cpu)
    return out


def _isnan(x) -> bool:
    return isinstance(x, float) and math.isnan(x)


def _sum_cpus(values):
    if isinstance(values[0], dict):
        return {k: _sum_cpus([v[k] for v in values]) for k in values[0]}
    if isinstance(values[0], list):
        return [_sum_cpus([v[i] for v in values]) for i in range(len(values[0]))]
    if isinstance(values[0], float):
        return math.fsum(values) if not any(math.isnan(v) for v in values) else math.nan
    if isinstance(values[0], int):
        return sum(values)  # wrapped to the field's 64-bit type in _flat, which knows its sign
    return values[0]


def _flat(data, codec, path, out, summed, tag=None):
    from pynetmon.btf_codec import ArrayCodec, BytesCodec, FloatCodec, IntCodec, StructCodec
    from pynetmon.frames.table import ADDRESS_KINDS, format_address
    # A summed integer is no longer an address; bytes summed over CPUs are CPU 0's, still one.
    if tag in ADDRESS_KINDS and not (summed and isinstance(data, int)):
        raw = data.to_bytes(4, "big") if isinstance(data, int) else data
        out[path] = format_address(raw, tag)
    elif isinstance(codec, StructCodec):
        for name, sub in data.items():
            field = next((c for n, _, c in codec.fields if n == name), None)
            child = f"{path}.{name}" if path else name
            if field is None:  # a bitfield
                out[child] = sub
            else:
                _flat(sub, field, child, out, summed, codec.tags.get(name))
    elif isinstance(codec, ArrayCodec):
        for i, sub in enumerate(data):
            _flat(sub, codec.elem, f"{path}[{i}]", out, summed)
    elif isinstance(codec, BytesCodec) and codec.text:
        out[path] = data.split(b"\0", 1)[0].decode("utf-8", errors="replace")
    elif isinstance(codec, FloatCodec) and summed:
        out[path] = data
    elif summed and isinstance(codec, IntCodec) and isinstance(data, int):  # 64-bit sums wrap, as documented
        wrapped = data % (1 << 64)
        out[path] = wrapped - (1 << 64) if codec.signed and wrapped >= 1 << 63 else wrapped
    else:
        out[path] = data


def test_html_preview_shows_the_first_entries_only(maptypes):
    m = maptypes.maps["hash_flows"]
    fill_random(m, 60, seed=11)
    page = m._repr_html_()
    assert page.count("<tr>") == 1 + 20  # header + PREVIEW_ROWS entries
    assert "key.saddr" in page and "value.bytes" in page and "first 20 entries shown" in page
    small = maptypes.maps["array_struct"]._repr_html_()  # 16 elements: all shown
    assert small.count("<tr>") == 1 + 16 and "16 entries" in small


def test_iter_batches_reads_every_entry_once_and_can_delete(maptypes):
    m = maptypes.maps["hash_int"]
    m.update_batch((i, i * 7) for i in range(m.max_entries))
    seen = {}
    for keys, values, count in m.iter_batches(delete=True):
        ks = np.frombuffer(keys, "<u4", count)
        vs = np.frombuffer(values, "<u8", count)
        for k, v in zip(ks.tolist(), vs.tolist()):
            assert k not in seen
            seen[k] = v
    assert seen == {i: i * 7 for i in range(m.max_entries)}
    assert len(m) == 0  # read and deleted in the same kernel operations
    lpm = maptypes.maps["lpm_v4"]  # no batch operations: one batch of everything
    lpm[{"prefixlen": 24, "addr": b"\x0a\x00\x00\x00"}] = 5
    assert [count for _, _, count in lpm.iter_batches()] == [1]

"""Property tests: every supported map type is driven with random operations and compared with a Python
model after each step (real maps in the real kernel, from bpf/maptypes.bpf.c).

Hash and array maps must agree with a dict/list exactly, queue and stack with a deque, the LPM trie with a
longest-prefix search over a dict. LRU eviction is approximate in the kernel, so LRU maps are only held to
bounds: never more than max_entries, nothing that was not written, the newest key always present.
"""
from __future__ import annotations

import errno
from collections import deque

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import pynetmon
from pynetmon._binding import lib
from pynetmon.maps import possible_cpus

# The `maptypes` fixture hands every example the same loaded object; each example empties its map first.
MODEL = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
NCPUS = possible_cpus()

u32 = st.integers(0, (1 << 32) - 1)
u64 = st.integers(0, (1 << 64) - 1)


def freeze(value):
    """A hashable form of a decoded key (dicts → sorted tuples)."""
    if isinstance(value, dict):
        return tuple(sorted((k, freeze(v)) for k, v in value.items()))
    if isinstance(value, list):
        return tuple(freeze(v) for v in value)
    return value


def assert_same_as_dict(m: pynetmon.Map, model: dict) -> None:
    items = m.items()
    assert len(items) == len({freeze(k) for k, _ in items}), "a key was returned twice"
    assert {freeze(k): v for k, v in items} == {freeze(k): v for k, v in model.items()}
    assert sorted(map(freeze, m.keys())) == sorted(map(freeze, model))
    assert sorted(map(freeze, m.values())) == sorted(map(freeze, model.values()))
    assert len(m) == len(model)


# ---- hash maps: exact agreement with a dict, including "full" ------------------------------------------

def hash_ops(keys, values):
    return st.lists(st.one_of(
        st.tuples(st.just("set"), keys, values),
        st.tuples(st.just("del"), keys),
        st.tuples(st.just("get"), keys),
        st.tuples(st.just("batch"), st.lists(st.tuples(keys, values), max_size=40)),
        st.tuples(st.just("pop_items")),
        st.tuples(st.just("clear")),
    ), max_size=50)


def run_hash_model(m: pynetmon.Map, ops, normalize=lambda v: v) -> None:
    m.clear()
    model: dict = {}
    frozen = {}  # freeze(key) → key as given, so dict keys can be dicts

    def present(k):
        return freeze(k) in frozen

    for op in ops:
        if op[0] == "set":
            _, k, v = op
            if present(k) or len(frozen) < m.max_entries:
                m[k] = v
                frozen[freeze(k)] = normalize(v)
            else:
                with pytest.raises(pynetmon.MapFullError):
                    m[k] = v
        elif op[0] == "del":
            if present(op[1]):
                del m[op[1]]
                del frozen[freeze(op[1])]
            else:
                with pytest.raises(pynetmon.MapKeyError) as info:
                    del m[op[1]]
                assert info.value.errno == errno.ENOENT
        elif op[0] == "get":
            k = op[1]
            assert (k in m) == present(k)
            assert m.get(k, "missing") == frozen.get(freeze(k), "missing")
            if not present(k):
                with pytest.raises(KeyError):
                    m[k]
        elif op[0] == "batch":
            pairs = op[1]
            # The kernel writes a batch in order and stops at the first entry that does not fit.
            expected, overflow = dict(frozen), False
            for k, v in pairs:
                if freeze(k) not in expected and len(expected) >= m.max_entries:
                    overflow = True
                    break
                expected[freeze(k)] = normalize(v)
            if overflow:
                with pytest.raises(pynetmon.MapFullError):
                    m.update_batch(pairs)
            else:
                m.update_batch(pairs)
            frozen = expected
        elif op[0] == "pop_items":
            popped = m.pop_items()
            assert {freeze(k): v for k, v in popped} == frozen
            frozen = {}
        elif op[0] == "clear":
            m.clear()
            frozen = {}
    model = {k: v for k, v in frozen.items()}
    items = m.items()
    assert {freeze(k): v for k, v in items} == model
    assert len(items) == len(model) == len(m)
    assert sorted(freeze(k) for k in m.keys()) == sorted(model)  # noqa: SIM118


@MODEL
@given(ops=hash_ops(st.integers(0, 99), u64))
def test_hash_int_agrees_with_dict(maptypes, ops):
    run_hash_model(maptypes.maps["hash_int"], ops)


flow_keys = st.fixed_dictionaries({
    "saddr": st.sampled_from([0x0A000001, 0x0A000002, 0xC0A80001]),
    "daddr": st.sampled_from([0x0A000003, 0xFFFFFFFF]),
    "sport": st.sampled_from([0, 80, 443, 65535]),
    "dport": st.integers(1000, 1015),
    "proto": st.sampled_from([6, 17]),
    "pad": st.just(b"\0\0\0"),
})
flow_stats = st.fixed_dictionaries({"packets": u64, "bytes": u64})


@MODEL
@given(ops=hash_ops(flow_keys, flow_stats))
def test_hash_with_struct_keys_and_values_agrees_with_dict(maptypes, ops):
    run_hash_model(maptypes.maps["hash_flows"], ops)


per_cpu_u32 = st.one_of(u32, st.lists(u32, min_size=NCPUS, max_size=NCPUS))


def per_cpu(v):
    return v if isinstance(v, list) else [v] * NCPUS  # a scalar is written to every CPU's slot


@MODEL
@given(ops=hash_ops(st.integers(0, 99), per_cpu_u32))
def test_percpu_hash_agrees_with_dict_of_per_cpu_lists(maptypes, ops):
    run_hash_model(maptypes.maps["percpu_hash_int"], ops, normalize=per_cpu)


@MODEL
@given(ops=hash_ops(st.binary(min_size=8, max_size=8), st.binary(min_size=8, max_size=8)))
def test_map_without_btf_agrees_with_dict_of_bytes(bpf, ops):
    m = pynetmon.Map.create("hash", 8, 8, 32, name="model_bytes")
    try:
        assert type(m.key_codec).__name__ == "BytesCodec"
        run_hash_model(m, ops)
    finally:
        m.close()


# ---- arrays: fixed keys, values start at zero, delete is refused ---------------------------------------

def array_ops(values, size: int):
    return st.lists(st.one_of(
        st.tuples(st.just("set"), st.integers(0, size + 3), values),
        st.tuples(st.just("del"), st.integers(0, size - 1)),
        st.tuples(st.just("batch"), st.lists(st.tuples(st.integers(0, size - 1), values), max_size=8)),
        st.tuples(st.just("pop_items")),
        st.tuples(st.just("clear")),
    ), max_size=40)


def run_array_model(m: pynetmon.Map, ops, zero, normalize=lambda v: v) -> None:
    m.clear()
    model = [zero] * m.max_entries
    for op in ops:
        if op[0] == "set":
            _, k, v = op
            if k < m.max_entries:
                m[k] = v
                model[k] = normalize(v)
            else:  # the kernel answers E2BIG for an index past the end
                with pytest.raises(pynetmon.BPFError) as info:
                    m[k] = v
                assert info.value.errno == errno.E2BIG
                with pytest.raises(pynetmon.MapKeyError):
                    m[k]
                assert k not in m
        elif op[0] == "del":
            with pytest.raises(pynetmon.BPFError) as info:
                del m[op[1]]
            assert info.value.errno == errno.EINVAL
        elif op[0] == "batch":
            m.update_batch(op[1])
            for k, v in op[1]:
                model[k] = normalize(v)
        elif op[0] == "pop_items":
            assert m.pop_items() == list(enumerate(model))
            model = [zero] * m.max_entries
        elif op[0] == "clear":
            m.clear()
            model = [zero] * m.max_entries
    assert m.items() == list(enumerate(model))
    assert m.keys() == list(range(m.max_entries))
    assert m.values() == model
    assert len(m) == m.max_entries
    assert all(m[k] == model[k] for k in range(m.max_entries))


@MODEL
@given(ops=array_ops(u64, 16))
def test_array_agrees_with_list(maptypes, ops):
    run_array_model(maptypes.maps["array_int"], ops, 0)


@MODEL
@given(ops=array_ops(flow_stats, 16))
def test_array_of_structs_agrees_with_list(maptypes, ops):
    run_array_model(maptypes.maps["array_struct"], ops, {"packets": 0, "bytes": 0})


@MODEL
@given(ops=array_ops(st.one_of(flow_stats, st.lists(flow_stats, min_size=NCPUS, max_size=NCPUS)), 8))
def test_percpu_array_agrees_with_list_of_per_cpu_lists(maptypes, ops):
    run_array_model(maptypes.maps["percpu_array_struct"], ops, [{"packets": 0, "bytes": 0}] * NCPUS,
                    normalize=per_cpu)


# ---- queue and stack: order ----------------------------------------------------------------------------

def queue_ops(values):
    return st.lists(st.one_of(
        st.tuples(st.just("push"), values, st.booleans()),
        st.tuples(st.just("pop")),
        st.tuples(st.just("peek")),
    ), max_size=60)


def run_queue_model(m: pynetmon.Map, ops, lifo: bool) -> None:
    m.clear()
    model: deque = deque()
    take = model.pop if lifo else model.popleft
    for op in ops:
        if op[0] == "push":
            _, v, replace = op
            if len(model) < m.max_entries:
                m.push(v)
            elif replace:  # BPF_EXIST on a full queue/stack overwrites the oldest element
                m.push(v, lib.BPF_EXIST)
                model.popleft()
            else:
                with pytest.raises(pynetmon.MapFullError):
                    m.push(v)
                continue
            model.append(v)
        elif op[0] in ("pop", "peek"):
            if not model:
                with pytest.raises(pynetmon.MapKeyError):
                    getattr(m, op[0])()
            elif op[0] == "pop":
                assert m.pop() == take()
            else:
                assert m.peek() == (model[-1] if lifo else model[0])
    expected = list(reversed(model)) if lifo else list(model)
    assert m.pop_items() == expected
    with pytest.raises(pynetmon.MapKeyError):
        m.pop()


@MODEL
@given(ops=queue_ops(u32))
def test_queue_is_fifo(maptypes, ops):
    run_queue_model(maptypes.maps["queue_int"], ops, lifo=False)


@MODEL
@given(ops=queue_ops(flow_stats))
def test_stack_of_structs_is_lifo(maptypes, ops):
    run_queue_model(maptypes.maps["stack_struct"], ops, lifo=True)


def test_queue_refuses_whole_map_reads(maptypes):
    q = maptypes.maps["queue_int"]
    q.push(1)
    with pytest.raises(pynetmon.NotSupportedError):
        q.items()
    with pytest.raises(pynetmon.NotSupportedError):
        q.keys()
    assert q.pop_items() == [1]


# ---- LRU: bounds only ----------------------------------------------------------------------------------

def run_lru_bounds(m: pynetmon.Map, writes, deletes_every: int, normalize=lambda v: v) -> None:
    m.clear()
    written: dict = {}
    for i, (k, v) in enumerate(writes):
        if deletes_every and i % deletes_every == deletes_every - 1:
            if k in m:
                del m[k]
            written.pop(freeze(k), None)
            assert k not in m
            continue
        m[k] = v
        written[freeze(k)] = normalize(v)
        assert m[k] == normalize(v), "the key just written must be present"
        items = m.items()
        assert len(items) <= m.max_entries
        assert len({freeze(k) for k, _ in items}) == len(items)
        for key, value in items:
            assert written.get(freeze(key)) == value, "a key that was never written (or a stale value)"


@MODEL
@given(writes=st.lists(st.tuples(st.integers(0, 999), u64), max_size=300), deletes_every=st.sampled_from([0, 7]))
def test_lru_hash_stays_within_bounds(maptypes, writes, deletes_every):
    run_lru_bounds(maptypes.maps["lru_int"], writes, deletes_every)


@settings(MODEL, max_examples=15)
@given(writes=st.lists(st.tuples(flow_keys, per_cpu_u32), max_size=200))
def test_lru_percpu_hash_stays_within_bounds(maptypes, writes):
    run_lru_bounds(maptypes.maps["lru_percpu_flows"], writes, 0, normalize=per_cpu)


def test_lru_evicts_instead_of_failing(maptypes):
    m = maptypes.maps["lru_int"]
    for k in range(4 * m.max_entries):
        m[k] = k  # a plain hash would raise MapFullError after max_entries
    assert 0 < len(m) <= m.max_entries
    assert m[4 * m.max_entries - 1] == 4 * m.max_entries - 1


# ---- LPM trie: longest-prefix match ------------------------------------------------------------------

def masked(addr: int, prefixlen: int) -> int:
    return addr & ~((1 << (32 - prefixlen)) - 1) & 0xFFFFFFFF if prefixlen else 0


prefixes = st.builds(lambda base, plen: (masked(base, plen), plen),
                     st.sampled_from([0x0A000000, 0x0A010000, 0x0A010200, 0x0A0102FF, 0xC0A80000]),
                     st.sampled_from([0, 8, 16, 24, 32]))


def lpm_key(addr: int, plen: int) -> dict:
    return {"prefixlen": plen, "addr": addr.to_bytes(4, "big")}


@MODEL
@given(ops=st.lists(st.one_of(st.tuples(st.just("set"), prefixes, u32), st.tuples(st.just("del"), prefixes)),
                    max_size=30),
       probes=st.lists(st.sampled_from([0x0A000001, 0x0A010203, 0x0A0102FF, 0x0B000000, 0xC0A80101]), max_size=5))
def test_lpm_trie_finds_longest_prefix(maptypes, ops, probes):
    m = maptypes.maps["lpm_v4"]
    m.clear()
    model: dict[tuple[int, int], int] = {}
    for op in ops:
        (addr, plen) = op[1]
        if op[0] == "set":
            m[lpm_key(addr, plen)] = op[2]
            model[(addr, plen)] = op[2]
        elif (addr, plen) in model:
            del m[lpm_key(addr, plen)]
            del model[(addr, plen)]
        else:
            with pytest.raises(pynetmon.MapKeyError):
                del m[lpm_key(addr, plen)]
    for probe in probes:
        matches = [(plen, v) for (addr, plen), v in model.items() if masked(probe, plen) == addr]
        expected = max(matches)[1] if matches else None
        assert m.get(lpm_key(probe, 32)) == expected
    # No batch operations for tries: the whole-map read falls back to key-by-key iteration.
    assert {(int.from_bytes(k["addr"], "big"), k["prefixlen"]): v for k, v in m.items()} == model
    assert len(m) == len(model)

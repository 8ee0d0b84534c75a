"""Map behaviour beyond the model tests: identity, errors, what BPF programs write, concurrent readers and
writers, batch fallbacks, and agreement with an independent reader (bpftool)."""
from __future__ import annotations

import errno
import json
import random
import struct
import subprocess
import threading

import pytest

import pynetmon
import pynetmon.maps
from pynetmon._binding import lib
from pynetmon.btf_codec import IntCodec
from pynetmon.maps import possible_cpus

EXPECTED = {  # name: (type, key_size, value_size, max_entries)
    "hash_int": ("hash", 4, 8, 64),
    "hash_flows": ("hash", 16, 16, 64),
    "hash_rich": ("hash", 4, 72, 64),
    "hash_records": ("hash", 4, 32, 64),
    "array_int": ("array", 4, 8, 16),
    "array_struct": ("array", 4, 16, 16),
    "percpu_hash_int": ("percpu_hash", 4, 4, 64),
    "percpu_array_struct": ("percpu_array", 4, 16, 8),
    "lru_int": ("lru_hash", 4, 8, 128),
    "lru_percpu_flows": ("lru_percpu_hash", 16, 8, 128),
    "queue_int": ("queue", 0, 4, 16),
    "stack_struct": ("stack", 0, 16, 16),
    "lpm_v4": ("lpm_trie", 8, 4, 64),
}


def test_maps_describe_themselves(maptypes):
    assert {name: (m.type, m.key_size, m.value_size, m.max_entries) for name, m in maptypes.maps.items()} == EXPECTED
    for m in maptypes.maps.values():
        assert m.id > 0 and m.fd >= 0
        assert m.name in repr(m) and m.type in repr(m)


def test_missing_key_is_a_key_error_with_errno(maptypes):
    m = maptypes.maps["hash_flows"]
    key = {"saddr": 1, "daddr": 2, "sport": 3, "dport": 4, "proto": 17}
    with pytest.raises(KeyError) as info:
        m[key]
    assert isinstance(info.value, pynetmon.MapKeyError) and isinstance(info.value, pynetmon.Error)
    assert info.value.errno == errno.ENOENT
    assert "hash_flows" in str(info.value) and "'dport': 4" in str(info.value)
    assert m.get(key) is None and m.get(key, 0) == 0


def test_bad_keys_and_values_name_the_problem(maptypes):
    flows, per_cpu = maptypes.maps["hash_flows"], maptypes.maps["percpu_hash_int"]
    with pytest.raises(ValueError, match="'port'.*fields are"):
        flows[{"port": 1}] = {}
    with pytest.raises(ValueError, match="field sport: 70000 does not fit in uint16"):
        flows[{"sport": 70000}] = {}
    with pytest.raises(ValueError, match=f"needs {possible_cpus()} values"):
        per_cpu[1] = [1] * (possible_cpus() + 1)
    with pytest.raises(ValueError, match="expected 4 bytes"):
        maptypes.maps["hash_int"][b"\0\0"] = 1
    assert len(flows) == 0 and len(per_cpu) == 0  # nothing was written


def test_update_flags(maptypes):
    m = maptypes.maps["hash_int"]
    m.update(1, 10, lib.BPF_NOEXIST)
    with pytest.raises(pynetmon.BPFError) as info:
        m.update(1, 11, lib.BPF_NOEXIST)
    assert info.value.errno == errno.EEXIST and "hash_int" in str(info.value)
    with pytest.raises(pynetmon.BPFError) as info:
        m.update(2, 20, lib.BPF_EXIST)
    assert info.value.errno == errno.ENOENT
    assert dict(m.items()) == {1: 10}


def test_full_hash_refuses_new_keys_but_updates_old_ones(maptypes):
    m = maptypes.maps["hash_int"]
    m.update_batch((k, k) for k in range(m.max_entries))
    with pytest.raises(pynetmon.MapFullError):
        m[m.max_entries] = 0
    m[0] = 99
    with pytest.raises(pynetmon.MapFullError, match="batch update"):
        m.update_batch([(1, 1), (1000, 1), (2, 2)])
    assert m[0] == 99 and len(m) == m.max_entries


def test_values_written_by_a_program_decode(maptypes):
    prog = maptypes.programs["record"]
    sizes = {}
    for i, key in enumerate([7, 7, 9, 1 << 31, 7]):
        packet = struct.pack("<I", key) + bytes(60 + i)
        assert prog.test_run(packet).retval == 0  # TC_ACT_OK
        sizes.setdefault(key, []).append(len(packet))
    assert dict(maptypes.maps["hash_int"].items()) == {k: len(v) for k, v in sizes.items()}
    per_cpu = maptypes.maps["percpu_hash_int"]
    for key, lengths in sizes.items():
        slots = per_cpu[key]
        assert len(slots) == possible_cpus()
        assert sum(slots) == sum(lengths)  # each run added on the CPU it ran on
    assert maptypes.maps["queue_int"].pop_items() == [64, 65, 66, 67, 68]


def test_program_runs_many_times_and_the_queue_keeps_the_newest(maptypes):
    prog = maptypes.programs["record"]
    run = prog.test_run(struct.pack("<I", 3) + bytes(60), repeat=1000)
    assert run.retval == 0
    assert maptypes.maps["hash_int"][3] == 1000
    assert sum(maptypes.maps["percpu_hash_int"][3]) == 64 * 1000
    # BPF_EXIST: a full queue drops its oldest element, so exactly max_entries remain
    assert maptypes.maps["queue_int"].pop_items() == [64] * 16


def test_keys_of_arrays_and_their_length(maptypes):
    m = maptypes.maps["array_struct"]
    assert isinstance(m.key_codec, IntCodec)
    assert m.keys() == list(range(16)) and len(m) == 16
    m[3] = {"packets": 1}
    assert m.values()[3] == {"packets": 1, "bytes": 0}
    assert 15 in m and 16 not in m


def test_read_raw_is_packed_keys_and_values(maptypes):
    m = maptypes.maps["hash_int"]
    m.update_batch((k, k * 3) for k in range(10))
    keys, values, count = m.read_raw()
    assert count == 10 and len(keys) == 40 and len(values) == 80
    pairs = dict(zip(struct.unpack("<10I", keys), struct.unpack("<10Q", values)))
    assert pairs == {k: k * 3 for k in range(10)}
    keys, values, count = m.read_raw(delete=True)
    assert count == 10 and len(m) == 0


def test_per_cpu_batch_values_keep_cpu_order(maptypes):
    m = maptypes.maps["percpu_hash_int"]
    n = possible_cpus()
    m.update_batch((k, [k * 100 + cpu for cpu in range(n)]) for k in range(20))
    for k, slots in m.items():
        assert slots == [k * 100 + cpu for cpu in range(n)]
    assert sorted(m.pop_items()) == [(k, [k * 100 + cpu for cpu in range(n)]) for k in range(20)]
    assert len(m) == 0


def test_wrapping_a_map_by_fd(maptypes):
    original = maptypes.maps["hash_flows"]
    original[{"sport": 1}] = {"packets": 2}
    fd = lib.bpf_map_get_fd_by_id(original.id)
    assert fd >= 0
    wrapped = pynetmon.Map.from_fd(fd, owned=True)
    try:
        assert (wrapped.name, wrapped.type, wrapped.key_size, wrapped.value_size, wrapped.max_entries) == \
            ("hash_flows", "hash", 16, 16, 64)
        [(key, value)] = wrapped.items()  # no BTF given: bytes
        assert key == original.key_codec.encode({"sport": 1}) and value == struct.pack("<QQ", 2, 0)
    finally:
        wrapped.close()
    with pytest.raises(ValueError, match="closed"):
        _ = wrapped.fd


def test_map_create_refuses_unknown_types(bpf):
    with pytest.raises(ValueError, match="unknown map type 'hashmap'.*lru_hash"):
        pynetmon.Map.create("hashmap", 4, 4, 1)


def test_maps_of_a_closed_object_refuse_use(bpf):
    obj = pynetmon.BPFObject.from_package("maptypes").load()
    m = obj.maps["hash_int"]
    obj.close()
    with pytest.raises(ValueError, match="closed"):
        m[1] = 1


# ---- batch reads under pressure -------------------------------------------------------------------------

@pytest.fixture
def big_hash(bpf):
    m = pynetmon.Map.create("hash", 4, 8, 8192, name="pressure", key_codec=IntCodec(4), value_codec=IntCodec(8))
    yield m
    m.close()


def test_batch_smaller_than_a_bucket_grows_instead_of_failing(big_hash, monkeypatch):
    big_hash.update_batch((k, k) for k in range(5000))
    monkeypatch.setattr(pynetmon.maps, "DEFAULT_BATCH", 1)  # any bucket with 2 entries answers ENOSPC
    assert dict(big_hash.items()) == {k: k for k in range(5000)}
    assert sorted(big_hash.pop_items()) == [(k, k) for k in range(5000)]
    assert len(big_hash) == 0


@pytest.mark.parametrize("batch", [True, False], ids=["batch", "key-by-key"])
def test_reading_while_another_thread_writes_never_raises_or_repeats(big_hash, batch):
    if not batch:  # take the path of map types without batch operations (BPF_MAP_GET_NEXT_KEY walk)
        big_hash._batch_ok = False
    stable = range(3000)
    churn = range(100_000, 104_000)
    big_hash.update_batch((k, k) for k in stable)
    stop = threading.Event()
    errors: list[BaseException] = []

    def writer():
        rng = random.Random(1)
        try:
            while not stop.is_set():
                k = rng.choice(churn)
                if rng.random() < 0.5:
                    try:
                        big_hash[k] = k
                    except pynetmon.MapFullError:
                        pass
                else:
                    big_hash.get(k)
                    try:
                        del big_hash[k]
                    except KeyError:
                        pass
        except BaseException as exc:  # noqa: BLE001 - reported by the main thread
            errors.append(exc)

    threads = [threading.Thread(target=writer) for _ in range(2)]
    for t in threads:
        t.start()
    try:
        for _ in range(30 if batch else 6):  # a key-by-key read of 3000+ entries is ~10k syscalls
            items = big_hash.items()
            keys = [k for k, _ in items]
            assert len(keys) == len(set(keys)), "a key was returned twice"
            assert set(stable) <= set(keys), "a key nobody touched went missing"
            assert set(keys) <= set(stable) | set(churn)
            assert all(k == v for k, v in items)
            walked = big_hash.keys()
            assert len(walked) == len(set(walked)) and set(walked) <= set(stable) | set(churn)
            assert set(stable) <= set(walked)
            assert len(stable) <= len(big_hash) <= len(stable) + len(churn)
    finally:
        stop.set()
        for t in threads:
            t.join()
    assert not errors, errors


# ---- an independent reader agrees --------------------------------------------------------------------

def bpftool_dump(m: pynetmon.Map) -> list[dict]:
    out = subprocess.run(["bpftool", "-j", "map", "dump", "id", str(m.id)], capture_output=True, text=True,
                         check=True).stdout
    # bpftool 7.1 cannot format BTF floats and writes a bare "(unsupported-kind" into its JSON
    return json.loads(out.replace("(unsupported-kind", "null"))


def raw(hex_bytes: list[str]) -> bytes:
    return bytes(int(b, 16) for b in hex_bytes)


def test_bpftool_sees_the_bytes_we_encode(maptypes):
    m = maptypes.maps["hash_rich"]
    value = {"nested": {"a": 1, "b": -2, "c": [3, 4]}, "pairs": [{"a": 5}, {"b": -6}], "name": b"eth0",
             "verdict": -1, "flag_a": 1, "flag_b": 6, "level": 4095, "port": 8080, "addr": 0xC0A80001,
             "delta": -(1 << 40), "ratio": 1.5}
    m[42] = value
    [entry] = bpftool_dump(m)
    assert raw(entry["key"]) == struct.pack("<I", 42)
    assert raw(entry["value"]) == m.value_codec.encode(value)
    formatted = entry["formatted"]["value"]  # bpftool's own BTF decoding
    assert formatted["nested"] == {"a": 1, "b": -2, "c": [3, 4]}
    assert formatted["name"] == "eth0" and formatted["verdict"] == "VERDICT_NEGATIVE"
    assert int(formatted["level"], 16) == 4095 and int(formatted["flag_b"], 16) == 6
    assert formatted["port"] == int.from_bytes((8080).to_bytes(2, "big"), "little")  # bpftool shows raw order
    assert formatted["delta"] == -(1 << 40)


def test_bpftool_and_items_agree_on_struct_keys(maptypes):
    m = maptypes.maps["hash_flows"]
    rng = random.Random(7)
    m.update_batch(({"saddr": rng.getrandbits(32), "sport": rng.getrandbits(16), "proto": 6},
                    {"packets": i, "bytes": rng.getrandbits(64)}) for i in range(50))
    ours = {m.key_codec.encode(k): m.value_codec.encode(v) for k, v in m.items()}
    theirs = {raw(e["key"]): raw(e["value"]) for e in bpftool_dump(m)}
    assert ours == theirs and len(ours) == 50

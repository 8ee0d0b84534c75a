"""Typed access to kernel maps: lookup/update/delete, iteration, batch reads and queue/stack operations.

Whole-map reads use BPF_MAP_LOOKUP_BATCH (and LOOKUP_AND_DELETE_BATCH for `pop_items`) where the map
type supports it, and fall back to key-by-key iteration elsewhere. A map that other CPUs modify while it
is read never makes a read raise or loop: ENOSPC (a hash bucket larger than the batch) grows the batch,
and keys that vanish between "next key" and "lookup" are skipped.
"""
from __future__ import annotations

import errno
import os
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Any

from ._binding import check, ffi, lib
from .btf_codec import BytesCodec, Codec, IntCodec, compile_pairs, gc_paused, per_cpu_stride
from .errors import ENOTSUPP, ClosedError, Error, MapKeyError, NotSupportedError, error_from_errno

if TYPE_CHECKING:  # the optional `pynetmon[data]` extra: imported by the methods that need it
    import numpy
    import pandas

MAP_TYPE_NAMES = {getattr(lib, n): n[len("BPF_MAP_TYPE_"):].lower() for n in dir(lib) if n.startswith("BPF_MAP_TYPE_")}
PER_CPU_TYPES = {"percpu_hash", "percpu_array", "lru_percpu_hash", "percpu_cgroup_storage"}
# Types whose whole content batch calls read; the hash family's batch reads can also delete what they read.
DELETABLE_BATCH_TYPES = frozenset({"hash", "percpu_hash", "lru_hash", "lru_percpu_hash"})
BATCH_TYPES = DELETABLE_BATCH_TYPES | {"array", "percpu_array"}
# How bpf() says that a map type has no batch operations (or not this one).
NO_BATCH_ERRNOS = (errno.EINVAL, errno.EOPNOTSUPP, ENOTSUPP)
ARRAY_TYPES = {"array", "percpu_array", "prog_array", "perf_event_array", "cgroup_array", "array_of_maps"}
KEYLESS_TYPES = {"queue", "stack", "bloom_filter", "ringbuf", "user_ringbuf"}
DEFAULT_BATCH = 65536           # entries per batch call at most ...
BATCH_BUFFER_BYTES = 4 << 20    # ... and at most this much key+value buffer (per-CPU values on big machines)
_WALK_RESTARTS = 16             # whole walks a key-by-key read may take when keys vanish under it
MIN_BATCH = 256


def possible_cpus() -> int:
    return lib.libbpf_num_possible_cpus()


_placeholder: int | None = None


def _placeholder_fd() -> int:
    """A descriptor of /dev/null, dup2()ed over the descriptors of closed maps (see Map.close)."""
    global _placeholder
    if _placeholder is None:
        _placeholder = os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)
    return _placeholder


class Map:
    """A live kernel map. Created by `BPFObject.load()` or `Map.from_fd()`.

    >>> counts = obj.maps["counts"]
    >>> counts[0] += 1            # int keys/values decoded from BTF
    >>> dict(counts.items())      # one batch syscall per few thousand entries
    """

    def __init__(self, fd: int, name: str, type_id: int, key_size: int, value_size: int, max_entries: int,
                 key_codec: Codec | None = None, value_codec: Codec | None = None, *, flags: int = 0,
                 owned_fd: bool = False) -> None:
        self._fd = fd
        self.name = name
        self.type_id = type_id
        self.type = MAP_TYPE_NAMES.get(type_id, f"type_{type_id}")
        self.key_size = key_size
        self.value_size = value_size
        self.max_entries = max_entries
        self.flags = flags
        self.key_codec = key_codec or BytesCodec(key_size)
        self.value_codec = value_codec or BytesCodec(value_size)
        self.per_cpu = self.type in PER_CPU_TYPES
        self.ncpus = possible_cpus() if self.per_cpu else 1
        self._stride = per_cpu_stride(value_size) if self.per_cpu else value_size
        self._value_bytes = self._stride * self.ncpus
        self._owned_fd = owned_fd
        self._retired = False
        self._batch_ok: bool | None = None if self.type in BATCH_TYPES else False

    # ---- construction ---------------------------------------------------------------------------
    @classmethod
    def from_fd(cls, fd: int, key_codec: Codec | None = None, value_codec: Codec | None = None,
                *, owned: bool = False) -> Map:
        """Wrap an existing map file descriptor (its properties are read from the kernel)."""
        info = ffi.new("struct bpf_map_info *")
        size = ffi.new("__u32 *", ffi.sizeof("struct bpf_map_info"))
        check(lib.bpf_obj_get_info_by_fd(fd, info, size), "BPF_OBJ_GET_INFO_BY_FD on map")
        return cls(fd, ffi.string(info.name).decode(), info.type, info.key_size, info.value_size,
                   info.max_entries, key_codec, value_codec, flags=info.map_flags, owned_fd=owned)

    @classmethod
    def create(cls, type: str, key_size: int, value_size: int, max_entries: int, name: str = "",
               key_codec: Codec | None = None, value_codec: Codec | None = None) -> Map:
        """Create a new map owned by this process (freed when closed or garbage collected)."""
        type_id = {v: k for k, v in MAP_TYPE_NAMES.items()}.get(type)
        if type_id is None:
            raise ValueError(f"unknown map type {type!r}; known: {sorted(MAP_TYPE_NAMES.values())}")
        fd = check(lib.bpf_map_create(type_id, name.encode()[:15] or ffi.NULL, key_size, value_size,
                                      max_entries, ffi.NULL), f"creating {type} map {name!r}")
        return cls(fd, name, type_id, key_size, value_size, max_entries, key_codec, value_codec, owned_fd=True)

    @property
    def fd(self) -> int:
        if self._fd < 0 or self._retired:
            raise ClosedError(f"map {self.name!r} is closed")
        return self._fd

    @property
    def id(self) -> int:
        """The kernel's id of the map (as `bpftool map show` lists it)."""
        info = ffi.new("struct bpf_map_info *")
        size = ffi.new("__u32 *", ffi.sizeof("struct bpf_map_info"))
        check(lib.bpf_obj_get_info_by_fd(self.fd, info, size), f"get info of map {self.name!r}")
        return info.id

    def close(self) -> None:
        """Release the map. Later calls raise ClosedError. A call another thread has already begun
        fails with a pynetmon.Error too, and can never reach another map: the descriptor number is
        pointed at /dev/null rather than closed, and freed only when this object is freed (no thread can
        still hold the number then), so it cannot be reused meanwhile for a new map."""
        if self._owned_fd and self._fd >= 0 and not self._retired:
            os.dup2(_placeholder_fd(), self._fd, inheritable=False)
        self._retired = True

    def __del__(self) -> None:
        if getattr(self, "_owned_fd", False) and self._fd >= 0:
            try:
                os.close(self._fd)
            except Exception:  # noqa: BLE001, S110 - interpreter shutdown
                pass
            self._fd = -1

    def __repr__(self) -> str:
        return (f"<Map {self.name!r} {self.type} key={self.key_size}B value={self.value_size}B "
                f"max_entries={self.max_entries}>")

    # ---- encoding -------------------------------------------------------------------------------
    def _key(self, key: Any) -> Any:
        if self.type in KEYLESS_TYPES:
            return ffi.NULL
        return ffi.from_buffer(self.key_codec.encode(key))

    def _value_out(self) -> Any:
        return ffi.new("uint8_t[]", max(self._value_bytes, 1))

    def _decode_value(self, buf) -> Any:
        if not self.per_cpu:
            return self.value_codec.decode(ffi.buffer(buf, self.value_size))
        return self.value_codec.decode_many(ffi.buffer(buf, self._value_bytes), self.ncpus, self._stride)

    def _encode_value(self, value: Any) -> bytes:
        if not self.per_cpu:
            return self.value_codec.encode(value)
        if isinstance(value, (bytes, bytearray)) and len(value) == self._value_bytes:
            return bytes(value)
        if not isinstance(value, (list, tuple)):
            value = [value] * self.ncpus  # one value for every CPU
        if len(value) != self.ncpus:
            raise ValueError(f"per-CPU map {self.name!r} needs {self.ncpus} values (one per possible CPU)")
        pad = bytes(self._stride - self.value_size)
        return b"".join(self.value_codec.encode(v) + pad for v in value)

    # ---- single elements ------------------------------------------------------------------------
    def lookup(self, key: Any) -> Any:
        """The value for `key`; raises MapKeyError (a KeyError with `.errno`) when there is none."""
        out = self._value_out()
        ret = lib.bpf_map_lookup_elem(self.fd, self._key(key), out)
        if ret < 0:
            if -ret == errno.ENOENT:
                raise MapKeyError(key, self.name)
            check(ret, f"lookup in map {self.name!r}")
        return self._decode_value(out)

    __getitem__ = lookup

    def get(self, key: Any, default: Any = None) -> Any:
        try:
            return self.lookup(key)
        except MapKeyError:
            return default

    def update(self, key: Any, value: Any, flags: int = 0) -> None:
        """Set `key` to `value` (flags: BPF_ANY, BPF_NOEXIST, BPF_EXIST)."""
        check(lib.bpf_map_update_elem(self.fd, self._key(key), ffi.from_buffer(self._encode_value(value)), flags),
              f"update in map {self.name!r}")

    def __setitem__(self, key: Any, value: Any) -> None:
        self.update(key, value)

    def delete(self, key: Any) -> None:
        ret = lib.bpf_map_delete_elem(self.fd, self._key(key))
        if ret < 0:
            if -ret == errno.ENOENT:
                raise MapKeyError(key, self.name)
            check(ret, f"delete from map {self.name!r}")

    __delitem__ = delete

    def __contains__(self, key: Any) -> bool:
        ret = lib.bpf_map_lookup_elem(self.fd, self._key(key), self._value_out())
        if ret < 0 and -ret != errno.ENOENT:
            check(ret, f"lookup in map {self.name!r}")
        return ret == 0

    # ---- queue / stack --------------------------------------------------------------------------
    def push(self, value: Any, flags: int = 0) -> None:
        """Queue/stack: add a value (flags=BPF_EXIST makes a full queue drop its oldest element)."""
        check(lib.bpf_map_update_elem(self.fd, ffi.NULL, ffi.from_buffer(self._encode_value(value)), flags),
              f"push to map {self.name!r}")

    def pop(self) -> Any:
        """Queue/stack: remove and return the next value; MapKeyError when empty."""
        out = self._value_out()
        ret = lib.bpf_map_lookup_and_delete_elem(self.fd, ffi.NULL, out)
        if ret < 0:
            if -ret == errno.ENOENT:
                raise MapKeyError(None, self.name)
            check(ret, f"pop from map {self.name!r}")
        return self._decode_value(out)

    def peek(self) -> Any:
        out = self._value_out()
        ret = lib.bpf_map_lookup_elem(self.fd, ffi.NULL, out)
        if ret < 0:
            if -ret == errno.ENOENT:
                raise MapKeyError(None, self.name)
            check(ret, f"peek at map {self.name!r}")
        return self._decode_value(out)

    # ---- whole-map operations -------------------------------------------------------------------
    def keys(self) -> list:
        if self.type in ARRAY_TYPES:
            if isinstance(self.key_codec, IntCodec):
                return list(range(self.max_entries))
            return [k for k, _ in self.items()]
        if self.type in KEYLESS_TYPES:
            raise NotSupportedError(f"map {self.name!r} ({self.type}) has no keys")
        if self._batch_ok is not False:  # one batch call per many keys beats one syscall per key
            out: list = []
            for keys, _, count in self.iter_batches():
                out += self.key_codec.decode_many(keys, count)
            return out
        return [self.key_codec.decode(ffi.buffer(k, self.key_size)) for k in self._iter_raw_keys()]

    def __iter__(self) -> Iterator:
        return iter(self.keys())

    def values(self) -> list:
        if self.type in ("queue", "stack"):
            raise NotSupportedError(f"values of a {self.type} map are read by pop(); use pop_items()")
        if self.per_cpu:
            return [v for _, v in self.items()]
        out: list = []  # only the values are decoded, batch by batch
        with gc_paused(self.max_entries >= 10_000):
            for _, values, count in self.iter_batches():
                out += self.value_codec.decode_many(values, count)
        return out

    def items(self) -> list[tuple[Any, Any]]:
        """Every (key, value) pair, read with batch lookups where the kernel has them."""
        pairs = None if self.per_cpu else self._pairs_decoder()
        if pairs is None:
            keys, values, count = self.read_raw()
            return self._decode_pairs(keys, values, count)
        # Decoded batch by batch from a buffer still in the CPU's cache: no packed copy of the whole map.
        out: list[tuple[Any, Any]] = []
        with gc_paused(self.max_entries >= 10_000):  # millions of small containers: see gc_paused
            for keys, values, _ in self.iter_batches():
                out += pairs(keys, values)
        return out

    def __len__(self) -> int:
        if self.type in ARRAY_TYPES:
            return self.max_entries
        if self.type in ("queue", "stack"):
            raise NotSupportedError(f"the kernel does not report the length of a {self.type} map")
        if self._batch_ok is not False:
            return self.read_raw()[2]
        return sum(1 for _ in self._iter_raw_keys())

    # ---- arrays and tables (the optional `pynetmon[data]` extra) -----------------------------------
    def to_numpy(self, per_cpu: str = "axis") -> numpy.ndarray:
        """Every entry as a NumPy structured array with fields `key` and `value`, dtypes from BTF.

        Nested structs are nested fields, C arrays subarrays, big-endian fields read as host-order
        numbers, char arrays `S` strings. Per-CPU values get an extra axis of one value per possible CPU
        (`per_cpu="axis"`) or are summed field by field (`per_cpu="sum"`). The kernel's batch reads fill
        NumPy buffers directly: no Python object is made per entry.

        >>> flows = m.to_numpy()
        >>> flows["value"]["bytes"].sum(), flows["key"]["dport"][:5]
        """
        from .frames.arrays import map_to_numpy
        return map_to_numpy(self, per_cpu)

    def to_pandas(self, per_cpu: str = "sum", index: bool = False,
                  addresses: dict[str, str] | None = None) -> pandas.DataFrame:
        """Every entry as a pandas DataFrame: one column per key and value field (nested names joined
        with "."), `index=True` makes the key columns a (Multi)Index. Big-endian fields are host-order
        numbers, char arrays text, and fields declared addresses (a BTF decl tag "ipv4", "ipv6" or "mac"
        on the struct member, or `addresses={"saddr": "ipv4"}` by column name) are shown as addresses.
        Per-CPU values are summed (`per_cpu="sum"`) or one column per CPU (`per_cpu="axis"`).
        """
        from .frames.table import map_to_pandas
        return map_to_pandas(self, per_cpu=per_cpu, index=index, addresses=addresses)

    def _repr_html_(self) -> str:
        from .frames.html import map_html
        return map_html(self)

    def _decode_pairs(self, keys: bytes, values: bytes, count: int) -> list[tuple[Any, Any]]:
        with gc_paused(count >= 10_000):  # millions of small containers: see gc_paused
            if not self.per_cpu and count:
                pairs = self._pairs_decoder()
                if pairs is not None:  # one pass over both buffers, no key and value lists to zip
                    return pairs(memoryview(keys)[:count * self.key_size],
                                 memoryview(values)[:count * self.value_size])
            ks = self.key_codec.decode_many(keys, count)
            if self.per_cpu:
                vs_flat = self.value_codec.decode_many(values, count * self.ncpus, self._stride)
                n = self.ncpus
                vs = [vs_flat[i * n:(i + 1) * n] for i in range(count)]
            else:
                vs = self.value_codec.decode_many(values, count)
            return list(zip(ks, vs))

    def _pairs_decoder(self) -> Callable[[Any, Any], list] | None:
        if not hasattr(self, "_pairs"):
            self._pairs = compile_pairs(self.key_codec, self.value_codec) \
                if self.key_codec.size == self.key_size and self.value_codec.size == self.value_size else None
        return self._pairs

    def read_raw(self, delete: bool = False) -> tuple[bytes, bytes, int]:
        """Every entry as (packed keys, packed values, count): the fastest whole-map read.

        With `delete=True`, entries are read and removed in one kernel operation per batch
        (BPF_MAP_LOOKUP_AND_DELETE_BATCH), so an increment can never fall between read and delete.
        """
        if self._batch_ok is not False and (not delete or self.type in DELETABLE_BATCH_TYPES):
            result = self._read_batch(delete, bytearray, None)
            if result is not None:
                keys, values, count = result
                return (bytes(memoryview(keys)[:count * self.key_size]),
                        bytes(memoryview(values)[:count * self._value_bytes]), count)
        return self._read_iterating(delete)

    def read_buffers(self, delete: bool = False, alloc: Callable[[int], Any] = bytearray,
                     expect: int | None = None) -> tuple[Any, Any, int]:
        """Every entry as (keys, values, count) in two writable buffers that the kernel fills directly.

        `alloc(nbytes)` makes a buffer (`bytearray`, or `numpy.empty(n, numpy.uint8)` whose untouched
        pages cost nothing); the first `count * key_size` bytes of keys and `count * value bytes` of
        values are the entries, the rest is spare room. `expect` is the number of entries to make room
        for at first (default: a few batches; buffers grow by doubling). Map types without batch
        operations are read key by key and copied in.
        """
        if self._batch_ok is not False and (not delete or self.type in DELETABLE_BATCH_TYPES):
            result = self._read_batch(delete, alloc, expect)
            if result is not None:
                return result
        keys, values, count = self._read_iterating(delete)
        kbuf, vbuf = alloc(max(len(keys), 1)), alloc(max(len(values), 1))
        memoryview(kbuf).cast("B")[:len(keys)] = keys
        memoryview(vbuf).cast("B")[:len(values)] = values
        return kbuf, vbuf, count

    def iter_batches(self, delete: bool = False) -> Iterator[tuple[Any, Any, int]]:
        """Every entry, one batch at a time: (keys, values, count) as buffers of packed keys and values.

        The buffers are reused from batch to batch (copy what you keep before the next step), so memory
        stays at one batch however big the map, and the kernel writes into memory that is already in the
        CPU's cache. Map types without batch operations give all their entries as one batch.
        """
        if self._batch_ok is not False and (not delete or self.type in DELETABLE_BATCH_TYPES):
            ksize, vsize = self.key_size, self._value_bytes
            staging: list = [0, None, None]  # capacity in entries, key buffer, value buffer

            def place(batch: int, _total: int):
                if batch > staging[0]:
                    staging[:] = [batch, ffi.new("uint8_t[]", batch * ksize), ffi.new("uint8_t[]", batch * vsize)]
                return staging[1], staging[2]

            try:
                for n in self._batches(delete, place):
                    yield ffi.buffer(staging[1], n * ksize), ffi.buffer(staging[2], n * vsize), n
                return
            except _NoBatch:
                pass
        keys, values, count = self._read_iterating(delete)
        if count:
            yield memoryview(keys), memoryview(values), count

    def _read_batch(self, delete: bool, alloc: Callable[[int], Any], expect: int | None) -> tuple[Any, Any, int] | None:
        ksize, vsize = self.key_size, self._value_bytes
        # The kernel writes each batch straight into its place in the result: no chunks to join. Room for
        # a whole batch is kept free before every call (a map changing under the read can return more
        # entries than max_entries, and a hash bucket larger than the batch doubles it).
        first_batch = self._batch_size()
        capacity = max(expect if expect is not None else min(max(self.max_entries, 1), 3 * first_batch), 1) \
            + first_batch
        state = [capacity, alloc(capacity * ksize), alloc(capacity * vsize)]
        state += [_writable(state[1]), _writable(state[2])]

        def place(batch: int, total: int):
            capacity, _, _, kptr, vptr = state
            if capacity - total < batch:
                capacity = max(2 * capacity, total + batch)
                keys, kptr = _grown(alloc, kptr, total * ksize, capacity * ksize)
                values, vptr = _grown(alloc, vptr, total * vsize, capacity * vsize)
                state[:] = [capacity, keys, values, kptr, vptr]
            return kptr + total * ksize, vptr + total * vsize

        try:
            total = sum(self._batches(delete, place))
        except _NoBatch:
            return None
        return state[1], state[2], total

    def _batch_size(self) -> int:
        # Fewer, larger calls: the per-call cost dominates below a few thousand entries.
        per_entry = self.key_size + self._value_bytes
        return min(max(self.max_entries, 1), DEFAULT_BATCH, max(MIN_BATCH, BATCH_BUFFER_BYTES // per_entry))

    def _batches(self, delete: bool, place: Callable[[int, int], tuple[Any, Any]]) -> Iterator[int]:
        """The batch lookup loop: before each call, `place(batch, entries so far)` says where the kernel
        writes (key and value pointers with room for `batch` entries); yields each call's count. Raises
        _NoBatch when the kernel has no batch operations for this map (before anything was read)."""
        fn = lib.bpf_map_lookup_and_delete_batch if delete else lib.bpf_map_lookup_batch
        batch = self._batch_size()
        token_size = max(self.key_size, 8)
        in_tok = ffi.new("uint8_t[]", token_size)
        out_tok = ffi.new("uint8_t[]", token_size)
        opts = ffi.new("struct bpf_map_batch_opts *", {"sz": ffi.sizeof("struct bpf_map_batch_opts")})
        count = ffi.new("__u32 *")
        total = 0
        first = True
        while True:
            kptr, vptr = place(batch, total)
            count[0] = batch
            ret = fn(self.fd, ffi.NULL if first else in_tok, out_tok, kptr, vptr, count, opts)
            err = -ret if ret < 0 else 0
            if err == errno.ENOSPC and count[0] == 0:
                batch *= 2  # one hash bucket holds more entries than the batch: grow and retry
                continue
            if err in NO_BATCH_ERRNOS and first and total == 0:
                self._batch_ok = False
                raise _NoBatch
            if err and err not in (errno.ENOENT, errno.ENOSPC):
                check(ret, f"batch {'lookup-and-delete' if delete else 'lookup'} on map {self.name!r}")
            if count[0]:
                total += count[0]
                yield count[0]
            if err == errno.ENOENT:
                break
            if err == errno.ENOSPC:
                batch *= 2
            ffi.memmove(in_tok, out_tok, token_size)
            first = False
        self._batch_ok = True

    def _iter_raw_keys(self) -> Iterator:
        """Keys via BPF_MAP_GET_NEXT_KEY. If the current key is deleted concurrently, the kernel restarts
        from the first key; a seen-set keeps that from repeating keys, and a bound of 16 whole walks keeps
        it from looping. Running out of that bound is an error, never a silently shortened walk (which
        would drop keys nobody touched)."""
        cur = ffi.new("uint8_t[]", self.key_size)
        nxt = ffi.new("uint8_t[]", self.key_size)
        seen: set[bytes] = set()
        prev = ffi.NULL
        limit = _WALK_RESTARTS * (self.max_entries + 16)
        steps = 0
        while True:
            if steps >= limit:
                raise Error(f"map {self.name!r} changed too fast to walk key by key "
                            f"({_WALK_RESTARTS} restarts of the walk); read it with batch operations")
            steps += 1
            ret = lib.bpf_map_get_next_key(self.fd, prev, nxt)
            if ret < 0:
                if -ret == errno.ENOENT:
                    return
                check(ret, f"iterating map {self.name!r}")
            raw = ffi.buffer(nxt, self.key_size)[:]
            ffi.memmove(cur, nxt, self.key_size)
            prev = cur
            if raw in seen:
                continue
            seen.add(raw)
            yield cur

    def _read_iterating(self, delete: bool) -> tuple[bytes, bytes, int]:
        if self.type in ("queue", "stack"):
            return self._drain_queue(delete)
        keys, values = [], []
        out = self._value_out()
        all_keys = [ffi.buffer(k, self.key_size)[:] for k in self._iter_raw_keys()]
        for raw in all_keys:
            kp = ffi.from_buffer(raw)
            ret = (lib.bpf_map_lookup_and_delete_elem(self.fd, kp, out) if delete and self.type not in ARRAY_TYPES
                   else lib.bpf_map_lookup_elem(self.fd, kp, out))
            if ret < 0:
                if -ret == errno.ENOENT:
                    continue  # deleted since we saw it
                if delete and -ret in NO_BATCH_ERRNOS:
                    ret = lib.bpf_map_lookup_elem(self.fd, kp, out)
                    if ret == 0:
                        lib.bpf_map_delete_elem(self.fd, kp)
                if ret < 0:
                    check(ret, f"reading map {self.name!r}")
            keys.append(raw)
            values.append(ffi.buffer(out, self._value_bytes)[:])
        return b"".join(keys), b"".join(values), len(keys)

    def _drain_queue(self, delete: bool) -> tuple[bytes, bytes, int]:
        if not delete:
            raise NotSupportedError(f"a {self.type} map cannot be read without popping; use pop_items()")
        values = []
        out = self._value_out()
        for _ in range(self.max_entries):
            ret = lib.bpf_map_lookup_and_delete_elem(self.fd, ffi.NULL, out)
            if ret < 0:
                if -ret == errno.ENOENT:
                    break
                check(ret, f"pop from map {self.name!r}")
            values.append(ffi.buffer(out, self._value_bytes)[:])
        return b"", b"".join(values), len(values)

    def pop_items(self) -> list:
        """Read and remove every entry.

        Hash maps: BPF_MAP_LOOKUP_AND_DELETE_BATCH, atomic per entry. Queue/stack: values in pop order
        (a list of values, not pairs). Arrays cannot delete: their elements are read and then reset to
        zero, so an increment that lands between the read and the reset of an element is lost.
        """
        if self.type in ("queue", "stack"):
            _, values, count = self._drain_queue(True)
            if self.per_cpu:
                raise NotSupportedError("per-CPU queues do not exist")
            return self.value_codec.decode_many(values, count)
        if self.type in ARRAY_TYPES:
            keys, values, count = self.read_raw()
            zero = bytes(self._value_bytes) * count
            self._update_batch_raw(keys, zero, count)
            return self._decode_pairs(keys, values, count)
        keys, values, count = self.read_raw(delete=True)
        return self._decode_pairs(keys, values, count)

    def clear(self) -> None:
        """Remove every entry (arrays: reset every element to zero; queues/stacks: pop everything)."""
        if self.type in ("queue", "stack"):
            self._drain_queue(True)
        elif self.type in ARRAY_TYPES:
            keys, _, count = self.read_raw()
            self._update_batch_raw(keys, bytes(self._value_bytes) * count, count)
        else:
            self.read_raw(delete=True)

    def update_batch(self, pairs: Iterable[tuple[Any, Any]], flags: int = 0) -> None:
        """Set many entries with BPF_MAP_UPDATE_BATCH (falling back to one update per entry)."""
        keys, values, n = bytearray(), bytearray(), 0
        for k, v in pairs:
            keys += self.key_codec.encode(k)
            values += self._encode_value(v)
            n += 1
        self._update_batch_raw(bytes(keys), bytes(values), n, flags)

    def _update_batch_raw(self, keys: bytes, values: bytes, count: int, flags: int = 0) -> None:
        if not count:
            return
        if self._batch_ok is not False:
            opts = ffi.new("struct bpf_map_batch_opts *", {"sz": ffi.sizeof("struct bpf_map_batch_opts"),
                                                           "elem_flags": flags})
            done = 0
            while done < count:
                n = ffi.new("__u32 *", count - done)
                ret = lib.bpf_map_update_batch(self.fd, ffi.from_buffer(keys[done * self.key_size:]),
                                               ffi.from_buffer(values[done * self._value_bytes:]), n, opts)
                done += n[0]
                if ret < 0:
                    if -ret in NO_BATCH_ERRNOS and done == 0:
                        break
                    raise error_from_errno(-ret, f"batch update on map {self.name!r}",
                                           f"{done} of {count} entries written")
            else:
                return
        for i in range(count):
            check(lib.bpf_map_update_elem(self.fd, ffi.from_buffer(keys[i * self.key_size:(i + 1) * self.key_size]),
                                          ffi.from_buffer(values[i * self._value_bytes:(i + 1) * self._value_bytes]),
                                          flags), f"update in map {self.name!r}")


def _writable(buf):
    return ffi.from_buffer("uint8_t[]", buf, require_writable=True)


def _grown(alloc: Callable[[int], Any], old, used: int, size: int):
    """A new buffer of `size` bytes from `alloc` holding the first `used` bytes of `old` (a cdata)."""
    new = alloc(size)
    ptr = _writable(new)
    ffi.memmove(ptr, old, used)
    return new, ptr


class _NoBatch(Exception):  # a private signal, never seen outside this module
    """The kernel has no batch operations for this map: read it key by key."""

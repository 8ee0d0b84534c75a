"""What swap-on-read flips have collected from one map and no read has returned yet (for non-emptying reads:
everything): the running totals, per key, of the periods collected so far.

Folding a period into the totals adds numbers (fields of structs and elements of arrays and per-CPU lists
one by one) and keeps the newest value of anything that is not a number (`fold`). Two implementations:

* `RawTotals`, for values made of numbers only (integers and floats, in structs, arrays, per-CPU slots:
  counters and histograms, the usual case). It works on the batch buffers themselves: a period that
  arrives while nothing is pending is kept as its raw bytes (an emptying read then decodes exactly what a
  plain read decodes); otherwise each period is unpacked into a flat list of numbers with one `struct` or
  `memoryview` call, lined up with the totals' rows by key bytes, and added element-wise (`map(add, ...)`),
  so no Python code runs per entry. Values are decoded once, when a read asks for them.
* `DecodedTotals`, for everything else (booleans, char arrays, big-endian fields, bitfields): periods are
  decoded from BTF and folded value by value with `fold`.

Totals are Python integers: they never wrap, whatever the C type's width (they are packed with 64-bit
fields to be decoded, and decoded one by one beyond that).
"""
from __future__ import annotations

import operator
import struct
from array import array
from collections.abc import Callable
from itertools import chain, repeat
from typing import Any

from ..btf_codec import ArrayCodec, Codec, FloatCodec, IntCodec, StructCodec, per_cpu_stride
from ..maps import Map

_INT_CODES = frozenset("BHIQbhiq")
_KEY_CODES = {1: "B", 2: "H", 4: "I", 8: "Q"}   # keys of these sizes are identified by an int, not bytes


def fold(total: Any, delta: Any) -> Any:
    """Add one period's value to the running total: numbers add, dicts and lists add member by member,
    anything else takes the newest value (booleans), or the newest one written (char arrays: all zero
    bytes mean the period did not write it, as in the other CPUs' slots of a per-CPU entry).

    >>> fold({"packets": 3, "last": b"a"}, {"packets": 2, "last": b"b"})
    {'packets': 5, 'last': b'b'}
    """
    if isinstance(delta, bool) or isinstance(total, bool):
        return delta
    if isinstance(delta, (int, float)) and isinstance(total, (int, float)):
        return total + delta
    if isinstance(delta, dict) and isinstance(total, dict):
        return {k: fold(total[k], v) if k in total else v for k, v in delta.items()}
    if isinstance(delta, list) and isinstance(total, list) and len(delta) == len(total):
        return [fold(t, d) for t, d in zip(total, delta)]
    if isinstance(delta, (bytes, bytearray)) and not any(delta):
        return total  # an all-zero char array: this period (or this CPU) did not write it
    return delta


def folder_for(sample: Any) -> Callable[[Any, Any], Any]:
    """The fastest correct `fold` for values shaped like `sample` (every value of a map has one shape):
    a C-level add for integers, one dict comprehension for flat numeric structs, `fold` otherwise."""
    if isinstance(sample, bool):
        return fold
    if isinstance(sample, (int, float)):
        return operator.add
    if isinstance(sample, dict) and all(type(v) in (int, float) for v in sample.values()):
        fields = tuple(sample)
        return lambda total, delta: {f: total[f] + delta[f] for f in fields}
    if isinstance(sample, list) and sample:
        inner = folder_for(sample[0])
        if inner is not fold and all(type(v) is type(sample[0]) for v in sample):
            return lambda total, delta: list(map(inner, total, delta))
    return fold


def summable(codec: Codec) -> bool:
    """True when every leaf of `codec` is a native-order integer or a float (what `RawTotals` can add)."""
    if isinstance(codec, IntCodec):
        return codec.fmt in _INT_CODES and not codec.big_endian and not codec.is_bool
    if isinstance(codec, FloatCodec):
        return codec.fmt in ("f", "d")
    if isinstance(codec, StructCodec):
        return not codec.bitfields and bool(codec.fields) and all(summable(c) for _, _, c in codec.fields)
    if isinstance(codec, ArrayCodec):
        return codec.count > 0 and summable(codec.elem)
    return False


def widened(codec: Codec) -> Codec:
    """The same shape with every leaf 8 bytes wide and no padding: the layout totals are packed in to be
    decoded (a total can outgrow its C type: a u32 counter summed over many periods)."""
    if isinstance(codec, IntCodec):
        return codec if codec.size == 8 else IntCodec(8, signed=codec.signed)
    if isinstance(codec, FloatCodec):
        return codec if codec.size == 8 else FloatCodec(8)
    if isinstance(codec, ArrayCodec):
        return ArrayCodec(widened(codec.elem), codec.count)
    assert isinstance(codec, StructCodec)
    fields, offset = [], 0
    for name, _, member in codec.fields:
        wide = widened(member)
        fields.append((name, offset, wide))
        offset += wide.size
    return StructCodec(codec.name, offset, fields)


def totals_for(m: Map) -> RawTotals | DecodedTotals:
    """The running totals for swap-on-read map `m`: raw when its values are numbers only."""
    kind = RawTotals if summable(m.value_codec) else DecodedTotals
    return kind(m.key_codec, m.value_codec, m.ncpus, per_cpu=True) if m.per_cpu else kind(m.key_codec, m.value_codec)


def _slices(buf: bytes, size: int, count: int) -> list[bytes]:
    """`buf` cut into `count` pieces of `size` bytes, without a Python loop."""
    return list(map(buf.__getitem__, map(slice, range(0, count * size, size), range(size, count * size + 1, size))))


class RawTotals:
    """Running totals of a map whose values are numbers only, kept as flat lists of Python numbers.

    Rows are keys in first-seen order; `_flat` holds each row's leaves (per CPU, then field by field)."""

    def __init__(self, key_codec: Codec, value_codec: Codec, slots: int = 1, *, per_cpu: bool = False):
        """`slots`: values per entry (a per-CPU map's possible CPUs, each value padded to 8 bytes)."""
        self.key_size = key_codec.size
        self.key_codec = key_codec
        self.value_codec = value_codec
        self.slots = slots
        self.slot_size = per_cpu_stride(value_codec.size) if per_cpu else value_codec.size
        fmt = value_codec.fmt
        pad = self.slot_size - struct.calcsize("=" + fmt)
        self._slot_struct = struct.Struct("=" + fmt + (f"{pad}x" if pad else ""))
        # Values that are one C type repeated and unpadded unpack with a memoryview cast (fastest).
        codes = {c for c in fmt if not c.isdigit()}
        self._cast = next(iter(codes)) if len(codes) == 1 and not pad else None
        self.leaves = len(self._slot_struct.unpack(bytes(self.slot_size))) * self.slots
        self._wide = widened(value_codec)
        self._wide_code = self._wide.fmt[0] if len(set(self._wide.fmt)) == 1 else None
        self._pack_cache: tuple[int, struct.Struct] | None = None
        self._key_code = _KEY_CODES.get(self.key_size)
        self._zero_leaves = [0] * self.leaves
        self.clear()

    def clear(self) -> None:
        """Forget everything (an emptying read returned it)."""
        self._pending: tuple[bytes, bytes, int] | None = None  # the only period since the last clear, as read
        self._rows: dict[Any, int] = {}     # key identity (int or bytes) → row
        self._idents: list[Any] = []        # key identity per row
        self._keys = b""                    # packed keys, row order
        self._decoded_keys: list[Any] = []  # decoded keys, row order (filled when a read asks)
        self._flat: list = []               # totals: `leaves` numbers per row
        self._gather: dict[bytes, list[int]] = {}  # key order → gather index (see _absorb)

    def __len__(self) -> int:
        return self._pending[2] if self._pending else len(self._rows)

    def add(self, keys: bytes, values: bytes, count: int) -> None:
        """Fold in one period read from the idle instance: `count` packed keys and values."""
        if not count:
            return
        if self._pending is None and not self._rows:
            self._pending = (keys, values, count)  # nothing to add it to: decode it only if a read asks
            return
        if self._pending is not None:
            pending, self._pending = self._pending, None
            self._absorb(*pending)
        self._absorb(keys, values, count)

    def columns(self) -> tuple[list, list]:
        """(keys, values) decoded, in first-seen order of the keys."""
        if self._pending is not None:
            keys, values, count = self._pending
            return self.key_codec.decode_many(keys, count), self._decode(values, count, self.value_codec)
        if len(self._decoded_keys) < len(self._rows):
            done = len(self._decoded_keys)
            self._decoded_keys += self.key_codec.decode_many(self._keys[done * self.key_size:],
                                                             len(self._rows) - done)
        rows = len(self._rows)
        return list(self._decoded_keys), self._decode(self._pack(rows), rows, self._wide, self._flat)

    # ---- folding ----------------------------------------------------------------------------------------
    def _identities(self, keys: bytes, count: int) -> Any:
        if self._key_code:
            return memoryview(keys).cast(self._key_code).tolist()  # type: ignore[call-overload]  # a str code
        return _slices(keys, self.key_size, count)

    def _unpack(self, values: bytes) -> list:
        if self._cast:
            return memoryview(values).cast(self._cast).tolist()  # type: ignore[call-overload]  # a str code
        return list(chain.from_iterable(self._slot_struct.iter_unpack(values)))

    def _absorb(self, keys: bytes, values: bytes, count: int) -> None:
        period = self._unpack(values)
        if not self._rows:
            idents = self._identities(keys, count)
            self._rows = dict(zip(idents, range(count)))
            if len(self._rows) == count:  # (a batch never repeats a key; if it did, take the general path)
                self._idents, self._keys, self._flat = idents, keys, period
                return
            self._rows = {}
        if keys == self._keys:  # the same keys in the same order as the totals: add element-wise
            self._flat = list(map(operator.add, self._flat, period))
            return
        # Each instance has its own hash seed, so the two alternate between two key orders: the gather
        # index of a key order is kept while the rows stay the same.
        index = self._gather.get(keys)
        if index is None:
            index = self._gather_index(keys, count)
            if len(self._gather) >= 4:
                self._gather.clear()
            self._gather[keys] = index
        period += self._zero_leaves  # where the index points for keys this period does not have
        self._flat = list(map(operator.add, self._flat, map(period.__getitem__, index)))

    def _gather_index(self, keys: bytes, count: int) -> list[int]:
        """For each leaf of the totals, the position of the matching leaf in the period's unpacked values
        (`count * leaves` and on: zeros, for keys the period does not have). New keys become new rows."""
        idents = self._identities(keys, count)
        where = dict(zip(idents, range(count)))
        rows = self._rows
        positions = list(map(where.get, self._idents, repeat(count)))
        if len(rows) - positions.count(count) < len(where):  # the period has keys the totals do not
            new = list(dict.fromkeys(ident for ident in idents if ident not in rows))
            size = self.key_size
            rows.update(zip(new, range(len(rows), len(rows) + len(new))))
            self._idents += new
            self._keys += b"".join(keys[where[k] * size:(where[k] + 1) * size] for k in new)
            self._flat += [0] * (self.leaves * len(new))
            positions += map(where.__getitem__, new)
            self._gather.clear()  # computed for fewer rows
        n = self.leaves
        if n == 1:
            return list(positions)
        starts = list(map(operator.mul, positions, repeat(n)))
        index = starts * n
        for leaf in range(n):  # one C-level pass per leaf, never one Python step per entry
            index[leaf::n] = map(operator.add, starts, repeat(leaf)) if leaf else starts
        return index

    # ---- decoding ---------------------------------------------------------------------------------------
    def _pack(self, rows: int) -> bytes | None:
        """The totals packed in the widened layout; None when a total does not fit in 64 bits."""
        try:
            if self._wide_code:
                return array(self._wide_code, self._flat).tobytes()
            slots = rows * self.slots
            if self._pack_cache is None or self._pack_cache[0] != slots:
                self._pack_cache = (slots, struct.Struct("=" + self._wide.fmt * slots))
            return self._pack_cache[1].pack(*self._flat)
        except (OverflowError, struct.error):
            return None

    def _decode(self, values: bytes | None, count: int, codec: Codec, flat: list | None = None) -> list:
        n = self.slots
        if values is None:  # beyond 64 bits: build each value from its numbers (slower, never wraps)
            assert flat is not None  # the caller passes the numbers instead of the bytes
            it = iter(flat)
            decoded = [codec.build(it) for _ in range(count * n)]
        else:
            stride = codec.size if codec is self._wide else self.slot_size
            decoded = codec.decode_many(values, count * n, stride)
        if n == 1:
            return decoded
        return [decoded[i * n:(i + 1) * n] for i in range(count)]


class DecodedTotals:
    """Running totals of a map with values that are not numbers only: decoded keys and folded values in
    first-seen order, by key identity (the integer key itself, or the raw key bytes for struct keys,
    which decode to unhashable dicts)."""

    def __init__(self, key_codec: Codec, value_codec: Codec, slots: int = 1, *, per_cpu: bool = False):
        self.key_size = key_codec.size
        self.key_codec = key_codec
        self.value_codec = value_codec
        self.slots = slots
        self.slot_size = per_cpu_stride(value_codec.size) if per_cpu else value_codec.size
        self.keys: dict[Any, Any] = {}
        self.values: dict[Any, Any] = {}
        self._fold: Callable[[Any, Any], Any] | None = None

    def add(self, raw_keys: bytes, raw_values: bytes, count: int) -> None:
        """Decode one period and fold it in."""
        if not count:
            return
        keys = self.key_codec.decode_many(raw_keys, count)
        n = self.slots
        flat = self.value_codec.decode_many(raw_values, count * n, self.slot_size)
        values = flat if n == 1 else [flat[i * n:(i + 1) * n] for i in range(count)]
        if type(keys[0]) is int:
            ids = keys
        else:
            size = self.key_size
            ids = [raw_keys[i:i + size] for i in range(0, count * size, size)]
        totals = self.values
        if not totals:
            totals.update(zip(ids, values))
        else:
            add = self._fold or folder_for(values[0])
            self._fold = add
            get = totals.get
            for ident, value in zip(ids, values):
                total = get(ident)
                totals[ident] = value if total is None else add(total, value)
        if ids is not keys:
            self.keys.update(zip(ids, keys))  # same order as `values`: new keys are appended to both

    def columns(self) -> tuple[list, list]:
        """(keys, values) decoded, in first-seen order of the keys."""
        values = list(self.values.values())
        keys = list(self.keys.values()) if self.keys else list(self.values)
        return keys, values

    def clear(self) -> None:
        """Forget everything (an emptying read returned it)."""
        self.keys = {}
        self.values = {}

    def __len__(self) -> int:
        return len(self.values)

"""Codecs between the bytes of map keys/values and Python shapes, built from the object's BTF.

C integers and enums → `int` (big-endian typedefs such as `__be16`/`__be32` are shown in host order),
floats → `float`, structs → `dict` by field name (nested), arrays → `list` (char arrays → `bytes`),
anything without a meaningful shape (unions, unknown types) → `bytes`. Encoding accepts the same shapes
back, and always accepts `bytes` of the right size.

Each codec compiles to one `struct` format plus a small builder, so a whole batch buffer is decoded
with `struct.iter_unpack` instead of byte-by-byte Python code.
"""
from __future__ import annotations

import contextlib
import gc
import struct
from collections.abc import Callable, Iterator
from typing import Any

from ._binding import ffi, lib

_INT_FORMATS = {1: "B", 2: "H", 4: "I", 8: "Q"}
_BIG_ENDIAN_TYPEDEFS = {"__be16", "__be32", "__be64"}


def _swap(value: int, size: int) -> int:
    return int.from_bytes(value.to_bytes(size, "little"), "big")


class Codec:
    """Decode/encode one C type. `fmt` is a `struct` format (native order, no implicit padding)."""

    size: int
    fmt: str
    # Number of values the format produces; the builder consumes exactly that many from an iterator.
    def build(self, it: Iterator[Any]) -> Any:
        raise NotImplementedError

    def flatten(self, obj: Any, out: list) -> None:
        raise NotImplementedError

    @property
    def _struct(self) -> struct.Struct:
        s = self.__dict__.get("_compiled")
        if s is None:
            s = self.__dict__["_compiled"] = struct.Struct("=" + self.fmt)
        return s

    def decode(self, data) -> Any:
        builder = self._rows_builder(None)
        if builder is not None:
            return builder(data)
        return self.build(iter(self._struct.unpack_from(data)))

    def decode_many(self, data, count: int, stride: int | None = None) -> list:
        """Decode `count` consecutive values (each `stride` bytes apart, default `size`)."""
        s = self._struct
        stride = stride or self.size
        view = memoryview(data)[: count * stride]
        builder = self._rows_builder(stride)
        if builder is not None:
            with gc_paused(count >= _GC_PAUSE_ROWS):
                return builder(view)
        if stride == s.size:
            rows = s.iter_unpack(view)
        else:
            rows = (s.unpack_from(view, i * stride) for i in range(count))
        return self._build_rows(rows)

    def _build_rows(self, rows) -> list:
        build = self.build
        return [build(iter(row)) for row in rows]

    def _rows_builder(self, stride: int | None) -> Callable[[Any], Any] | None:
        """The compiled decoder for values `stride` bytes apart, or of one value for None (cached); or None."""
        cache = self.__dict__.setdefault("_row_builders", {})
        if stride not in cache:
            cache[stride] = compile_rows(self, stride)
        return cache[stride]

    def _plan(self, offset: int, plan: RowPlan) -> str | None:
        """Add this value's leaves (at `offset`) to `plan` and return the Python expression that rebuilds
        the value from the leaf variables; None when the type cannot be planned."""
        return None

    def encode(self, obj: Any) -> bytes:
        if isinstance(obj, (bytes, bytearray, memoryview)):
            raw = bytes(obj)
            if len(raw) != self.size:
                raise ValueError(f"expected {self.size} bytes for {self.describe()}, got {len(raw)}")
            return raw
        out: list = []
        self.flatten(obj, out)
        try:
            return self._struct.pack(*out)
        except struct.error as exc:
            raise ValueError(f"cannot encode {obj!r} as {self.describe()}: {exc}") from None

    def describe(self) -> str:
        return type(self).__name__


class IntCodec(Codec):
    def __init__(self, size: int, signed: bool = False, big_endian: bool = False, is_bool: bool = False) -> None:
        self.size = size
        self.signed = signed
        self.big_endian = big_endian and size > 1
        self.is_bool = is_bool
        if size in _INT_FORMATS:
            f = _INT_FORMATS[size]
            self.fmt = f.lower() if signed else f
        else:  # 128-bit integers and other odd sizes: raw bytes, converted in the builder
            self.fmt = f"{size}s"
        bits = size * 8
        self._low, self._high = (-(1 << (bits - 1)), 1 << (bits - 1)) if signed else (0, 1 << bits)
        # The common case (a plain in-range int into a native struct field) skips every other check.
        self._plain = self.fmt in "BHIQbhiq" and not self.big_endian
        if self.big_endian and self.fmt in "HIQhiq":  # host value → the native int whose bytes are big-endian
            pack_big, unpack_native = struct.Struct(">" + self.fmt).pack, struct.Struct("=" + self.fmt).unpack
            self._to_wire = lambda v: unpack_native(pack_big(v))[0]

    def build(self, it: Iterator[Any]) -> Any:
        v = next(it)
        if isinstance(v, bytes):
            return int.from_bytes(v, "big" if self.big_endian else "little", signed=self.signed)
        if self.big_endian:
            v = _swap(v, self.size) if not self.signed else int.from_bytes(
                v.to_bytes(self.size, "little", signed=True), "big", signed=True)
        return bool(v) if self.is_bool else v

    def _build_rows(self, rows) -> list:
        if self.fmt in "BHIQbhiq" and not self.big_endian and not self.is_bool:
            return [row[0] for row in rows]
        return super()._build_rows(rows)

    def _plan(self, offset: int, plan: RowPlan) -> str | None:
        if self.fmt.endswith("s"):
            leaf = plan.leaf(offset, self.fmt, "any")
            return f"int.from_bytes({leaf}, {'big' if self.big_endian else 'little'!r}, signed={self.signed})"
        leaf = plan.leaf(offset, self.fmt, "big" if self.big_endian else "any" if self.size == 1 else "native")
        return f"bool({leaf})" if self.is_bool else leaf

    def flatten(self, obj: Any, out: list) -> None:
        if self._plain and type(obj) is int and self._low <= obj < self._high:
            out.append(obj)
            return
        if not isinstance(obj, (int, bool)):
            raise ValueError(f"expected an integer for {self.describe()}, got {obj!r}")  # noqa: TRY004 - codec errors are all ValueError
        v = int(obj)
        if not self._low <= v < self._high:
            raise ValueError(f"{v} does not fit in {self.describe()}")
        if self.fmt.endswith("s"):
            out.append(v.to_bytes(self.size, "big" if self.big_endian else "little", signed=self.signed))
            return
        if self.big_endian:
            v = self._to_wire(v)
        out.append(v)

    def describe(self) -> str:
        return f"{'' if self.signed else 'u'}int{self.size * 8}{' (big-endian)' if self.big_endian else ''}"


class FloatCodec(Codec):
    def __init__(self, size: int) -> None:
        self.size = size
        self.fmt = {4: "f", 8: "d"}.get(size, f"{size}s")

    def build(self, it: Iterator[Any]) -> Any:
        return next(it)

    def flatten(self, obj: Any, out: list) -> None:
        out.append(float(obj) if not self.fmt.endswith("s") else bytes(obj))

    def _plan(self, offset: int, plan: RowPlan) -> str | None:
        return plan.leaf(offset, self.fmt, "any" if self.fmt.endswith("s") else "native")


class BytesCodec(Codec):
    """Opaque bytes: unions, unknown types, maps without BTF, and char arrays (`text=True`: a C string,
    shown as text in tables)."""

    def __init__(self, size: int, text: bool = False) -> None:
        self.size = size
        self.text = text
        self.fmt = f"{size}s" if size else ""

    def build(self, it: Iterator[Any]) -> Any:
        return next(it) if self.size else b""

    def _build_rows(self, rows) -> list:
        return [row[0] for row in rows] if self.size else [b"" for _ in rows]

    def flatten(self, obj: Any, out: list) -> None:
        raw = bytes(obj) if not isinstance(obj, str) else obj.encode()
        if len(raw) > self.size:
            raise ValueError(f"{len(raw)} bytes do not fit in {self.size}")
        if self.size:
            out.append(raw)  # struct's "Ns" pads with zeros

    def describe(self) -> str:
        return f"bytes[{self.size}]"

    def _plan(self, offset: int, plan: RowPlan) -> str | None:
        return plan.leaf(offset, self.fmt, "any") if self.size else "b''"


class ArrayCodec(Codec):
    def __init__(self, elem: Codec, count: int) -> None:
        self.elem = elem
        self.count = count
        self.size = elem.size * count
        self.fmt = elem.fmt * count if count else ""

    def build(self, it: Iterator[Any]) -> Any:
        b = self.elem.build
        return [b(it) for _ in range(self.count)]

    def flatten(self, obj: Any, out: list) -> None:
        items = list(obj)
        if len(items) != self.count:
            raise ValueError(f"expected a list of {self.count} items, got {len(items)}")
        for i, item in enumerate(items):
            try:
                self.elem.flatten(item, out)
            except ValueError as exc:
                raise _member_error(f"[{i}]", exc) from None

    def describe(self) -> str:
        return f"{self.elem.describe()}[{self.count}]"

    def _plan(self, offset: int, plan: RowPlan) -> str | None:
        items = [self.elem._plan(offset + i * self.elem.size, plan) for i in range(self.count)]
        return None if None in items else "[" + ", ".join(items) + "]"


class StructCodec(Codec):
    """A C struct as a dict. Padding is explicit in the format; bitfields are decoded from their storage."""

    def __init__(self, name: str, size: int, fields: list[tuple[str, int, Codec]],
                 bitfields: list[tuple[str, int, int]] | None = None, tags: dict[str, str] | None = None) -> None:
        self.name = name
        self.size = size
        self.fields = fields  # (name, byte offset, codec), sorted by offset, non-overlapping
        self.bitfields = bitfields or []  # (name, bit offset, bit size)
        # Member name → its BTF decl tag (`__attribute__((btf_decl_tag("ipv4")))`): how tables show it.
        self.tags = tags or {}
        self._known = frozenset(n for n, _, _ in self.fields) | {n for n, _, _ in self.bitfields}
        if self.bitfields:
            # Struct with bitfields: decode from the raw bytes (rare in maps; correctness over speed).
            self.fmt = f"{size}s"
            return
        fmt, pos = [], 0
        for _, off, codec in fields:
            if off > pos:
                fmt.append(f"{off - pos}x")
            fmt.append(codec.fmt)
            pos = off + codec.size
        if size > pos:
            fmt.append(f"{size - pos}x")
        self.fmt = "".join(fmt)
        self._names = [n for n, _, _ in fields]
        self._flat = all(isinstance(c, IntCodec) and c.fmt in "BHIQbhiq" and not c.big_endian and not c.is_bool
                         for _, _, c in fields)

    def build(self, it: Iterator[Any]) -> Any:
        if self.bitfields:
            return self._decode_raw(next(it))
        return {name: codec.build(it) for name, _, codec in self.fields}

    def _build_rows(self, rows) -> list:
        if not self.bitfields and self._flat:
            names = self._names
            return [dict(zip(names, row)) for row in rows]
        return super()._build_rows(rows)

    def _decode_raw(self, raw: bytes) -> dict:
        result = {name: codec.decode(raw[off:off + codec.size]) for name, off, codec in self.fields}
        whole = int.from_bytes(raw, "little")
        for name, bit_off, bits in self.bitfields:
            result[name] = (whole >> bit_off) & ((1 << bits) - 1)
        return result

    def flatten(self, obj: Any, out: list) -> None:
        if not isinstance(obj, dict):
            raise ValueError(f"expected a dict for struct {self.name or '(anonymous)'}, got {obj!r}")  # noqa: TRY004
        known = self._known
        unknown = obj.keys() - known
        if unknown:
            raise ValueError(f"struct {self.name or '(anonymous)'} has no field(s) {sorted(unknown)}; "
                             f"fields are {sorted(known)}")
        if self.bitfields:
            raw = bytearray(self.size)
            for name, off, codec in self.fields:
                try:
                    raw[off:off + codec.size] = _pack(codec, obj[name] if name in obj else _zero(codec))
                except ValueError as exc:
                    raise _member_error(name, exc) from None
            whole = int.from_bytes(raw, "little")
            for name, bit_off, bits in self.bitfields:
                v = int(obj.get(name, 0))
                if not 0 <= v < (1 << bits):
                    raise ValueError(f"bitfield {name!r} of {self.describe()} holds {bits} bits; {v} does not fit")
                whole = (whole & ~(((1 << bits) - 1) << bit_off)) | (v << bit_off)
            out.append(whole.to_bytes(self.size, "little"))
            return
        for name, _, codec in self.fields:
            try:
                codec.flatten(obj[name] if name in obj else _zero(codec), out)
            except ValueError as exc:
                raise _member_error(name, exc) from None

    def describe(self) -> str:
        return f"struct {self.name}" if self.name else "struct"

    def _plan(self, offset: int, plan: RowPlan) -> str | None:
        if self.bitfields:  # decoded from the struct's raw bytes by the existing slow path
            return f"{plan.helper(self._decode_raw)}({plan.leaf(offset, self.fmt, 'any')})"
        members = []
        for name, off, codec in self.fields:
            expr = codec._plan(offset + off, plan)
            if expr is None:
                return None
            members.append(f"{name!r}: {expr}")
        return "{" + ", ".join(members) + "}"


_GC_PAUSE_ROWS = 10_000  # below this, pausing the garbage collector gains nothing
_MAX_LEAVES = 255         # beyond this a generated comprehension stops paying off (and gets huge)


@contextlib.contextmanager
def gc_paused(pause: bool = True):
    """Suspend the cyclic garbage collector while a block builds many small containers.

    Decoding a million entries creates millions of tuples, and every few hundred of them trigger a
    collection that walks the growing result: pausing it makes a 1M-entry decode more than twice as
    fast. The objects built hold no cycles, so nothing is left for the collector to find afterwards.
    """
    was_enabled = pause and gc.isenabled()
    if was_enabled:
        gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


class RowPlan:
    """The leaves (offset, struct code, byte order) of one codec, and helpers its expression calls.
    Variable names start with `prefix`, so that the plans of a key and a value can share one expression."""

    def __init__(self, prefix: str = "v") -> None:
        self.prefix = prefix
        self.leaves: list[tuple[int, str, str]] = []
        self.helpers: dict[str, Callable] = {}

    def leaf(self, offset: int, code: str, order: str) -> str:
        """`order` is "native", "big" (big-endian typedefs) or "any" (bytes and single bytes)."""
        self.leaves.append((offset, code, order))
        return f"{self.prefix}{len(self.leaves) - 1}"

    def helper(self, fn: Callable) -> str:
        name = f"_{self.prefix}h{len(self.helpers)}"
        self.helpers[name] = fn
        return name


def packed_struct(leaves: list[tuple[int, str]], stride: int, order: str = "=") -> struct.Struct:
    """One `struct` that unpacks just the `leaves` ((byte offset, struct code), sorted by offset) of values
    `stride` bytes apart, skipping every byte between them."""
    fmt, pos = [], 0
    for offset, code in leaves:
        if offset > pos:
            fmt.append(f"{offset - pos}x")
        fmt.append(code)
        pos = offset + struct.calcsize("=" + code)
    if stride > pos:
        fmt.append(f"{stride - pos}x")
    return struct.Struct(order + "".join(fmt))


def _row_parts(codec: Codec, stride: int, prefix: str, view: str, namespace: dict[str, Any]):
    """(expression, iter_unpack sources, unpack targets) decoding `codec` values `stride` bytes apart in
    buffer variable `view`, with names starting with `prefix` (added to `namespace`); or None."""
    plan = RowPlan(prefix)
    expr = codec._plan(0, plan)
    if expr is None or not plan.leaves or len(plan.leaves) > _MAX_LEAVES or stride < codec.size:
        return None
    indexed = sorted(enumerate(plan.leaves), key=lambda item: item[1][0])
    orders = {order for _, (_, _, order) in indexed}
    if "big" in orders and "native" in orders:
        groups = [("=", [i for i in indexed if i[1][2] != "big"]), (">", [i for i in indexed if i[1][2] == "big"])]
    else:
        groups = [(">" if "big" in orders else "=", indexed)]
    namespace.update(plan.helpers)
    sources, targets = [], []
    for n, (order, leaves) in enumerate(groups):
        namespace[f"_{prefix}s{n}"] = packed_struct([(offset, code) for _, (offset, code, _) in leaves], stride, order)
        sources.append(f"_{prefix}s{n}.iter_unpack({view})")
        targets.append("(" + "".join(f"{prefix}{i}, " for i, _ in leaves) + ")")
    return expr, sources, targets


def compile_rows(codec: Codec, stride: int | None) -> Callable[[Any], Any] | None:
    """Compile `codec` into one list comprehension over `struct.iter_unpack` for values `stride` bytes apart
    (or, with `stride=None`, into a function that decodes one value with `unpack_from`).

    A struct becomes a dict display and an array a list display over the leaf variables, so a row costs
    one C-level unpack and one container build. Big-endian fields are unpacked by a second, big-endian
    `struct` over the same buffer (or by the only one when no multi-byte native field exists).
    Returns None for types without a plan (the generic path decodes those).
    """
    single = stride is None
    namespace: dict[str, Any] = {}
    parts = _row_parts(codec, codec.size if single else stride, "v", "view", namespace)
    if parts is None:
        return None
    expr, sources, targets = parts
    # The source is built from BTF member names quoted with repr() and from generated variable names.
    if single:
        unpacks = "".join(f"    {t} = _vs{n}.unpack_from(data)\n" for n, t in enumerate(targets))
        exec(f"def _decode_one(data):\n{unpacks}    return {expr}\n", namespace)  # noqa: S102 - see above
        return namespace["_decode_one"]
    return eval(f"lambda view: [{expr} for {_loop(sources, targets)}]", namespace)


def compile_pairs(key: Codec, value: Codec) -> Callable[[Any, Any], list] | None:
    """Compile one comprehension that decodes packed keys and packed values (back to back, as a batch
    read returns them) into a list of (key, value) tuples: no intermediate lists of keys and values to
    zip afterwards. None when either type has no plan."""
    namespace: dict[str, Any] = {}
    kparts = _row_parts(key, key.size, "k", "kview", namespace)
    vparts = _row_parts(value, value.size, "v", "vview", namespace)
    if kparts is None or vparts is None:
        return None
    loop = _loop(kparts[1] + vparts[1], kparts[2] + vparts[2])
    # Built like compile_rows' source: repr()-quoted member names and generated variable names.
    return eval(f"lambda kview, vview: [({kparts[0]}, {vparts[0]}) for {loop}]", namespace)


def _loop(sources: list[str], targets: list[str]) -> str:
    if len(sources) == 1:
        return f"{targets[0]} in {sources[0]}"
    return f"{', '.join(targets)} in zip({', '.join(sources)})"


class _MemberError(ValueError):
    """A value that does not fit a field, with the field's path inside the whole value."""

    def __init__(self, path: str, reason: str):
        super().__init__(f"field {path.lstrip('.')}: {reason}")
        self.member_path = path
        self.reason = reason


def _member_error(member: str, exc: ValueError) -> ValueError:
    """`exc` raised for a struct field or array element, re-raised naming the whole path ("pairs[1].b")."""
    path = member + getattr(exc, "member_path", "")
    if path and not path.startswith("["):
        path = "." + path
    return _MemberError(path, getattr(exc, "reason", str(exc)))


def _pack(codec: Codec, obj: Any) -> bytes:
    """Pack one struct member the way `flatten` takes it (a short char array is zero-padded, like in a
    struct without bitfields), rather than `encode`'s exact-size rule for whole raw values."""
    out: list = []
    codec.flatten(obj, out)
    try:
        return codec._struct.pack(*out)
    except struct.error as exc:
        raise ValueError(f"cannot encode {obj!r} as {codec.describe()}: {exc}") from None


def _zero(codec: Codec):
    """The Python value of an all-zero C object: missing struct fields encode as zero (cached per codec)."""
    zero = codec.__dict__.get("_zero_value", _NO_VALUE)
    if zero is _NO_VALUE:
        zero = codec.__dict__["_zero_value"] = codec.decode(bytes(codec.size))
    return zero


_NO_VALUE = object()


class BTFTypes:
    """Resolves BTF type ids of one `struct btf *` into codecs (cached per id)."""

    def __init__(self, btf: Any) -> None:
        self.btf = btf
        self._cache: dict[int, Codec] = {}
        self._decl_tags: dict[int, dict[int, str]] | None = None

    def name(self, type_id: int) -> str:
        t = lib.btf__type_by_id(self.btf, type_id)
        return ffi.string(lib.btf__name_by_offset(self.btf, t.name_off)).decode() if t.name_off else ""

    def codec(self, type_id: int) -> Codec:
        c = self._cache.get(type_id)
        if c is None:
            c = self._cache[type_id] = self._build(type_id, big_endian=False)
        return c

    def _build(self, type_id: int, big_endian: bool) -> Codec:
        btf = self.btf
        t = lib.btf__type_by_id(btf, type_id)
        if t == ffi.NULL:
            raise ValueError(f"BTF type id {type_id} does not exist")
        kind = lib.btf_kind(t)
        if kind == lib.BTF_KIND_TYPEDEF:
            return self._build(t.type, big_endian or self.name(type_id) in _BIG_ENDIAN_TYPEDEFS)
        if kind in (lib.BTF_KIND_VOLATILE, lib.BTF_KIND_CONST, lib.BTF_KIND_RESTRICT, lib.BTF_KIND_TYPE_TAG):
            return self._build(t.type, big_endian)
        if kind == lib.BTF_KIND_INT:
            enc = lib.btf_int_encoding(t)
            size = t.size
            if lib.btf_int_offset(t) or lib.btf_int_bits(t) != size * 8:
                return BytesCodec(size)
            return IntCodec(size, bool(enc & lib.BTF_INT_SIGNED), big_endian, bool(enc & lib.BTF_INT_BOOL))
        if kind in (lib.BTF_KIND_ENUM, lib.BTF_KIND_ENUM64):
            return IntCodec(t.size, bool(lib.btf_kflag(t)) or self._has_negative_enumerator(t), big_endian)
        if kind == lib.BTF_KIND_PTR:
            return IntCodec(8)
        if kind == lib.BTF_KIND_FLOAT:
            return FloatCodec(t.size)
        if kind == lib.BTF_KIND_ARRAY:
            arr = lib.btf_array(t)
            elem = self._build(arr.type, big_endian)
            if isinstance(elem, IntCodec) and elem.size == 1 and self._is_char(arr.type):
                return BytesCodec(arr.nelems, text=True)
            return ArrayCodec(elem, arr.nelems)
        if kind == lib.BTF_KIND_STRUCT:
            return self._struct(type_id, t)
        size = lib.btf__resolve_size(btf, type_id)
        return BytesCodec(max(int(size), 0))

    @staticmethod
    def _has_negative_enumerator(t) -> bool:
        # Compilers before BTF's signedness flag (clang < 15) leave kflag clear even for enums with
        # negative values; such an enum is signed all the same.
        if lib.btf_kind(t) != lib.BTF_KIND_ENUM:
            return False
        values = lib.btf_enum(t)
        return any(values[i].val < 0 for i in range(lib.btf_vlen(t)))

    def _is_char(self, type_id: int) -> bool:
        t = lib.btf__type_by_id(self.btf, lib.btf__resolve_type(self.btf, type_id))
        if lib.btf_kind(t) != lib.BTF_KIND_INT:
            return False
        name = ffi.string(lib.btf__name_by_offset(self.btf, t.name_off)).decode()
        return bool(lib.btf_int_encoding(t) & lib.BTF_INT_CHAR) or name in ("char", "signed char", "unsigned char")

    def _struct(self, type_id: int, t) -> Codec:
        members = lib.btf_members(t)
        fields: list[tuple[str, int, Codec]] = []
        bitfields: list[tuple[str, int, int]] = []
        for i in range(lib.btf_vlen(t)):
            m = members[i]
            name = ffi.string(lib.btf__name_by_offset(self.btf, m.name_off)).decode() if m.name_off else f"_{i}"
            bit_off = lib.btf_member_bit_offset(t, i)
            bits = lib.btf_member_bitfield_size(t, i)
            if bits or bit_off % 8:
                bitfields.append((name, bit_off, bits))
                continue
            codec = self._build(m.type, False)
            if not m.name_off and isinstance(codec, StructCodec):  # anonymous struct member: inline its fields
                fields.extend((n, bit_off // 8 + off, c) for n, off, c in codec.fields)
                continue
            fields.append((name, bit_off // 8, codec))
        fields.sort(key=lambda f: f[1])
        # Overlapping members can only come from anonymous unions: keep the first, the rest as-is in bytes.
        cleaned, end = [], 0
        for name, off, codec in fields:
            if off < end:
                continue
            cleaned.append((name, off, codec))
            end = off + codec.size
        tags = self.member_tags(type_id)
        names = {i: (ffi.string(lib.btf__name_by_offset(self.btf, members[i].name_off)).decode()
                     if members[i].name_off else f"_{i}") for i in tags if i < lib.btf_vlen(t)}
        return StructCodec(self.name(type_id), t.size, cleaned, bitfields,
                           {names[i]: tag for i, tag in tags.items() if i in names})

    def member_tags(self, type_id: int) -> dict[int, str]:
        """Member index → decl tag of struct `type_id` (the last tag wins when a member has several).

        Found by one scan of the whole BTF on first use: a DECL_TAG points at its struct, not the
        other way round."""
        if self._decl_tags is None:
            self._decl_tags = {}
            header = ffi.sizeof("struct btf_type")
            for tid in range(1, lib.btf__type_cnt(self.btf)):
                t = lib.btf__type_by_id(self.btf, tid)
                if lib.btf_kind(t) != lib.BTF_KIND_DECL_TAG:
                    continue
                # struct btf_decl_tag { __s32 component_idx; } follows the btf_type header.
                component = ffi.cast("__s32 *", ffi.cast("char *", t) + header)[0]
                if component >= 0:
                    self._decl_tags.setdefault(t.type, {})[component] = self.name(tid)
        return self._decl_tags.get(type_id, {})


def per_cpu_stride(value_size: int) -> int:
    """Per-CPU map values are laid out one per possible CPU, each rounded up to 8 bytes."""
    return (value_size + 7) & ~7


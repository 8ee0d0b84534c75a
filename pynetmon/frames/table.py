"""Structured arrays of map entries as pandas DataFrames: one column per leaf field.

Column names are the field paths (`key.saddr` style paths without the `key.`/`value.` prefix unless a key
and a value field share a name; array elements as `c[0]`, per-CPU columns as `cpu0.packets`). Big-endian
fields become host-order numbers, char arrays text, and fields declared addresses become address text:

- by a BTF decl tag on the struct member, `__u32 saddr __attribute__((btf_decl_tag("ipv4")));`
  (tags "ipv4", "ipv6", "mac");
- or by column name, `to_pandas(addresses={"saddr": "ipv4"})`.

An address field is formatted from its bytes in memory order (the network order a program copies from
a packet), whatever integer type holds it. Address and text columns are categorical: each distinct
value is formatted once, so a million flows between a few hosts cost a few strings, not a million.
"""
from __future__ import annotations

import ipaddress
from typing import TYPE_CHECKING, Any, Literal

from ..btf_codec import ArrayCodec, BytesCodec, Codec, FloatCodec, IntCodec, StructCodec
from .arrays import codec_dtype, map_to_numpy
from .extra import require

if TYPE_CHECKING:
    from ..maps import Map

ADDRESS_KINDS = {"ipv4": 4, "ipv6": 16, "mac": 6}
MAX_ARRAY_COLUMNS = 16  # C arrays up to this many elements become one column each; longer ones, lists


def _pd():
    return require("pandas", "DataFrames of maps")


def format_address(raw: bytes, kind: str) -> str:
    """`raw` (the address bytes in memory order) as text: 10.0.0.1, 2001:db8::1, 02:00:00:00:00:01."""
    if kind == "mac":
        return ":".join(f"{b:02x}" for b in raw)
    if kind == "ipv4":
        return str(ipaddress.IPv4Address(raw))
    if kind == "ipv6":
        return str(ipaddress.IPv6Address(raw))
    raise ValueError(f"unknown address kind {kind!r}; known: {sorted(ADDRESS_KINDS)}")


def address_column(col: Any, kind: str) -> Any:
    """A column of address fields (any integer or byte type of the right size) as categorical text."""
    np = require("numpy", "address columns")
    size = ADDRESS_KINDS.get(kind)
    if size is None:
        raise ValueError(f"unknown address kind {kind!r}; known: {sorted(ADDRESS_KINDS)}")
    col = np.ascontiguousarray(col)
    if _field_bytes(col) != size:
        raise ValueError(f"a {kind} address is {size} bytes; the field holds {col.dtype.itemsize} "
                         f"({col.dtype})")
    raw = col.view(np.uint8).reshape(len(col), size)
    return _categorical(raw, lambda b: format_address(b, kind))


def text_column(col: Any) -> Any:
    """A column of C strings (char arrays) as categorical text: up to the first NUL, UTF-8 (bad bytes
    replaced)."""
    np = require("numpy", "text columns")
    col = np.ascontiguousarray(col)
    raw = col.view(np.uint8).reshape(len(col), col.dtype.itemsize)
    return _categorical(raw, lambda b: b.split(b"\0", 1)[0].decode("utf-8", errors="replace"))


def _categorical(raw: Any, text: Any) -> Any:
    """Rows of `raw` (an (n, width) uint8 array) as a categorical of `text(row bytes)`, each distinct row
    turned into text once. Rows up to 8 bytes are hashed as one integer, wider ones as bytes objects."""
    np = require("numpy", "categorical columns")
    pd = _pd()
    n, width = raw.shape
    if width <= 8:
        padded = np.zeros((n, 8), np.uint8)
        padded[:, :width] = raw
        codes, uniques = pd.factorize(padded.view("<u8").ravel(), sort=False)
        texts = [text(int(u).to_bytes(8, "little")[:width]) for u in uniques]
    else:
        codes, uniques = pd.factorize(np.array(raw.view(f"V{width}").ravel().tolist(), dtype=object), sort=False)
        texts = [text(bytes(u)) for u in uniques]
    # Different bytes can give the same text (what follows a C string's NUL): one category per text.
    categories = list(dict.fromkeys(texts))
    if len(categories) != len(texts):
        where = {t: i for i, t in enumerate(categories)}
        codes = np.array([where[t] for t in texts], dtype=np.int64)[codes]
    return pd.Categorical.from_codes(codes, categories=pd.Index(categories, dtype=object), validate=False)


def _field_bytes(col: Any) -> int:
    """The bytes of one row of `col` (a field with subarray dimensions counts them all)."""
    per_row = 1
    for dim in col.shape[1:]:
        per_row *= dim
    return col.dtype.itemsize * per_row


def _plain(col: Any, codec: Codec) -> Any:
    """A leaf column as pandas likes it: native byte order, text for char arrays, bytes/ints otherwise."""
    if isinstance(codec, BytesCodec):
        if codec.text:
            return text_column(col)
        return col.tolist()  # bytes objects (void fields)
    if isinstance(codec, IntCodec) and codec.fmt.endswith("s"):
        order: Literal["big", "little"] = "big" if codec.big_endian else "little"
        return [int.from_bytes(bytes(v), order, signed=codec.signed) for v in col]
    if isinstance(codec, (IntCodec, FloatCodec)) and col.dtype.byteorder == ">":
        return col.astype(col.dtype.newbyteorder("="))
    return col


def leaf_columns(arr: Any, codec: Codec, path: str, out: dict[str, Any], addresses: dict[str, str],
                 tag: str | None = None) -> None:
    """Add the leaf columns of `arr` (an array of `dtype(codec)`) to `out`, named from `path`."""
    kind = addresses.get(path)
    if kind is None and tag in ADDRESS_KINDS and _field_bytes(arr) == ADDRESS_KINDS[tag]:
        kind = tag  # (a tagged field summed over CPUs is a number now, no longer an address)
    if kind is not None:
        out[path] = address_column(arr, kind)
        return
    if isinstance(codec, StructCodec):
        prefix = f"{path}." if path else ""
        for name, _, field in codec.fields:
            leaf_columns(arr[name], field, prefix + name, out, addresses, codec.tags.get(name))
        for name, _, _ in codec.bitfields:
            out[prefix + name] = arr[name]
        return
    if isinstance(codec, ArrayCodec):
        if codec.count <= MAX_ARRAY_COLUMNS:
            for i in range(codec.count):
                leaf_columns(arr[:, i], codec.elem, f"{path}[{i}]", out, addresses)
        else:
            out[path] = list(arr)  # one NumPy array per row
        return
    out[path] = _plain(arr, codec)


def map_to_pandas(m: Map, per_cpu: str = "sum", index: bool = False,
                  addresses: dict[str, str] | None = None) -> Any:
    """Every entry of `m` as a DataFrame (see `Map.to_pandas`)."""
    pd = _pd()
    addresses = dict(addresses or {})
    for column, kind in addresses.items():
        if kind not in ADDRESS_KINDS:
            raise ValueError(f"addresses[{column!r}]: unknown address kind {kind!r}; known: {sorted(ADDRESS_KINDS)}")
    arr = map_to_numpy(m, per_cpu)
    kcodec = codec_dtype(m.key_codec, m.key_size)[0]
    vcodec = codec_dtype(m.value_codec, m.value_size)[0]
    keys: dict[str, Any] = {}
    values: dict[str, Any] = {}
    leaf_columns(arr["key"], kcodec, "" if isinstance(kcodec, StructCodec) else "key", keys, addresses)
    if m.per_cpu and per_cpu == "axis":
        for cpu in range(m.ncpus):
            leaf_columns(arr["value"][:, cpu], vcodec, f"cpu{cpu}" if isinstance(vcodec, StructCodec)
                         else f"value.cpu{cpu}", values, addresses)
    else:
        leaf_columns(arr["value"], vcodec,
                     "" if isinstance(vcodec, StructCodec) else "value", values, addresses)
    if keys.keys() & values.keys():  # a key field and a value field of the same name: say which is which
        keys = {f"key.{k}": v for k, v in keys.items()}
        values = {f"value.{k}": v for k, v in values.items()}
    frame = pd.DataFrame({**keys, **values}, copy=False)
    if index:
        frame = frame.set_index(list(keys))
    return frame


def snapshot_frame(snapshot: dict) -> Any:
    """A monitor snapshot (a plain dict, nested) as a one-row-per-leaf DataFrame (`path`, `value`)."""
    pd = _pd()
    rows: list[tuple[str, Any]] = []
    _flatten(snapshot, "", rows)
    return pd.DataFrame(rows, columns=["path", "value"])


def _flatten(obj: Any, path: str, rows: list) -> None:
    if isinstance(obj, dict):
        for k, v in obj.items():
            _flatten(v, f"{path}.{k}" if path else str(k), rows)
    elif isinstance(obj, (list, tuple)) and obj and all(isinstance(v, (dict, list, tuple)) for v in obj):
        for i, v in enumerate(obj):
            _flatten(v, f"{path}[{i}]", rows)
    else:
        rows.append((path, obj))

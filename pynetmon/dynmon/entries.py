"""What one read of a map yields: decoded entries plus what is needed to format them.

A `PathDataplane` (or the swap-on-read variant) produces `MapEntries`; `metrics.py` and
`openmetrics.py` format them. Neither side knows how the other works.

Address fields: key/value fields declared with the typedefs of `<pynetmon/addresses.h>`
(`pynetmon_ipv4_t`, `pynetmon_ipv6_t`, `pynetmon_mac_t`) are found in the object's BTF and shown as
address strings.
"""
from __future__ import annotations

import hashlib
import ipaddress
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .._binding import ffi, lib
from ..maps import BATCH_TYPES, DELETABLE_BATCH_TYPES

# How each readable map type is read as a metric: by key (hash), by index (array), or popped (queue).
HASH_TYPES = DELETABLE_BATCH_TYPES | {"lpm_trie"}
ARRAY_TYPES = BATCH_TYPES - DELETABLE_BATCH_TYPES
QUEUE_TYPES = {"queue", "stack"}
READABLE_TYPES = HASH_TYPES | ARRAY_TYPES | QUEUE_TYPES
ADDRESS_TYPEDEFS = {"pynetmon_ipv4_t": "ipv4", "pynetmon_ipv6_t": "ipv6", "pynetmon_mac_t": "mac"}

# A field path inside a key or value: () is the whole key/value, ("src",) a struct member, and so on.
FieldPath = tuple[str, ...]


@dataclass(frozen=True)
class RawRead:
    """One batch read as the kernel gave it: `count` packed keys and values. Per-CPU maps hold
    `ncpus` values per entry, each `value_stride` bytes (8-byte aligned); other maps one of
    `value_stride` = value size."""

    keys: bytes
    values: bytes
    count: int
    key_size: int
    value_stride: int
    ncpus: int = 1
    key_codec: Any = None     # the map's codecs (btf_codec), for consumers that decode parts of the buffers
    value_codec: Any = None


class MapEntries:
    """The entries of one map, decoded from BTF.

    `kind` is "hash" (`keys` and `values` pair up), "array" (`values` by index) or "queue" (`values` in
    pop order). Per-CPU maps have `per_cpu=True` and one list (per possible CPU) per value.

    A batch read keeps its buffers in `raw` (a `RawRead`) and decodes `keys` and `values` only when
    they are first used (`decode` gives both), so a consumer that works on the bytes (the bulk
    OpenMetrics renderer) never pays for Python objects.

    `digest` identifies the content when the read came from one batch buffer (`content_digest` of the
    packed keys and values): two reads with equal digests decoded to equal entries, so whatever was
    built from the first can be reused for the second. None when the read cannot tell (swap-on-read
    collections, queues, arrays emptied element by element): never reused.
    """

    def __init__(self, map_name: str, map_type: str, kind: str, keys: list | None, values: list | None,
                 per_cpu: bool = False, key_addresses: dict[FieldPath, str] | None = None,
                 value_addresses: dict[FieldPath, str] | None = None, digest: bytes | None = None, *,
                 raw: RawRead | None = None, decode: Callable[[], tuple[list, list]] | None = None):
        self.map_name = map_name
        self.map_type = map_type
        self.kind = kind
        self._keys, self._values, self._decode = keys, values, decode
        self.per_cpu = per_cpu
        self.key_addresses = key_addresses if key_addresses is not None else {}
        self.value_addresses = value_addresses if value_addresses is not None else {}
        self._digest = digest
        self.raw = raw

    def _decoded(self) -> None:
        if self._decode is not None:
            decode, self._decode = self._decode, None
            self._keys, self._values = decode()

    @property
    def keys(self) -> list:
        self._decoded()
        return self._keys if self._keys is not None else []

    @property
    def values(self) -> list:
        self._decoded()
        return self._values if self._values is not None else []

    @property
    def digest(self) -> bytes | None:
        if self._digest is None and self.raw is not None:
            r = self.raw
            self._digest = content_digest(self.map_type, r.count, r.keys, r.values)
        return self._digest

    def __len__(self) -> int:
        return self.raw.count if self.raw is not None and self._decode is not None else len(self.values)

    def __repr__(self) -> str:
        return f"<MapEntries {self.map_name} ({self.map_type}): {len(self)} entries>"


def content_digest(m_type: str, count: int, *buffers: bytes) -> bytes:
    """A 16-byte digest of a map's packed batch read (its type, entry count and buffers): equal digests
    mean equal content. BLAKE2b runs at about 1 GB/s, a few ms for a 100,000-entry read."""
    h = hashlib.blake2b(f"{m_type}:{count}:".encode(), digest_size=16)
    for buf in buffers:
        h.update(buf)
    return h.digest()


def kind_of(map_type: str) -> str:
    """"hash", "array" or "queue" for a map type dynmon can read; ValueError for others."""
    if map_type in HASH_TYPES:
        return "hash"
    if map_type in ARRAY_TYPES:
        return "array"
    if map_type in QUEUE_TYPES:
        return "queue"
    raise ValueError(f"maps of type {map_type} cannot be read as metrics; readable types: "
                     f"{', '.join(sorted(READABLE_TYPES))}")


# ---- address fields ---------------------------------------------------------------------------------

def map_address_fields(btf: Any, map_name: str) -> tuple[dict[FieldPath, str], dict[FieldPath, str]]:
    """(key fields, value fields) of a BTF-defined map that hold addresses, found through the map
    variable's definition in the object's BTF. Empty when the object has no BTF for the map."""
    if btf == ffi.NULL:
        return {}, {}
    var_id = lib.btf__find_by_name(btf, map_name.encode())
    if var_id <= 0:
        return {}, {}
    var = lib.btf__type_by_id(btf, var_id)
    if lib.btf_kind(var) != lib.BTF_KIND_VAR:
        return {}, {}
    definition = lib.btf__type_by_id(btf, lib.btf__resolve_type(btf, var.type))
    if lib.btf_kind(definition) != lib.BTF_KIND_STRUCT:
        return {}, {}
    found: dict[str, dict[FieldPath, str]] = {"key": {}, "value": {}}
    members = lib.btf_members(definition)
    for i in range(lib.btf_vlen(definition)):
        name = ffi.string(lib.btf__name_by_offset(btf, members[i].name_off)).decode()
        if name in found:
            ptr = lib.btf__type_by_id(btf, members[i].type)
            if lib.btf_kind(ptr) == lib.BTF_KIND_PTR:
                _collect(btf, ptr.type, (), found[name], depth=0)
    return found["key"], found["value"]


def _collect(btf, type_id: int, path: FieldPath, out: dict[FieldPath, str], depth: int) -> None:
    if depth > 16:
        return
    t = lib.btf__type_by_id(btf, type_id)
    kind = lib.btf_kind(t)
    if kind == lib.BTF_KIND_TYPEDEF:
        name = ffi.string(lib.btf__name_by_offset(btf, t.name_off)).decode()
        if name in ADDRESS_TYPEDEFS:
            out[path] = ADDRESS_TYPEDEFS[name]
            return
        _collect(btf, t.type, path, out, depth + 1)
    elif kind in (lib.BTF_KIND_CONST, lib.BTF_KIND_VOLATILE, lib.BTF_KIND_RESTRICT, lib.BTF_KIND_TYPE_TAG):
        _collect(btf, t.type, path, out, depth + 1)
    elif kind == lib.BTF_KIND_STRUCT:
        members = lib.btf_members(t)
        for i in range(lib.btf_vlen(t)):
            if not members[i].name_off:
                _collect(btf, members[i].type, path, out, depth + 1)  # anonymous member: fields are inlined
                continue
            name = ffi.string(lib.btf__name_by_offset(btf, members[i].name_off)).decode()
            _collect(btf, members[i].type, path + (name,), out, depth + 1)


def format_address(kind: str, value: Any) -> Any:
    """An address-typed field's decoded value as a string (unchanged when it has an unexpected shape)."""
    raw = value.get("bytes") if isinstance(value, dict) else value
    try:
        if kind == "ipv4" and isinstance(raw, int):
            return str(ipaddress.IPv4Address(raw))
        if kind == "ipv6" and isinstance(raw, (bytes, bytearray)) and len(raw) == 16:
            return str(ipaddress.IPv6Address(bytes(raw)))
        if kind == "mac" and isinstance(raw, (bytes, bytearray)) and len(raw) == 6:
            return ":".join(f"{b:02x}" for b in raw)
    except ValueError:
        pass
    return value


def apply_addresses(value: Any, fields: dict[FieldPath, str]) -> Any:
    """`value` with every address field replaced by its string form (a copy where something changed)."""
    if not fields:
        return value
    if () in fields:
        return format_address(fields[()], value)
    if not isinstance(value, dict):
        return value
    out = dict(value)
    for path, kind in fields.items():
        _replace(out, path, kind)
    return out


def _replace(obj: dict, path: FieldPath, kind: str) -> None:
    head, rest = path[0], path[1:]
    if head not in obj:
        return
    if not rest:
        obj[head] = format_address(kind, obj[head])
    elif isinstance(obj[head], dict):
        obj[head] = dict(obj[head])
        _replace(obj[head], rest, kind)

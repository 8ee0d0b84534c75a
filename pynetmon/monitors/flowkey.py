"""The user side of `struct pnm_flow_key` (bpf/monitors/flow.h): raw key bytes → addresses as strings,
ports as numbers, protocol names. One decoder for every packet monitor, fast enough for a 65,536-flow
table: one `struct.iter_unpack` over a whole batch buffer and cached address formatting.

>>> key = encode(FlowKey("198.18.0.1", "198.18.0.2", 1234, 53, "udp"))
>>> decode(key)
FlowKey(src='198.18.0.1', dst='198.18.0.2', sport=1234, dport=53, proto='udp', direction='ingress')
"""
from __future__ import annotations

import functools
import socket
import struct
from collections.abc import Iterator
from typing import NamedTuple

# saddr[16] daddr[16] sport dport (network order) proto family direction pad
KEY = struct.Struct("!16s16sHHBBBx")
KEY_SIZE = KEY.size  # 40, as sizeof(struct pnm_flow_key)

FAMILY_IPV4, FAMILY_IPV6 = 4, 6
DIRECTIONS = ("ingress", "egress")
PROTO_NAMES = {1: "icmp", 6: "tcp", 17: "udp", 58: "icmpv6"}
PROTO_NUMBERS = {name: number for number, name in PROTO_NAMES.items()}
_V4_MAPPED = bytes(10) + b"\xff\xff"


class FlowKey(NamedTuple):
    """One decoded key. `proto` is a name for TCP, UDP, ICMP and ICMPv6 and the number otherwise; for
    ICMP `sport`/`dport` are the type and code."""

    src: str
    dst: str
    sport: int
    dport: int
    proto: str | int
    direction: str = "ingress"


def proto_name(number: int) -> str | int:
    """"tcp", "udp", "icmp", "icmpv6", or the number for anything else."""
    return PROTO_NAMES.get(number, number)


def proto_number(proto: str | int) -> int:
    """The IP protocol number of a name or number; ValueError names an unknown name."""
    if isinstance(proto, int):
        return proto
    try:
        return PROTO_NUMBERS[proto]
    except KeyError:
        raise ValueError(f"unknown protocol {proto!r}; known: {', '.join(PROTO_NUMBERS)} or a number") from None


@functools.lru_cache(maxsize=1 << 18)  # above a full 65,536-flow table's addresses
def address(raw: bytes, family: int) -> str:
    """The text form of a 16-byte key address: dotted quad for IPv4 (stored IPv4-mapped), else IPv6."""
    if family == FAMILY_IPV4 and raw[:12] == _V4_MAPPED:
        return socket.inet_ntop(socket.AF_INET, raw[12:])
    return socket.inet_ntop(socket.AF_INET6, raw)


def address_bytes(text: str) -> tuple[bytes, int]:
    """(16 key bytes, family) of an IPv4 or IPv6 address; ValueError for anything else."""
    try:
        return _V4_MAPPED + socket.inet_pton(socket.AF_INET, text), FAMILY_IPV4
    except OSError:
        pass
    try:
        return socket.inet_pton(socket.AF_INET6, text), FAMILY_IPV6
    except OSError:
        raise ValueError(f"not an IPv4 or IPv6 address: {text!r}") from None


def _build(fields: tuple) -> FlowKey:
    saddr, daddr, sport, dport, proto, family, direction = fields
    return FlowKey(address(saddr, family), address(daddr, family), sport, dport, proto_name(proto),
                   DIRECTIONS[direction] if direction < 2 else str(direction))


def decode(raw: bytes | memoryview) -> FlowKey:
    """One key from its 40 bytes."""
    return _build(KEY.unpack_from(raw))


def decode_many(raw: bytes | memoryview, count: int, stride: int = KEY_SIZE) -> Iterator[FlowKey]:
    """`count` keys packed `stride` bytes apart (a batch buffer of `Map.read_raw`)."""
    view = memoryview(raw)
    if stride == KEY_SIZE:
        yield from map(_build, KEY.iter_unpack(view[:count * KEY_SIZE]))
        return
    for i in range(count):
        yield _build(KEY.unpack_from(view, i * stride))


def encode(key: FlowKey) -> bytes:
    """The 40 key bytes of `key` (tests, lookups): the inverse of `decode`."""
    src, family = address_bytes(key.src)
    dst, dst_family = address_bytes(key.dst)
    if family != dst_family:
        raise ValueError(f"source {key.src!r} and destination {key.dst!r} are of different families")
    return KEY.pack(src, dst, key.sport, key.dport, proto_number(key.proto), family,
                    DIRECTIONS.index(key.direction))

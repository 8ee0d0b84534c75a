"""Packets for the filter tests: the shared pcap files, and hypothesis strategies for generated frames.

Generated frames are built to hit what the corpus filters look at: Ethernet with 0-2 VLAN tags, IPv4
with options and fragments, IPv6 with extension headers, TCP/UDP/SCTP/ICMP/ICMPv6/IGMP/VRRP, ARP and
RARP, MPLS, PPPoE, Geneve (with an inner frame), 802.3/LLC (STP, ISO CLNP/ES-IS/IS-IS, NetBEUI, IPX,
SNAP), DECnet and other link protocols. Field values are drawn from the values the filters test
(ports 25, 53, 67..., hosts 1.2.3.4, 192.168/16, MACs ab:cd:ef:0:0:1...) as often as from anywhere.
Then a frame may be truncated (captured length below the wire length, or a short frame) or damaged.
"""
from __future__ import annotations

import struct
from pathlib import Path

from hypothesis import strategies as st

PCAP_DIR = Path(__file__).resolve().parents[1] / "data" / "pcaps"


def read_pcap(path: Path) -> list[tuple[bytes, int]]:
    """(captured bytes, wire length) of every record of a classic pcap file."""
    raw = path.read_bytes()
    magic = raw[:4]
    order = {b"\xd4\xc3\xb2\xa1": "<", b"\xa1\xb2\xc3\xd4": ">",
             b"\x4d\x3c\xb2\xa1": "<", b"\xa1\xb2\x3c\x4d": ">"}[magic]
    records, offset = [], 24
    while offset + 16 <= len(raw):
        _, _, caplen, wirelen = struct.unpack_from(order + "IIII", raw, offset)
        offset += 16
        records.append((raw[offset:offset + caplen], wirelen))
        offset += caplen
    return records


def pcap_packets() -> list[tuple[str, int, bytes, int]]:
    """(file name, record index, bytes, wire length) of every packet of the shared pcap files."""
    out = []
    for path in sorted(PCAP_DIR.glob("*.pcap")):
        out.extend((path.name, i, data, wirelen) for i, (data, wirelen) in enumerate(read_pcap(path)))
    return out


def _pick(values, bits: int):
    """Mostly one of the interesting values, else anything of that many bits."""
    return st.one_of(st.sampled_from(values), st.integers(0, (1 << bits) - 1))


PORTS = _pick([7, 22, 25, 53, 67, 68, 80, 1, 1023, 1024, 5672, 6081, 0, 65535], 16)
MACS = st.one_of(
    st.sampled_from([b"\xff" * 6, b"\x01\x00\x5e\x00\x00\x01", b"\x33\x33\x00\x00\x00\x01",
                     bytes.fromhex("abcdef000001"), bytes.fromhex("abcdef000002"),
                     bytes.fromhex("abcdef000003"), bytes(6)]),
    st.binary(min_size=6, max_size=6))
IPV4 = st.one_of(
    st.sampled_from([bytes([1, 2, 3, 4]), bytes([192, 168, 0, 1]), bytes([192, 168, 255, 7]),
                     bytes([10, 0, 0, 1]), bytes([224, 0, 0, 1]), bytes([255] * 4), bytes(4)]),
    st.binary(min_size=4, max_size=4))
IPV6 = st.one_of(
    st.sampled_from([bytes(15) + b"\x01", bytes.fromhex("fe80" + "00" * 13 + "01"),
                     bytes.fromhex("ff02" + "00" * 13 + "01"), bytes.fromhex("20010db8" + "00" * 11 + "01")]),
    st.binary(min_size=16, max_size=16))
ETHERTYPES_OTHER = [0x6003, 0x809B, 0x80F3, 0x6004, 0x6001, 0x6002, 0x6007, 0x8137, 0x9000, 0x88CC, 0x0600,
                    0x05DC, 0x05DD]


@st.composite
def tcp(draw) -> bytes:
    offset = draw(st.integers(5, 15))
    header = struct.pack("!HHIIBBHHH", draw(PORTS), draw(PORTS), draw(st.integers(0, 2**32 - 1)),
                         draw(st.integers(0, 2**32 - 1)), offset << 4, draw(st.integers(0, 255)),
                         draw(st.integers(0, 65535)), 0, 0)
    return header + draw(st.binary(min_size=(offset - 5) * 4, max_size=(offset - 5) * 4)) + draw(
        st.binary(max_size=24))


@st.composite
def udp(draw, depth: int = 0) -> bytes:
    sport, dport = draw(PORTS), draw(PORTS)
    payload = draw(st.binary(max_size=24))
    if depth < 1 and (dport == 6081 or draw(st.integers(0, 9)) == 0):
        dport = 6081
        payload = draw(geneve(depth + 1))
    return struct.pack("!HHHH", sport, dport, 8 + len(payload), 0) + payload


@st.composite
def geneve(draw, depth: int) -> bytes:
    opt_words = draw(st.integers(0, 3))
    proto = draw(st.sampled_from([0x6558, 0x0800, 0x86DD, 0x1234]))
    vni = draw(_pick([12345, 0], 24))
    header = struct.pack("!BBHI", (draw(st.integers(0, 3)) << 6) | opt_words, draw(st.integers(0, 255)), proto,
                         vni << 8)
    inner = {0x6558: ethernet(depth), 0x0800: ipv4(depth), 0x86DD: ipv6(depth)}.get(proto, st.binary(max_size=20))
    return header + bytes(4 * opt_words) + draw(inner)


def _l4(proto: int, depth: int):
    return {6: tcp(), 17: udp(depth), 132: st.builds(lambda s, d, rest: struct.pack("!HH", s, d) + rest,
                                                      PORTS, PORTS, st.binary(max_size=16))}.get(
        proto, st.binary(max_size=28))


@st.composite
def ipv4(draw, depth: int = 0) -> bytes:
    ihl = draw(st.sampled_from([5, 5, 5, 6, 7, 15, draw(st.integers(0, 15))]))
    proto = draw(_pick([6, 17, 1, 2, 9, 88, 112, 132, 58], 8))
    frag = draw(st.sampled_from([0, 0, 0, 0x4000, 0x2000, 0x2001, 0x0123, draw(st.integers(0, 65535))]))
    options = draw(st.binary(min_size=max(ihl - 5, 0) * 4, max_size=max(ihl - 5, 0) * 4))
    payload = draw(_l4(proto, depth))
    total = 20 + len(options) + len(payload)
    header = struct.pack("!BBHHHBBH4s4s", 0x40 | ihl, draw(st.integers(0, 255)), total, draw(st.integers(0, 65535)),
                         frag, draw(st.integers(0, 255)), proto, 0, draw(IPV4), draw(IPV4))
    return header + options + payload


@st.composite
def ipv6(draw, depth: int = 0) -> bytes:
    chain = draw(st.lists(st.sampled_from([0, 43, 44, 60, 51]), max_size=3))
    final = draw(_pick([6, 17, 58, 132, 59, 112], 8))
    body = draw(_l4(final, depth))
    headers = b""
    for this, following in zip(reversed(chain), reversed([*chain[1:], final])):
        if this == 44:
            ext = struct.pack("!BBHI", following, 0, draw(st.sampled_from([0, 1, 8, 0xFFF9])), 7)
        elif this == 51:
            ext = struct.pack("!BB", following, 1) + bytes(10)
        else:
            ext_len = draw(st.integers(0, 2))
            ext = struct.pack("!BB", following, ext_len) + bytes(6 + 8 * ext_len)
        headers = ext + headers
    first = chain[0] if chain else final
    payload = headers + body
    return struct.pack("!IHBB16s16s", 0x60000000, len(payload), first, draw(st.integers(0, 255)), draw(IPV6),
                       draw(IPV6)) + payload


@st.composite
def arp(draw) -> bytes:
    return struct.pack("!HHBBH6s4s6s4s", 1, 0x0800, 6, 4, draw(st.integers(1, 4)), draw(MACS), draw(IPV4), draw(MACS),
                       draw(IPV4))


@st.composite
def mpls(draw, depth: int) -> bytes:
    labels = draw(st.lists(_pick([100, 123, 0, 2], 20), min_size=1, max_size=3))
    stack = b"".join(struct.pack("!I", (label << 12) | (int(i == len(labels) - 1) << 8) | 64)
                     for i, label in enumerate(labels))
    return stack + draw(st.one_of(ipv4(depth), ipv6(depth), st.binary(max_size=20)))


@st.composite
def pppoe(draw, session: bool, depth: int) -> bytes:
    if session:
        proto = draw(st.sampled_from([0x0021, 0x0057, 0x0281, 0xC021]))
        inner = {0x0021: ipv4(depth), 0x0057: ipv6(depth), 0x0281: mpls(depth)}.get(proto, st.binary(max_size=12))
        payload = struct.pack("!H", proto) + draw(inner)
    else:
        payload = draw(st.binary(max_size=20))
    code = 0 if session else draw(st.sampled_from([0x09, 0x07, 0x19, 0xA7]))
    return struct.pack("!BBHH", 0x11, code, draw(_pick([1234, 1], 16)), len(payload)) + payload


@st.composite
def llc(draw) -> bytes:
    """An 802.3 payload: LLC (STP, ISO with an IS-IS/ES-IS/CLNP header, NetBEUI, IPX, SNAP) or raw IPX."""
    kind = draw(st.sampled_from(["stp", "iso", "netbeui", "ipx", "snap", "rawipx", "random"]))
    control = draw(st.sampled_from([0x03, 0x00, 0x01, 0x05, 0x09, 0x0D, 0x6F, 0x63, 0x43, 0x0F, 0xAF, 0xE3, 0x87,
                                    0xF3, draw(st.integers(0, 255))]))
    if kind == "rawipx":
        return b"\xff\xff" + draw(st.binary(max_size=20))
    if kind == "iso":
        nlpid = draw(_pick([0x81, 0x82, 0x83], 8))
        pdu = draw(_pick([0x0F, 0x10, 0x11, 0x12, 0x14, 0x18, 0x19, 0x1A, 0x1B], 8))
        return bytes([0xFE, 0xFE, control, nlpid, 27, 1, 0, pdu]) + draw(st.binary(max_size=12))
    sap = {"stp": 0x42, "netbeui": 0xF0, "ipx": 0xE0, "snap": 0xAA}.get(kind) or draw(st.integers(0, 255))
    rest = draw(st.binary(max_size=20))
    if kind == "snap":
        rest = bytes(3) + struct.pack("!H", draw(st.sampled_from([0x0800, 0x809B, 0x80F3, 0x8137]))) + rest
    return bytes([sap, sap, control]) + rest


@st.composite
def ethernet(draw, depth: int = 0) -> bytes:
    """One Ethernet frame, not truncated."""
    tags = b"".join(struct.pack("!HH", draw(st.sampled_from([0x8100, 0x88A8, 0x9100])), draw(_pick([10, 4095, 0], 16)))
                    for _ in range(draw(st.sampled_from([0, 0, 0, 1, 1, 2]))))
    kind = draw(st.sampled_from(["ipv4", "ipv4", "ipv6", "ipv6", "arp", "rarp", "mpls", "pppoes", "pppoed", "llc",
                                 "other"]))
    if kind in ("ipv4", "ipv6", "arp", "rarp", "mpls", "pppoes", "pppoed"):
        ethertype = {"ipv4": 0x0800, "ipv6": 0x86DD, "arp": 0x0806, "rarp": 0x8035,
                     "mpls": draw(st.sampled_from([0x8847, 0x8848])), "pppoes": 0x8864, "pppoed": 0x8863}[kind]
        payload = draw({"ipv4": ipv4(depth), "ipv6": ipv6(depth), "arp": arp(), "rarp": arp(),
                        "mpls": mpls(depth), "pppoes": pppoe(True, depth), "pppoed": pppoe(False, depth)}[kind])
    elif kind == "llc":
        payload = draw(llc())
        ethertype = len(payload)
    else:
        ethertype = draw(_pick(ETHERTYPES_OTHER, 16))
        payload = draw(st.binary(max_size=40))
    return draw(MACS) + draw(MACS) + tags + struct.pack("!H", ethertype) + payload


@st.composite
def captured(draw) -> tuple[bytes, int]:
    """(captured bytes, wire length): a generated frame, maybe truncated, damaged or replaced by noise."""
    if draw(st.integers(0, 19)) == 0:
        noise = draw(st.binary(max_size=80))
        return noise, len(noise)
    frame = bytearray(draw(ethernet()))
    for _ in range(draw(st.sampled_from([0, 0, 0, 0, 1, 3]))):  # damage a few bytes
        frame[draw(st.integers(0, len(frame) - 1))] = draw(st.integers(0, 255))
    wirelen = len(frame)
    cut = draw(st.sampled_from(["none", "none", "none", "snap", "short", "any"]))
    if cut == "snap":  # a capture with a snaplen: wire length stays the frame's
        frame = frame[:draw(st.integers(14, len(frame)))]
    elif cut == "short":  # shorter than an Ethernet header
        frame = frame[:draw(st.integers(0, 13))]
        wirelen = len(frame) if draw(st.booleans()) else wirelen
    elif cut == "any":  # truncated on the wire too
        frame = frame[:draw(st.integers(0, len(frame)))]
        wirelen = len(frame)
    return bytes(frame), wirelen

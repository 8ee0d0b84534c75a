"""DNS wire-format pieces the dns monitor decodes: the qname the kernel copies (labels with their length
bytes, zero padded), rcode and qtype names (IANA's DNS parameters registry; others as `RCODE12`,
`TYPE65280` in RFC 3597's style) and a minimal message builder for tests and the test responder.

Names are shown in presentation format without the final dot (`www.example.com`, the root is `.`);
bytes outside letters, digits, `-` and `_` are escaped as `\\DDD` and a dot inside a label as `\\.`
(RFC 1035 §5.1), so a hostile name can never forge a label boundary, a quote or a control character in
JSON, tables or metric labels. A name the kernel had to cut (longer than its window) ends in `…`.

>>> decode_qname(b"\\x03www\\x07example\\x03com\\x00" + bytes(10))
'www.example.com'
"""
from __future__ import annotations

import struct

RCODES = {0: "NOERROR", 1: "FORMERR", 2: "SERVFAIL", 3: "NXDOMAIN", 4: "NOTIMP", 5: "REFUSED", 6: "YXDOMAIN",
          7: "YXRRSET", 8: "NXRRSET", 9: "NOTAUTH", 10: "NOTZONE", 11: "DSOTYPENI"}
QTYPES = {1: "A", 2: "NS", 5: "CNAME", 6: "SOA", 12: "PTR", 13: "HINFO", 15: "MX", 16: "TXT", 28: "AAAA",
          33: "SRV", 35: "NAPTR", 39: "DNAME", 41: "OPT", 43: "DS", 46: "RRSIG", 47: "NSEC", 48: "DNSKEY",
          50: "NSEC3", 52: "TLSA", 64: "SVCB", 65: "HTTPS", 99: "SPF", 251: "IXFR", 252: "AXFR", 255: "ANY",
          257: "CAA"}
QTYPE_NUMBERS = {name: number for number, name in QTYPES.items()}
TRUNCATED = "…"
_PLAIN = frozenset(b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_")


def rcode_name(rcode: int) -> str:
    return RCODES.get(rcode, f"RCODE{rcode}")


def qtype_name(qtype: int) -> str:
    """The mnemonic of a qtype; 0 (the kernel could not read one) is "UNKNOWN"."""
    if qtype == 0:
        return "UNKNOWN"
    return QTYPES.get(qtype, f"TYPE{qtype}")


def _label(raw: bytes) -> str:
    out = []
    for b in raw:
        if b in _PLAIN:
            out.append(chr(b))
        elif b == 0x2E:
            out.append("\\.")
        elif b == 0x5C:
            out.append("\\\\")
        else:
            out.append(f"\\{b:03d}")
    return "".join(out)


def decode_qname(raw: bytes) -> str:
    """The presentation form of a wire-format name (as the kernel copied it: possibly cut short, then
    zero padded). Anything that is not a complete name (a compression pointer, a cut label) ends the
    name with `…`."""
    labels: list[str] = []
    i = 0
    while i < len(raw):
        n = raw[i]
        if n == 0:
            return ".".join(labels) if labels else "."
        if n > 63 or i + 1 + n > len(raw):  # a pointer or reserved label type, or cut by the window
            break
        labels.append(_label(raw[i + 1:i + 1 + n]))
        i += 1 + n
    return ".".join(labels) + TRUNCATED


def encode_qname(name: str) -> bytes:
    """The wire form of a plain name (`www.example.com`, `.` for the root); ValueError for a label that
    is empty or longer than 63 bytes, or a name longer than 255 bytes."""
    if name in (".", ""):
        return b"\x00"
    out = bytearray()
    for label in name.rstrip(".").split("."):
        raw = label.encode("ascii")
        if not 0 < len(raw) <= 63:
            raise ValueError(f"bad DNS label {label!r} in {name!r}")
        out += bytes([len(raw)]) + raw
    out += b"\x00"
    if len(out) > 255:
        raise ValueError(f"DNS name longer than 255 bytes: {name!r}")
    return bytes(out)


def message(id: int, name: str, qtype: int = 1, *, response: bool = False, rcode: int = 0) -> bytes:
    """A DNS message with one question (and no answers): queries for tests, answers of the test responder."""
    flags = (0x8000 | 0x0100 | 0x0080 | rcode) if response else 0x0100  # QR, RD, RA, rcode / RD
    return struct.pack("!HHHHHH", id, flags, 1, 0, 0, 0) + encode_qname(name) + struct.pack("!HH", qtype, 1)


def parse_question(msg: bytes) -> tuple[int, str, int]:
    """(id, qname, qtype) of a message with one uncompressed question (the test responder's side)."""
    id_ = struct.unpack_from("!H", msg)[0]
    i = 12
    while msg[i]:
        i += 1 + msg[i]
    return id_, decode_qname(msg[12:i + 1]), struct.unpack_from("!H", msg, i + 1)[0]

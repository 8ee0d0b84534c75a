"""Kernel differential tests: translated filters, run with BPF_PROG_TEST_RUN, against libpcap.

Every expression of libpcap's accept tests (shared corpus) and of our own list is compiled by
`PacketFilter` and must return exactly what `pcap_offline_filter` returns, on every packet of the
shared pcap files and on generated packets; random classic BPF programs that pass the checker must
agree with libpcap's interpreter on random packets. Filters are loaded 40 to an object
(`PacketFilter.load_many`) to keep clang and load time down; each keeps its own programs.
"""
from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from pynetmon.errors import FilterError
from pynetmon.filter import OfflineFilter, PacketFilter, check_cbpf, compile_cbpf
from pynetmon.filter import cbpf as op

from .packets import captured, pcap_packets
from .programs import random_programs

HERE = Path(__file__).resolve().parent
CORPUS = HERE.parent / "data" / "libpcap_en10mb_filters.txt"
BATCH = 40
GENERATED_PACKETS = int(os.environ.get("PYNETMON_FILTER_PACKETS", "2000"))

pytestmark = pytest.mark.bpf


def _expressions(path: Path) -> list[str]:
    return [line.strip() for line in path.read_text().splitlines() if line.strip() and not line.startswith("#")]


class Pair:
    """A filter loaded in the kernel and the same program in libpcap."""

    def __init__(self, name: str, kernel: PacketFilter):
        self.name = name
        self.kernel = kernel
        self.reference = OfflineFilter(kernel.insns)


def _load(named: list[tuple[str, object]], snaplen: int = 262144) -> list[Pair]:
    pairs = []
    for start in range(0, len(named), BATCH):
        chunk = named[start:start + BATCH]
        loaded = PacketFilter.load_many([what for _, what in chunk], snaplen)
        pairs.extend(Pair(name, f) for (name, _), f in zip(chunk, loaded))
    return pairs


@pytest.fixture(scope="module")
def filters():
    from pynetmon.testing import require_bpf
    require_bpf()
    exprs = list(dict.fromkeys(_expressions(CORPUS) + _expressions(HERE / "own_filters.txt")))
    assert len(exprs) > 450
    pairs = _load([(e, e) for e in exprs])
    # The same filters with a small snaplen: the return value is the snaplen, not a boolean.
    pairs += _load([(f"{e} (snaplen 96)", e) for e in exprs[::7]], snaplen=96)
    yield pairs
    for pair in pairs:
        pair.kernel.close()


def _mismatches(pairs: list[Pair], packet: bytes, wirelen: int) -> list[str]:
    out = []
    for pair in pairs:
        expected = pair.reference.run(packet, wirelen)
        got = pair.kernel.run(packet, wirelen)
        if got != expected:
            out.append(f"{pair.name!r}: kernel {got}, libpcap {expected}, caplen {len(packet)} wirelen {wirelen} "
                       f"packet {packet.hex()}")
    return out


def test_every_corpus_filter_loads(filters):
    """The verifier accepted all of them (load_many raised otherwise); the corpus is all there."""
    assert len({p.name for p in filters}) == len(filters)
    assert sum(1 for p in filters if "snaplen" not in p.name) >= len(_expressions(CORPUS))


def test_pcap_files(filters):
    packets = pcap_packets()
    assert len(packets) > 400
    bad = []
    for name, index, data, wirelen in packets:
        bad += [f"{name}#{index}: {m}" for m in _mismatches(filters, data, wirelen)]
        # The same packet as seen on the wire, untruncated (the direct path where it fits).
        if wirelen != len(data):
            bad += [f"{name}#{index}: {m}" for m in _mismatches(filters, data, len(data))]
    assert not bad, f"{len(bad)} mismatches:\n" + "\n".join(bad[:20])


def test_pcap_files_truncated(filters):
    """Every pcap packet cut at a few captured lengths, including below an Ethernet header."""
    bad = []
    for name, index, data, wirelen in pcap_packets()[::5]:
        for caplen in sorted({0, 1, 13, 14, 15, 33, 34, 54, 55, len(data) - 1}):
            if 0 <= caplen < len(data):
                bad += [f"{name}#{index}[:{caplen}]: {m}" for m in _mismatches(filters, data[:caplen], wirelen)]
    assert not bad, f"{len(bad)} mismatches:\n" + "\n".join(bad[:20])


@settings(max_examples=GENERATED_PACKETS, derandomize=True, database=None, deadline=None,
          suppress_health_check=list(HealthCheck))
@given(sample=captured())
def test_generated_packets(filters, sample):
    packet, wirelen = sample
    bad = _mismatches(filters, packet, wirelen)
    assert not bad, f"{len(bad)} mismatches:\n" + "\n".join(bad[:20])


def test_large_packet_takes_buffer_path(filters):
    """Packets too long for BPF_PROG_TEST_RUN's linear skb are filtered from the map buffer."""
    pairs = [p for p in filters if p.name in ("ether[4000:2] == 0", "len > 100", "tcp", "ether[len - 1] == 0",
                                              "ether[65534] == 0", "ether[65535] == 0")]
    assert len(pairs) == 6
    for size in (4000, 4001, 4002, 9000, 65534, 65535):
        frame = bytes(12) + b"\x08\x00" + bytes([0x45]) + bytes(8) + b"\x06" + bytes(size - 24)
        assert not _mismatches(pairs, frame, size)
        assert not _mismatches(pairs, frame, size + 100)


def test_packet_beyond_max_caplen_is_refused(filters):
    with pytest.raises(FilterError, match="65535"):
        filters[0].kernel.run(bytes(65536))


# --- random classic BPF programs -----------------------------------------------------------------


@settings(max_examples=40, derandomize=True, database=None, deadline=None,
          suppress_health_check=list(HealthCheck), phases=(Phase.explicit, Phase.generate))
@given(programs=st.lists(random_programs(), min_size=25, max_size=25),
       packets=st.lists(st.tuples(st.binary(max_size=96), st.integers(0, 200)), min_size=30, max_size=30))
def test_random_programs_agree_with_libpcap(bpf, programs, packets):
    for program in programs:
        check_cbpf(program)  # the generator only makes programs the checker accepts
    pairs = _load([(f"random program {i}: {p}", p) for i, p in enumerate(programs)])
    try:
        bad = []
        for data, extra in packets:
            bad += _mismatches(pairs, data, len(data))
            bad += _mismatches(pairs, data, len(data) + extra)
        assert not bad, f"{len(bad)} mismatches:\n" + "\n".join(bad[:10])
    finally:
        for pair in pairs:
            pair.kernel.close()


# --- every opcode, at its edges ------------------------------------------------------------------

LD, LDX, ST, STX, ALU, JMP, RET, MISC = op.LD, op.LDX, op.ST, op.STX, op.ALU, op.JMP, op.RET, op.MISC
W, H, B = op.W, op.H, op.B
ABS, IND, MEM, LEN, MSH, IMM = op.ABS, op.IND, op.MEM, op.LEN, op.MSH, op.IMM
K, X, A = op.K, op.X, op.A


def _stmt(code, k=0):
    return (code, 0, 0, k)


EDGE_PROGRAMS = {
    # Loads at the very end of the captured bytes and one past it; huge and wrapping offsets.
    **{f"ld{size} [{k}]": [_stmt(LD | size | ABS, k), _stmt(RET | A)]
       for size in (W, H, B) for k in (0, 1, 10, 11, 12, 13, 14, 15, 0xFFFF, 0xFFFFFFFF, 0xFFFFF004)},
    **{f"ld{size} [x + {k}] x={x}": [_stmt(LDX | IMM, x), _stmt(LD | size | IND, k), _stmt(RET | A)]
       for size in (W, H, B) for k, x in ((0, 0), (0, 10), (10, 0), (5, 8), (0, 0xFFFFFFFF), (0xFFFFFFFF, 1),
                                          (0xFFFFFFFE, 2), (1, 0xFFFFFFFF), (65530, 2), (0, 65535))},
    **{f"ldxb msh [{k}]": [_stmt(LDX | B | MSH, k), _stmt(MISC | op.TXA), _stmt(RET | A)]
       for k in (0, 13, 14, 0xFFFFFFFF)},
    "ld len": [_stmt(LD | W | LEN), _stmt(RET | A)],
    "ldx len": [_stmt(LDX | W | LEN), _stmt(MISC | op.TXA), _stmt(RET | A)],
    "ld imm": [_stmt(LD | IMM, 0xDEADBEEF), _stmt(RET | A)],
    "ret k": [_stmt(RET | K, 0xFFFFFFFF)],
    "scratch": [_stmt(LD | IMM, 7), _stmt(ST, 15), _stmt(LDX | IMM, 9), _stmt(STX, 0), _stmt(LD | MEM, 0),
                _stmt(LDX | MEM, 15), _stmt(ALU | op.SUB | X), _stmt(RET | A)],
    # TAX and TXA must not be swapped: A = 3, X = 5; tax; A = 1; txa → 3.
    "tax txa": [_stmt(LD | IMM, 3), _stmt(LDX | IMM, 5), _stmt(MISC | op.TAX), _stmt(LD | IMM, 1),
                _stmt(MISC | op.TXA), _stmt(RET | A)],
    "neg": [_stmt(LD | B | ABS, 0), _stmt(ALU | op.NEG), _stmt(RET | A)],
    "long ja": [_stmt(LD | B | ABS, 0), (JMP | op.JA, 0, 0, 300)] + [_stmt(ALU | op.ADD | K, 1)] * 300
               + [_stmt(RET | A)],
    "jt 255": [_stmt(LD | B | ABS, 0), (JMP | op.JGT | K, 255, 0, 100)] + [_stmt(ALU | op.ADD | K, 1)] * 255
              + [_stmt(RET | A)],
}
for name, alu in (("add", op.ADD), ("sub", op.SUB), ("mul", op.MUL), ("div", op.DIV), ("mod", op.MOD),
                  ("and", op.AND), ("or", op.OR), ("xor", op.XOR), ("lsh", op.LSH), ("rsh", op.RSH)):
    # A from byte 0, X from byte 1 of the packet: division by a zero X, shifts by X >= 32 happen.
    EDGE_PROGRAMS[f"{name} x"] = [_stmt(LD | B | ABS, 1), _stmt(MISC | op.TAX), _stmt(LD | W | ABS, 2),
                                  _stmt(ALU | alu | X), _stmt(RET | A)]
    for k in (1, 3, 31):
        EDGE_PROGRAMS[f"{name} #{k}"] = [_stmt(LD | W | ABS, 2), _stmt(ALU | alu | K, k), _stmt(RET | A)]
for name, jmp in (("jeq", op.JEQ), ("jgt", op.JGT), ("jge", op.JGE), ("jset", op.JSET)):
    for src, k in ((K, 0x80), (X, 0)):
        EDGE_PROGRAMS[f"{name} {'x' if src == X else 'k'}"] = [
            _stmt(LD | B | ABS, 1), _stmt(MISC | op.TAX), _stmt(LD | B | ABS, 0), (JMP | jmp | src, 1, 0, k),
            _stmt(RET | K, 1), _stmt(RET | K, 2)]


def test_edge_programs_cover_every_opcode():
    codes = {code for program in EDGE_PROGRAMS.values() for code, *_ in program}
    assert set(op.OPCODES) <= codes, sorted(hex(c) for c in set(op.OPCODES) - codes)


@pytest.fixture(scope="module")
def edge_filters():
    from pynetmon.testing import require_bpf
    require_bpf()
    pairs = _load(list(EDGE_PROGRAMS.items()))
    yield pairs
    for pair in pairs:
        pair.kernel.close()


EDGE_PACKETS = [bytes(n) for n in (0, 1, 2, 3, 4, 5, 13, 14, 15, 16, 17, 18, 64)] + [
    bytes(range(n)) for n in (1, 4, 14, 16, 40)] + [
    bytes([a, b]) + bytes(range(200, 214)) for a, b in ((0, 0), (255, 32), (7, 31), (0x80, 33), (1, 255), (9, 1))] + [
    b"\xff" * n for n in (2, 6, 14, 20)]


def test_edge_programs(edge_filters):
    bad = []
    for packet in EDGE_PACKETS:
        for wirelen in {len(packet), len(packet) + 1, 1 << 31}:
            bad += _mismatches(edge_filters, packet, wirelen)
    assert not bad, f"{len(bad)} mismatches:\n" + "\n".join(bad[:20])


# --- PacketFilter as users see it -----------------------------------------------------------------


def test_packet_filter_api(bpf):
    packets = [data for _, _, data, _ in pcap_packets()]
    tcp = [p for p in packets if len(p) > 23 and p[12:14] == b"\x08\x00" and p[23] == 6]
    with PacketFilter("tcp", snaplen=128) as f:
        assert f.expr == "tcp" and f.insns == compile_cbpf("tcp", 128)
        assert "static __always_inline __u32" in f.c_source
        assert all(f.run(p) == 128 and f.matches(p) for p in tcp)
        assert not f.matches(bytes(60))
        assert f.run(b"") == 0
    with pytest.raises(ValueError, match="closed"):
        f.run(bytes(60))
    with PacketFilter([(RET | K, 0, 0, 7)]) as f:
        assert f.expr is None and f.run(b"") == 7 and f.run(bytes(100)) == 7
    with PacketFilter("all") as f:
        assert f.run(b"\x01") == 262144


def test_packet_filter_rejects_what_cannot_be_translated(bpf):
    with pytest.raises(FilterError, match="backward jump"):
        PacketFilter("ip6 protochain 6")
    with pytest.raises(FilterError, match="syntax error"):
        PacketFilter("tcp port")

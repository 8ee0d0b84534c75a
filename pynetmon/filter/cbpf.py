"""Filter text → classic BPF, with libpcap's own compiler, and libpcap's reference interpreter.

The first stage of the filter pipeline: `compile_cbpf` runs `pcap_compile` on a dead handle of the
requested link type and returns libpcap's optimised program as plain tuples (offline semantics, what
`tcpdump -r` runs). `compile_cbpf_live` compiles on a live Linux handle instead (what `tcpdump -i` puts
on its socket): there `vlan` reads the tag the kernel keeps in skb metadata through Linux's ancillary
loads. `interpret` runs a cBPF program with libpcap's `bpf_filter`, the reference every translated filter
must agree with.

Opcode fields come from <pcap/bpf.h> through the cffi module (API mode), never hand-copied.
"""
from __future__ import annotations

import functools
import threading
from collections.abc import Iterable, Sequence
from typing import NamedTuple

from .._libpcap import ffi, lib
from ..errors import FilterError

__all__ = [
    "ANCILLARY",
    "LOAD_SIZES",
    "MAX_SNAPLEN",
    "OPCODES",
    "SKF_AD_OFF",
    "Insn",
    "LiveCompileDenied",
    "OfflineFilter",
    "compile_cbpf",
    "compile_cbpf_live",
    "disassemble",
    "interpret",
    "libpcap_version",
]

# Instruction classes and fields (<pcap/bpf.h>).
LD, LDX, ST, STX, ALU, JMP, RET, MISC = (lib.BPF_LD, lib.BPF_LDX, lib.BPF_ST, lib.BPF_STX,
                                         lib.BPF_ALU, lib.BPF_JMP, lib.BPF_RET, lib.BPF_MISC)
W, H, B = lib.BPF_W, lib.BPF_H, lib.BPF_B
LOAD_SIZES = {W: 4, H: 2, B: 1}  # bytes read by a load of each size
IMM, ABS, IND, MEM, LEN, MSH = lib.BPF_IMM, lib.BPF_ABS, lib.BPF_IND, lib.BPF_MEM, lib.BPF_LEN, lib.BPF_MSH
ADD, SUB, MUL, DIV, OR, AND, LSH, RSH, NEG, MOD, XOR = (
    lib.BPF_ADD, lib.BPF_SUB, lib.BPF_MUL, lib.BPF_DIV, lib.BPF_OR, lib.BPF_AND, lib.BPF_LSH,
    lib.BPF_RSH, lib.BPF_NEG, lib.BPF_MOD, lib.BPF_XOR)
JA, JEQ, JGT, JGE, JSET = lib.BPF_JA, lib.BPF_JEQ, lib.BPF_JGT, lib.BPF_JGE, lib.BPF_JSET
K, X, A = lib.BPF_K, lib.BPF_X, lib.BPF_A
TAX, TXA = lib.BPF_TAX, lib.BPF_TXA
MEMWORDS = lib.BPF_MEMWORDS

DLT_EN10MB = lib.DLT_EN10MB
# libpcap's MAXIMUM_SNAPLEN (private to libpcap): the largest snaplen pcap readers accept, the capture's
# (bpf/capture.h CAPTURE_MAX_CAPLEN) and the default everywhere.
MAX_SNAPLEN = 262144
DEFAULT_SNAPLEN = MAX_SNAPLEN

# Linux's ancillary loads: `ld [SKF_AD_OFF + n]` (any size) reads skb metadata instead of packet bytes
# (<linux/filter.h>). libpcap emits them for live Linux handles; its own interpreter, like the kernel for
# offsets it does not know, treats them as out of bounds. Name in `tcpdump -d`'s syntax for each.
SKF_AD_OFF = lib.SKF_AD_OFF & 0xFFFFFFFF
ANCILLARY: dict[int, str] = {
    SKF_AD_OFF + lib.SKF_AD_PROTOCOL: "proto",
    SKF_AD_OFF + lib.SKF_AD_PKTTYPE: "type",
    SKF_AD_OFF + lib.SKF_AD_IFINDEX: "ifidx",
    SKF_AD_OFF + lib.SKF_AD_VLAN_TAG: "vlan_tci",
    SKF_AD_OFF + lib.SKF_AD_VLAN_TAG_PRESENT: "vlanp",
    SKF_AD_OFF + lib.SKF_AD_VLAN_TPID: "vlan_tpid",
}
LIVE_DEVICE = "lo"  # an Ethernet-type device (DLT_EN10MB) that every network namespace has

# pcap_compile keeps its parser state in globals in libpcaps before 1.8 and is not documented as
# thread-safe on any platform: serialise every call.
_compile_lock = threading.Lock()


class Insn(NamedTuple):
    """One classic BPF instruction, as in `struct bpf_insn`: (code, jt, jf, k)."""

    code: int
    jt: int
    jf: int
    k: int


def libpcap_version() -> str:
    """The version string of the libpcap in use, e.g. 'libpcap version 1.10.3 (with TPACKET_V3)'."""
    return ffi.string(lib.pcap_lib_version()).decode()


def compile_cbpf(expr: str, snaplen: int = DEFAULT_SNAPLEN, linktype: int = DLT_EN10MB) -> list[Insn]:
    """Compile a pcap-filter(7) expression into libpcap's optimised classic BPF program.

    The expression "all" selects every packet (libpcap's program for an empty filter); an empty or
    blank expression is rejected, as it is more often a mistake than a wish to capture everything.
    A bad expression raises `FilterError` carrying libpcap's own message.

    >>> compile_cbpf("ip")
    [Insn(code=40, jt=0, jf=0, k=12), Insn(code=21, jt=0, jf=1, k=2048), \
Insn(code=6, jt=0, jf=0, k=262144), Insn(code=6, jt=0, jf=0, k=0)]
    """
    if not isinstance(expr, str):
        raise TypeError(f"filter expression must be a str, not {type(expr).__name__}")
    if not expr.strip():
        raise FilterError("empty filter expression; write 'all' to select every packet")
    if not 0 < snaplen <= 0x7FFFFFFF:
        raise FilterError(f"snaplen must be between 1 and 2147483647, not {snaplen}")
    text = "" if expr.strip().lower() == "all" else expr
    return list(_compile(text, snaplen, linktype))


@functools.lru_cache(maxsize=1024)
def _compile(text: str, snaplen: int, linktype: int) -> tuple[Insn, ...]:
    if "\0" in text:
        raise FilterError("filter expression contains a NUL character")
    with _compile_lock:
        handle = lib.pcap_open_dead(linktype, snaplen)
        if handle == ffi.NULL:
            raise FilterError(f"libpcap cannot open a handle of link type {linktype}")
        try:
            return _compile_on(handle, text)
        finally:
            lib.pcap_close(handle)


def compile_cbpf_live(expr: str, snaplen: int = DEFAULT_SNAPLEN, device: str = LIVE_DEVICE) -> list[Insn]:
    """Compile a pcap-filter(7) expression as libpcap does for a live capture on Linux (`tcpdump -i`).

    libpcap decides how to test VLAN tags when it activates a live handle: when the kernel offers the
    ancillary loads (SO_BPF_EXTENSIONS), `vlan` tests the tag the kernel keeps in skb metadata
    (`ld [vlanp]`, `ld [vlan_tci]`) and the rest of the filter reads the frame without that tag, as a
    packet socket's filter sees it; `inbound`/`outbound` read the packet type. A dead handle cannot ask
    for that, so this opens and activates a live handle on `device` (an Ethernet device of the calling
    thread's network namespace: a packet socket, which needs CAP_NET_RAW), compiles, and closes it. The
    code depends only on the link type and the kernel, so the result is cached by expression and snaplen.

    Same rules and errors as `compile_cbpf` ("all", empty expressions, libpcap's messages); a handle that
    cannot be opened raises `FilterError` naming the device and libpcap's reason.

    >>> [disassemble(insn, pc) for pc, insn in enumerate(compile_cbpf_live("vlan"))][:2]
    ['ldb [vlanp]', 'jeq #0x1 jt 6 jf 2']
    """
    if not isinstance(expr, str):
        raise TypeError(f"filter expression must be a str, not {type(expr).__name__}")
    if not expr.strip():
        raise FilterError("empty filter expression; write 'all' to select every packet")
    if not 0 < snaplen <= DEFAULT_SNAPLEN:
        raise FilterError(f"snaplen must be between 1 and {DEFAULT_SNAPLEN}, not {snaplen}")
    text = "" if expr.strip().lower() == "all" else expr
    return list(_compile_live(text, snaplen, device))


class LiveCompileDenied(FilterError):
    """compile_cbpf_live could not open its packet socket for lack of CAP_NET_RAW."""


@functools.lru_cache(maxsize=1024)
def _compile_live(text: str, snaplen: int, device: str) -> tuple[Insn, ...]:
    if "\0" in text or "\0" in device:
        raise FilterError("filter expression contains a NUL character")
    with _compile_lock:
        errbuf = ffi.new("char[]", lib.PCAP_ERRBUF_SIZE)
        handle = lib.pcap_create(device.encode(), errbuf)
        if handle == ffi.NULL:
            raise FilterError(f"cannot open a live libpcap handle on {device!r}: "
                              f"{ffi.string(errbuf).decode(errors='replace')}")
        try:
            lib.pcap_set_snaplen(handle, snaplen)
            lib.pcap_set_buffer_size(handle, 1 << 16)  # nothing is read from it: keep the ring small
            status = lib.pcap_activate(handle)
            if status == lib.PCAP_ERROR_PERM_DENIED:
                raise LiveCompileDenied(f"cannot open a live libpcap handle on {device!r} to compile the filter "
                                        f"as a live capture does: a packet socket needs CAP_NET_RAW")
            if status < 0:
                detail = ffi.string(lib.pcap_geterr(handle)).decode(errors="replace") or \
                    ffi.string(lib.pcap_statustostr(status)).decode(errors="replace")
                raise FilterError(f"cannot open a live libpcap handle on {device!r} to compile the filter "
                                  f"as a live capture does: {detail}")
            if lib.pcap_datalink(handle) != DLT_EN10MB:
                raise FilterError(f"{device!r} is not an Ethernet device (libpcap link type "
                                  f"{lib.pcap_datalink(handle)}); compile on one that is")
            return _compile_on(handle, text)
        finally:
            lib.pcap_close(handle)


def _compile_on(handle, text: str) -> tuple[Insn, ...]:
    """pcap_compile on an open handle (optimised, netmask unknown); the caller holds _compile_lock."""
    program = ffi.new("struct bpf_program *")
    if lib.pcap_compile(handle, program, text.encode(), 1, lib.PCAP_NETMASK_UNKNOWN) != 0:
        raise FilterError(ffi.string(lib.pcap_geterr(handle)).decode(errors="replace"))
    try:
        return tuple(Insn(i.code, i.jt, i.jf, i.k) for i in (program.bf_insns[n] for n in range(program.bf_len)))
    finally:
        lib.pcap_freecode(program)


class OfflineFilter:
    """A classic BPF program held in libpcap's own structures, run by `pcap_offline_filter`.

    This is the reference the kernel-side filters are held to. The instructions are not checked:
    libpcap's interpreter gives every program some meaning (0 for most faults).

    >>> OfflineFilter(compile_cbpf("ip")).run(packet)
    262144
    """

    def __init__(self, insns: Iterable[Sequence[int]]):
        insns = list(insns)
        if not insns:
            raise FilterError("empty cBPF program")
        self.insns = [Insn(*insn) for insn in insns]
        self._insns = ffi.new("struct bpf_insn[]", len(insns))
        for slot, (code, jt, jf, k) in zip(self._insns, insns):
            slot.code, slot.jt, slot.jf, slot.k = code, jt, jf, k
        self._program = ffi.new("struct bpf_program *")
        self._program.bf_len = len(insns)
        self._program.bf_insns = self._insns
        self._header = ffi.new("struct pcap_pkthdr *")

    def run(self, packet: bytes, wirelen: int | None = None) -> int:
        """The program's return value on `packet` (caplen = len(packet)); `wirelen` defaults to caplen.

        pcap_offline_filter() returns bpf_filter()'s unsigned result as an `int`; it is given back
        unsigned, as the program computed it (a `ret #0xffffffff` is 4294967295, not -1).
        """
        self._header.caplen = len(packet)
        self._header.len = len(packet) if wirelen is None else wirelen
        return lib.pcap_offline_filter(self._program, self._header, ffi.from_buffer(packet)) & 0xFFFFFFFF


def interpret(insns: Iterable[Sequence[int]], packet: bytes, wirelen: int | None = None) -> int:
    """Run a classic BPF program once with libpcap's interpreter, as `pcap_offline_filter` does.

    Returns the program's return value: 0 for no match, else the number of bytes to capture.
    """
    return OfflineFilter(insns).run(packet, wirelen)


def _opcode_table() -> dict[int, str]:
    """Every opcode the Linux classic BPF checker accepts, with its `tcpdump -d` syntax."""
    table = {}
    for size, suffix in ((W, ""), (H, "h"), (B, "b")):
        table[LD | size | ABS] = f"ld{suffix} [{{k}}]"
        table[LD | size | IND] = f"ld{suffix} [x + {{k}}]"
    table.update({
        LD | W | LEN: "ld #pktlen", LD | IMM: "ld #{kx}", LD | MEM: "ld M[{k}]",
        LDX | W | LEN: "ldx #pktlen", LDX | IMM: "ldx #{kx}", LDX | MEM: "ldx M[{k}]",
        LDX | B | MSH: "ldxb 4*([{k}]&0xf)",
        ST: "st M[{k}]", STX: "stx M[{k}]",
        ALU | NEG: "neg",
        JMP | JA: "ja {ja}",
        RET | K: "ret #{k}", RET | A: "ret a",
        MISC | TAX: "tax", MISC | TXA: "txa",
    })
    for op, name in ((ADD, "add"), (SUB, "sub"), (MUL, "mul"), (DIV, "div"), (MOD, "mod"), (AND, "and"),
                     (OR, "or"), (XOR, "xor"), (LSH, "lsh"), (RSH, "rsh")):
        table[ALU | op | K] = f"{name} #{{kx}}"
        table[ALU | op | X] = f"{name} x"
    for op, name in ((JEQ, "jeq"), (JGT, "jgt"), (JGE, "jge"), (JSET, "jset")):
        table[JMP | op | K] = f"{name} #{{kx}} jt {{jt}} jf {{jf}}"
        table[JMP | op | X] = f"{name} x jt {{jt}} jf {{jf}}"
    return table


OPCODES: dict[int, str] = _opcode_table()


def disassemble(insn: Sequence[int], pc: int = 0) -> str:
    """One instruction in the syntax of `tcpdump -d`, e.g. 'ldh [12]'; jump targets are absolute from `pc`.

    An opcode the kernel does not know shows as '.word 0x..'.
    """
    code, jt, jf, k = insn
    template = OPCODES.get(code)
    if template is None:
        return f".word {code:#x}"
    if code & 0x07 == LD and code & 0xE0 == ABS and k in ANCILLARY:
        return template.replace("{k}", ANCILLARY[k])
    offset = k - (1 << 32) if k >= 1 << 31 else k  # a backward ja (libpcap's protochain) shows as one
    return template.format(k=k, kx=hex(k), jt=pc + 1 + jt, jf=pc + 1 + jf, ja=pc + 1 + offset)

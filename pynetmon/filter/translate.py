"""Classic BPF → eBPF C: the checker and the translator, both pure functions.

`check_cbpf` accepts exactly what the Linux classic BPF checker (`bpf_check_classic` plus
`check_load_and_stores`) accepts, and names the instruction at fault. `cbpf_to_c` turns a checked
program into one C function with the semantics of libpcap's interpreter (`bpf_filter`), which is the
reference: loads are big-endian, a load that is not entirely inside the captured bytes makes the whole
filter return 0, division or modulo by a zero X returns 0, shifts by X >= 32 give 0.

The emitted function::

    static __always_inline __u32 NAME(const __u8 *pkt, const __u8 *end, __u32 wirelen)

`pkt` .. `end` are the captured bytes (caplen = end - pkt), `wirelen` the length on the wire (what
`len` and `ld #pktlen` see). It returns the cBPF return value: 0 for no match, else the number of
bytes to capture. It works on both kinds of memory a BPF program may hold packets in:

- direct packet access: `NAME((void *)(long)skb->data, (void *)(long)skb->data_end, skb->len)`;
- a bounded buffer, e.g. a map value the first bytes of a frame were copied into:
  `NAME(buf, buf + caplen, wirelen)`, where the buffer is at least `max_caplen` bytes long and
  `caplen` is at most `max_caplen`.

Every packet read is checked twice: against a constant (`offset + size <= max_caplen`), which is what
the verifier needs to prove the access safe, and against `end`, which gives libpcap's semantics. For a
constant offset the first check is done here, at translation time. `max_caplen` defaults to 65535,
the largest packet offset the verifier accepts for direct packet access (MAX_PACKET_OFF); reads past
it behave as reads past the captured bytes.

cBPF jumps only forward, so the program is a DAG: it is emitted as straight-line C with one label per
jump target and `goto`s, A and X are `__u32` locals and so are the scratch words M[0..15].

Ancillary loads (`ld [SKF_AD_OFF + n]`, which libpcap emits for live Linux handles) are out of bounds by
default, as in libpcap's interpreter. With `ancillary=True` they read what the Linux kernel gives a
packet socket's filter there, passed in as parameters after `wirelen` (the caller reads them from the
skb, so the translation stays pure)::

    NAME(pkt, end, wirelen, protocol, pkt_type, ifindex, vlan_tci, vlan_present, vlan_tpid)

protocol and vlan_tpid in host byte order, vlan_present 0 or 1; any other ancillary offset (mark,
rxhash, cpu, ...) raises `FilterError` naming it.
"""
from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

from .._libpcap import lib
from ..errors import FilterError
from .cbpf import (
    ABS,
    ADD,
    ALU,
    ANCILLARY,
    AND,
    DIV,
    IMM,
    IND,
    JA,
    JEQ,
    JGE,
    JGT,
    JMP,
    JSET,
    LD,
    LDX,
    LEN,
    LOAD_SIZES,
    LSH,
    MEM,
    MEMWORDS,
    MISC,
    MOD,
    MSH,
    MUL,
    NEG,
    OPCODES,
    OR,
    RET,
    RSH,
    SKF_AD_OFF,
    ST,
    STX,
    SUB,
    TAX,
    TXA,
    XOR,
    A,
    B,
    Insn,
    K,
    W,
    X,
    disassemble,
)

__all__ = ["MAX_CAPLEN", "MAX_INSNS", "cbpf_to_c", "check_cbpf"]

MAX_INSNS = 4096  # BPF_MAXINSNS of <linux/bpf_common.h>: the kernel's limit for classic programs
MAX_CAPLEN = 0xFFFF  # MAX_PACKET_OFF in the kernel's verifier

_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
_CONDITIONAL_JUMPS = {JMP | op | src for op in (JEQ, JGT, JGE, JSET) for src in (K, X)}
# With ancillary=True: the parameter each ancillary load reads, in the order of the function's parameters.
ANCILLARY_PARAMETERS = {
    SKF_AD_OFF + lib.SKF_AD_PROTOCOL: "protocol",
    SKF_AD_OFF + lib.SKF_AD_PKTTYPE: "pkt_type",
    SKF_AD_OFF + lib.SKF_AD_IFINDEX: "ifindex",
    SKF_AD_OFF + lib.SKF_AD_VLAN_TAG: "vlan_tci",
    SKF_AD_OFF + lib.SKF_AD_VLAN_TAG_PRESENT: "vlan_present",
    SKF_AD_OFF + lib.SKF_AD_VLAN_TPID: "vlan_tpid",
}
# Past the kernel's ancillary offsets, an ABS load is an ordinary (failing) read.
_SKF_AD_END = SKF_AD_OFF + lib.SKF_AD_MAX


def _normalise(insns: Iterable) -> list[Insn]:
    program = []
    for pc, insn in enumerate(insns):
        try:
            code, jt, jf, k = insn
        except (TypeError, ValueError):
            raise FilterError(f"instruction {pc}: expected (code, jt, jf, k), got {insn!r}") from None
        for name, value, limit in (("code", code, 0xFFFF), ("jt", jt, 0xFF), ("jf", jf, 0xFF),
                                   ("k", k, 0xFFFFFFFF)):
            if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= limit:
                raise FilterError(f"instruction {pc}: {name} must be an integer in 0..{limit:#x}, "
                                  f"not {value!r}")
        program.append(Insn(code, jt, jf, k))
    return program


def _fail(pc: int, insn: Insn, reason: str) -> FilterError:
    return FilterError(f"instruction {pc} ({disassemble(insn, pc)}): {reason}")


def check_cbpf(insns: Iterable) -> list[Insn]:
    """Check a classic BPF program as the Linux kernel does before it accepts one; return it as `Insn`s.

    Raises `FilterError` naming the first bad instruction: unknown opcodes, scratch memory indexes
    out of range, division or modulo by constant zero, constant shifts by 32 or more, jumps past the
    end (and backward jumps, which libpcap emits for `protochain`), a last instruction that is not a
    return, and reads of scratch memory that may not have been written on every path.
    """
    program = _normalise(insns)
    length = len(program)
    if length == 0:
        raise FilterError("a classic BPF program needs at least one instruction")
    if length > MAX_INSNS:
        raise FilterError(f"classic BPF program has {length} instructions; the kernel accepts at most "
                          f"{MAX_INSNS}")
    for pc, insn in enumerate(program):
        code, jt, jf, k = insn
        if code not in OPCODES:
            raise FilterError(f"instruction {pc}: unknown opcode {code:#06x}")
        if code in (LD | MEM, LDX | MEM, ST, STX) and k >= MEMWORDS:
            raise _fail(pc, insn, f"scratch memory index {k} is out of range 0..{MEMWORDS - 1}")
        if code in (ALU | DIV | K, ALU | MOD | K) and k == 0:
            raise _fail(pc, insn, "division by constant zero")
        if code in (ALU | LSH | K, ALU | RSH | K) and k >= 32:
            raise _fail(pc, insn, f"shift by {k}; constant shifts must be below 32")
        if code == JMP | JA:
            if k >= 0x80000000:
                raise _fail(pc, insn, "backward jump; only forward jumps can be translated (libpcap "
                                      "emits backward jumps for 'protochain')")
            if k >= length - pc - 1:
                raise _fail(pc, insn, f"jump to {pc + 1 + k} is past the end of the program "
                                      f"({length} instructions)")
        elif code in _CONDITIONAL_JUMPS and (pc + 1 + jt >= length or pc + 1 + jf >= length):
            raise _fail(pc, insn, f"jump to {pc + 1 + max(jt, jf)} is past the end of the program "
                                  f"({length} instructions)")
    if program[-1].code not in (RET | K, RET | A):
        raise _fail(length - 1, program[-1], "the last instruction of a program must be a return")
    _check_scratch_memory(program)
    return program


def _check_scratch_memory(program: Sequence[Insn]) -> None:
    """The kernel's check_load_and_stores(), bit for bit: one pass in program order over a bitmask of
    the words written on every path so far. (Like the kernel, a return does not reset the mask.)"""
    every = (1 << MEMWORDS) - 1
    masks = [every] * len(program)
    valid = 0
    for pc, insn in enumerate(program):
        valid &= masks[pc]
        code, jt, jf, k = insn
        if code in (ST, STX):
            valid |= 1 << k
        elif code in (LD | MEM, LDX | MEM):
            if not valid & (1 << k):
                raise _fail(pc, insn, f"reads scratch memory M[{k}], which may not have been written")
        elif code == JMP | JA:
            masks[pc + 1 + k] &= valid
            valid = every
        elif code in _CONDITIONAL_JUMPS:
            masks[pc + 1 + jt] &= valid
            masks[pc + 1 + jf] &= valid
            valid = every


def cbpf_to_c(insns: Iterable, function_name: str = "pynetmon_filter", *,
              max_caplen: int = MAX_CAPLEN, ancillary: bool = False) -> str:
    """Translate a classic BPF program into one eBPF C function; pure (same input, same output, no I/O).

    The program is checked first (`check_cbpf`); see the module documentation for the function's
    signature and how to call it. The source is self-contained apart from <linux/types.h>, and several
    translated filters (with distinct names) can share one C file. `ancillary=True` gives Linux's
    ancillary loads the kernel's meaning (skb metadata passed as parameters) instead of libpcap
    interpreter's (out of bounds).

    >>> print(cbpf_to_c([(6, 0, 0, 262144)], "accept_all"))  # doctest: +ELLIPSIS
    /* ...
    static __always_inline __u32 accept_all(const __u8 *pkt, const __u8 *end, __u32 wirelen)
    {
    ...
    """
    program = check_cbpf(insns)
    if not isinstance(function_name, str) or not _IDENTIFIER.match(function_name):
        raise ValueError(f"function_name must be a C identifier, not {function_name!r}")
    if not isinstance(max_caplen, int) or not 4 <= max_caplen <= MAX_CAPLEN:
        raise ValueError(f"max_caplen must be between 4 and {MAX_CAPLEN}, not {max_caplen!r}")
    return _Emitter(program, function_name, max_caplen, ancillary).source()


_PRELUDE = """\
#ifndef PYNETMON_FILTER_PRELUDE
#define PYNETMON_FILTER_PRELUDE
#include <linux/types.h>
#ifndef __always_inline
#define __always_inline inline __attribute__((always_inline))
#endif
/* Packet words are read with one (possibly unaligned) load and byte-swapped: cBPF is big-endian. */
typedef __u16 __attribute__((__may_alias__)) pynetmon_filter_u16;
typedef __u32 __attribute__((__may_alias__)) pynetmon_filter_u32;
/* Makes an offset opaque to clang, so that its bounds check and its use are on one register: otherwise
 * clang may check one copy of X and add another to the pointer, which the verifier cannot follow. */
#define PYNETMON_FILTER_BARRIER(var) asm volatile("" : "+r"(var))
#endif
"""

_ALU_C = {ADD: "A += {v};", SUB: "A -= {v};", MUL: "A *= {v};", AND: "A &= {v};", OR: "A |= {v};",
          XOR: "A ^= {v};"}
_JUMP_C = {JEQ: "A == {v}", JGT: "A > {v}", JGE: "A >= {v}", JSET: "(A & {v}) != 0"}


class _Emitter:
    def __init__(self, program: list[Insn], name: str, max_caplen: int, ancillary: bool):
        self.program = program
        self.name = name
        self.cap = max_caplen
        self.ancillary = ancillary
        self.targets: set[int] = set()  # instructions a goto leads to: they get a label

    def source(self) -> str:
        words = sorted({k for code, _, _, k in self.program if code in (LD | MEM, LDX | MEM, ST, STX)})
        out = [(f"/* {self.name}: translated by pynetmon.filter.cbpf_to_c from {len(self.program)} classic "
               f"BPF instructions (max_caplen {self.cap}). */"),
               _PRELUDE.rstrip("\n"),
               self._signature(),
               "{",
               "\t__u32 A = 0, X = 0;"]
        if words:
            out.append("\t__u32 " + ", ".join(f"M{w} = 0" for w in words) + ";")
            out.append("\t" + " ".join(f"(void)M{w};" for w in words))  # libpcap may store and never load
        out.append("\t(void)pkt; (void)end; (void)wirelen; (void)A; (void)X;")
        if self.ancillary:
            out.append("\t" + " ".join(f"(void){name};" for name in self._parameters()))
        bodies = [self._insn(pc, insn) for pc, insn in enumerate(self.program)]
        for pc, (insn, body) in enumerate(zip(self.program, bodies)):
            label = f"L{pc}: " if pc in self.targets else ""
            out.append(f"{label}\t/* {pc}: {disassemble(insn, pc)} */")
            out.extend("\t" + line for line in body or [";"])
        out.append("}")
        return "\n".join(out) + "\n"

    def _signature(self) -> str:
        extra = "".join(f", __u32 {name}" for name in self._parameters())
        return f"static __always_inline __u32 {self.name}(const __u8 *pkt, const __u8 *end, __u32 wirelen{extra})"

    def _parameters(self) -> list[str]:
        return list(ANCILLARY_PARAMETERS.values()) if self.ancillary else []

    def _ancillary_load(self, pc: int, insn: Insn) -> list[str]:
        # The kernel reads the whole field whatever the load's size (libpcap emits `ldb [vlan_tci]`).
        name = ANCILLARY_PARAMETERS.get(insn.k)
        if name is None:
            raise _fail(pc, insn, f"ancillary load SKF_AD_OFF + {insn.k - SKF_AD_OFF} is not supported; "
                                  f"supported: {', '.join(ANCILLARY[k] for k in ANCILLARY_PARAMETERS)}")
        return [f"A = {name};  /* [{ANCILLARY[insn.k]}]: skb metadata */"]

    def _goto(self, pc: int, target: int) -> list[str]:
        if target == pc + 1:
            return []
        self.targets.add(target)
        return [f"goto L{target};"]

    def _load(self, size: int, pointer: str) -> str:
        if size == 4:
            return f"A = __builtin_bswap32(*(const pynetmon_filter_u32 *)({pointer}));"
        if size == 2:
            return f"A = __builtin_bswap16(*(const pynetmon_filter_u16 *)({pointer}));"
        return f"A = *({pointer});"

    def _insn(self, pc: int, insn: Insn) -> list[str]:
        code, jt, jf, k = insn
        cls = code & 0x07
        kc = f"{k:#x}U"
        if cls == LD and code & 0xE0 == ABS:
            size = LOAD_SIZES[code & 0x18]
            if self.ancillary and SKF_AD_OFF <= k < _SKF_AD_END:
                return self._ancillary_load(pc, insn)
            if k + size > self.cap:
                return ["return 0;  /* past the largest captured length: out of bounds */"]
            return [f"if (pkt + {k} + {size} > end)", "\treturn 0;", self._load(size, f"pkt + {k}")]
        if cls == LD and code & 0xE0 == IND:
            size = LOAD_SIZES[code & 0x18]
            if k + size > self.cap:
                return ["return 0;  /* past the largest captured length: out of bounds */"]
            bound = self.cap - size - k
            # X <= bound proves pkt + k + X + size <= pkt + max_caplen to the verifier; libpcap's
            # overflow-free "X + k + size <= caplen" then reduces to the comparison with end.
            return ["{",
                    "\t__u64 off = X;",
                    "\tPYNETMON_FILTER_BARRIER(off);",
                    f"\tif (off > {bound})",
                    "\t\treturn 0;",
                    f"\tconst __u8 *p = pkt + {k} + off;",
                    f"\tif (p + {size} > end)",
                    "\t\treturn 0;",
                    "\t" + self._load(size, "p"),
                    "}"]
        if code == LDX | B | MSH:
            if k + 1 > self.cap:
                return ["return 0;  /* past the largest captured length: out of bounds */"]
            return [f"if (pkt + {k} + 1 > end)", "\treturn 0;", f"X = (pkt[{k}] & 0xf) << 2;"]
        if code == LD | W | LEN:
            return ["A = wirelen;"]
        if code == LDX | W | LEN:
            return ["X = wirelen;"]
        if code == LD | IMM:
            return [f"A = {kc};"]
        if code == LDX | IMM:
            return [f"X = {kc};"]
        if code == LD | MEM:
            return [f"A = M{k};"]
        if code == LDX | MEM:
            return [f"X = M{k};"]
        if code == ST:
            return [f"M{k} = A;"]
        if code == STX:
            return [f"M{k} = X;"]
        if cls == ALU:
            return self._alu(code, kc)
        if code == JMP | JA:
            return self._goto(pc, pc + 1 + k)
        if cls == JMP:
            return self._jump(pc, code, jt, jf, kc)
        if code == RET | K:
            return [f"return {kc};"]
        if code == RET | A:
            return ["return A;"]
        if code == MISC | TAX:
            return ["X = A;"]
        if code == MISC | TXA:
            return ["A = X;"]
        raise AssertionError(f"unchecked opcode {code:#x}")  # check_cbpf admits only OPCODES

    def _alu(self, code: int, kc: str) -> list[str]:
        op, src = code & 0xF0, code & 0x08
        v = "X" if src == X else kc
        if op == NEG:
            return ["A = 0U - A;"]
        if op in _ALU_C:
            return [_ALU_C[op].format(v=v)]
        if op in (DIV, MOD):
            sign = "/" if op == DIV else "%"
            if src == X:
                return ["if (X == 0)", "\treturn 0;", f"A {sign}= X;"]
            return [f"A {sign}= {kc};"]  # the checker rejected a constant zero
        if op in (LSH, RSH):
            sign = "<<" if op == LSH else ">>"
            if src == X:
                return [f"A = X < 32 ? A {sign} X : 0;"]
            return [f"A {sign}= {kc};"]  # the checker rejected constants above 31
        raise AssertionError(f"unchecked ALU opcode {code:#x}")

    def _jump(self, pc: int, code: int, jt: int, jf: int, kc: str) -> list[str]:
        cond = _JUMP_C[code & 0xF0].format(v="X" if code & 0x08 == X else kc)
        on_true, on_false = pc + 1 + jt, pc + 1 + jf
        if on_true == on_false:
            return self._goto(pc, on_true)
        if on_true == pc + 1:
            return [f"if (!({cond}))", "\t" + self._goto(pc, on_false)[0]]
        return [f"if ({cond})", "\t" + self._goto(pc, on_true)[0], *self._goto(pc, on_false)]

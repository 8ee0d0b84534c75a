"""A hypothesis strategy for random classic BPF programs that the kernel's checker accepts.

Valid by construction: a prologue stores to a few scratch words (the only ones read later), constants
are legal (no division by constant zero, constant shifts below 32), jumps land inside the program,
and the program ends with a return. Offsets of packet loads cluster where random packets have bytes,
with some far out and some that wrap around 2**32.
"""
from __future__ import annotations

from hypothesis import strategies as st

from pynetmon.filter import cbpf as op

LOAD_OFFSETS = st.one_of(st.integers(0, 100), st.sampled_from([0xFFFF, 0xFFFFFFFF, 0xFFFFFFFE, 0xFFFFF000]),
                         st.integers(0, 2**32 - 1))
CONSTANTS = st.one_of(st.integers(0, 64), st.sampled_from([0xFFFFFFFF, 0x80000000, 0x7FFFFFFF, 0x100]),
                      st.integers(0, 2**32 - 1))
ALU_OPS = [op.ADD, op.SUB, op.MUL, op.DIV, op.MOD, op.AND, op.OR, op.XOR, op.LSH, op.RSH]
JUMP_OPS = [op.JEQ, op.JGT, op.JGE, op.JSET]


@st.composite
def _straight(draw, stored: list[int]):
    """One instruction that is not a jump or a return."""
    kind = draw(st.sampled_from(["ld", "ld", "ldx", "alu", "alu", "st", "misc"]))
    if kind == "ld":
        mode = draw(st.sampled_from([op.ABS, op.IND, op.LEN, op.IMM, op.MEM]))
        if mode in (op.ABS, op.IND):
            size = draw(st.sampled_from([op.W, op.H, op.B]))
            k = draw(st.integers(0, 40)) if mode == op.IND and draw(st.booleans()) else draw(LOAD_OFFSETS)
            return (op.LD | size | mode, 0, 0, k)
        if mode == op.MEM:
            return (op.LD | op.MEM, 0, 0, draw(st.sampled_from(stored)))
        return (op.LD | op.W | mode if mode == op.LEN else op.LD | op.IMM, 0, 0, draw(CONSTANTS))
    if kind == "ldx":
        mode = draw(st.sampled_from([op.IMM, op.MEM, op.LEN, op.MSH]))
        if mode == op.MEM:
            return (op.LDX | op.MEM, 0, 0, draw(st.sampled_from(stored)))
        if mode == op.MSH:
            return (op.LDX | op.B | op.MSH, 0, 0, draw(LOAD_OFFSETS))
        if mode == op.LEN:
            return (op.LDX | op.W | op.LEN, 0, 0, 0)
        return (op.LDX | op.IMM, 0, 0, draw(st.one_of(st.integers(0, 40), CONSTANTS)))
    if kind == "alu":
        alu = draw(st.sampled_from([*ALU_OPS, op.NEG]))
        if alu == op.NEG:
            return (op.ALU | op.NEG, 0, 0, 0)
        if draw(st.booleans()):
            return (op.ALU | alu | op.X, 0, 0, 0)
        if alu in (op.LSH, op.RSH):
            return (op.ALU | alu | op.K, 0, 0, draw(st.integers(0, 31)))
        if alu in (op.DIV, op.MOD):
            return (op.ALU | alu | op.K, 0, 0, draw(CONSTANTS.filter(bool)))
        return (op.ALU | alu | op.K, 0, 0, draw(CONSTANTS))
    if kind == "st":
        return (draw(st.sampled_from([op.ST, op.STX])), 0, 0, draw(st.integers(0, op.MEMWORDS - 1)))
    return (op.MISC | draw(st.sampled_from([op.TAX, op.TXA])), 0, 0, 0)


@st.composite
def random_programs(draw, max_body: int = 40) -> list[tuple[int, int, int, int]]:
    stored = draw(st.lists(st.integers(0, op.MEMWORDS - 1), min_size=1, max_size=4, unique=True))
    program = [(op.LD | op.IMM, 0, 0, draw(CONSTANTS))]
    for word in stored:
        program.append((draw(st.sampled_from([op.ST, op.STX])), 0, 0, word))
    body_length = draw(st.integers(1, max_body))
    start = len(program)
    total = start + body_length + 2  # the body, then two returns
    for pc in range(start, start + body_length):
        left = total - pc - 1  # instructions after this one
        kind = draw(st.sampled_from(["straight"] * 5 + ["jump", "jump", "ja", "ret"]))
        if kind == "straight":
            program.append(draw(_straight(stored)))
        elif kind == "ret":
            program.append((op.RET | draw(st.sampled_from([op.K, op.A])), 0, 0, draw(CONSTANTS)))
        elif kind == "ja":
            program.append((op.JMP | op.JA, 0, 0, draw(st.integers(0, left - 1))))
        else:
            code = op.JMP | draw(st.sampled_from(JUMP_OPS)) | draw(st.sampled_from([op.K, op.X]))
            jt = draw(st.integers(0, min(left - 1, 255)))
            jf = draw(st.integers(0, min(left - 1, 255)))
            program.append((code, jt, jf, draw(CONSTANTS)))
    program.append((op.RET | op.A, 0, 0, 0))
    program.append((op.RET | op.K, 0, 0, draw(CONSTANTS)))
    return program

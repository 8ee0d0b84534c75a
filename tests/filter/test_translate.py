"""Unit tests of the filter front end, the checker and the translator; none needs BPF.

The checker is also held to the kernel's own classic BPF checker, through SO_ATTACH_FILTER on a plain
socket (which needs no privileges).
"""
from __future__ import annotations

import builtins
import ctypes
import errno
import os
import re
import socket
import struct
import subprocess
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pynetmon.errors import FilterError
from pynetmon.filter import (
    MAX_CAPLEN,
    Insn,
    cbpf_to_c,
    check_cbpf,
    compile_cbpf,
    compile_cbpf_live,
    disassemble,
    interpret,
    libpcap_version,
)
from pynetmon.filter import cbpf as op

from .programs import random_programs

HERE = Path(__file__).resolve().parent
CORPUS = HERE.parent / "data" / "libpcap_en10mb_filters.txt"


def corpus() -> list[str]:
    lines = CORPUS.read_text().splitlines() + (HERE / "own_filters.txt").read_text().splitlines()
    return list(dict.fromkeys(line.strip() for line in lines if line.strip() and not line.startswith("#")))


# --- compile_cbpf ----------------------------------------------------------------------------------


def test_compile_ip():
    assert compile_cbpf("ip") == [(0x28, 0, 0, 12), (0x15, 0, 1, 0x800), (0x06, 0, 0, 262144), (0x06, 0, 0, 0)]
    assert all(isinstance(i, Insn) for i in compile_cbpf("ip"))


def test_compile_snaplen_and_linktype():
    assert compile_cbpf("ip", snaplen=96)[-2] == (0x06, 0, 0, 96)
    raw_ip = compile_cbpf("ip", linktype=12)  # DLT_RAW: no Ethernet header to look at
    assert raw_ip != compile_cbpf("ip")


@pytest.mark.parametrize("expr", ["all", " all ", "ALL"])
def test_all_selects_every_packet(expr):
    assert compile_cbpf(expr) == [(0x06, 0, 0, 262144)]
    assert interpret(compile_cbpf(expr), b"") == 262144


@pytest.mark.parametrize("expr", ["", "   ", "\n"])
def test_empty_expression_is_rejected(expr):
    with pytest.raises(FilterError, match="empty filter expression.*'all'"):
        compile_cbpf(expr)


@pytest.mark.parametrize(("expr", "message"), [
    ("tcp port", "syntax error"),
    ("garbage(", "syntax error"),
    ("ip[2:2] / 0 == 1", "division by zero"),
    ("ip[0] << 40 == 1", "shift by more than 31 bits"),
    ("port 99999", "99999 > 65535"),
    ("host 1.2.3.4.5", ""),
])
def test_bad_expression_raises_libpcaps_message(expr, message):
    with pytest.raises(FilterError) as info:
        compile_cbpf(expr)
    assert message in str(info.value)
    assert str(info.value)  # never empty


def test_compile_rejects_non_strings_and_bad_snaplen():
    with pytest.raises(TypeError):
        compile_cbpf(b"ip")
    with pytest.raises(FilterError, match="snaplen"):
        compile_cbpf("ip", snaplen=0)
    with pytest.raises(FilterError, match="NUL"):
        compile_cbpf("ip\0tcp")


def test_libpcap_version():
    assert libpcap_version().startswith("libpcap version")


def test_disassemble_like_tcpdump():
    text = [disassemble(insn, pc) for pc, insn in enumerate(compile_cbpf("tcp port 80"))]
    assert text[:2] == ["ldh [12]", "jeq #0x86dd jt 2 jf 8"]
    assert "ldxb 4*([14]&0xf)" in text and "ldh [x + 14]" in text and text[-1] == "ret #0"
    assert disassemble((0xFFFF, 0, 0, 0)) == ".word 0xffff"


# --- check_cbpf ------------------------------------------------------------------------------------

RET0 = (op.RET | op.K, 0, 0, 0)


@pytest.mark.parametrize(("program", "message"), [
    ([], "at least one instruction"),
    ([RET0] * 4097, "at most 4096"),
    ([(0xFFFF, 0, 0, 0), RET0], r"instruction 0: unknown opcode 0xffff"),
    ([(op.ALU | op.NEG | op.X, 0, 0, 0), RET0], r"instruction 0: unknown opcode 0x008c"),
    ([(op.LD | op.IMM, 0, 0, 1), (op.ALU | op.DIV | op.K, 0, 0, 0), RET0],
     r"instruction 1 \(div #0x0\): division by constant zero"),
    ([(op.ALU | op.MOD | op.K, 0, 0, 0), RET0], r"instruction 0 \(mod #0x0\): division by constant zero"),
    ([(op.ALU | op.LSH | op.K, 0, 0, 32), RET0], r"instruction 0 \(lsh #0x20\): shift by 32"),
    ([(op.ALU | op.RSH | op.K, 0, 0, 40), RET0], r"instruction 0 \(rsh #0x28\): shift by 40"),
    ([(op.ST, 0, 0, 16), RET0], r"instruction 0 \(st M\[16\]\): scratch memory index 16"),
    ([(op.LD | op.MEM, 0, 0, 3), RET0], r"instruction 0 \(ld M\[3\]\): reads scratch memory M\[3\]"),
    ([(op.JMP | op.JA, 0, 0, 1), RET0], r"instruction 0 \(ja 2\): jump to 2 is past the end"),
    ([RET0, (op.JMP | op.JA, 0, 0, 0xFFFFFFFE), RET0], r"instruction 1 \(ja 0\): backward jump"),
    ([(op.JMP | op.JEQ | op.K, 0, 1, 0), RET0], r"instruction 0 \(jeq #0x0 jt 1 jf 2\): jump to 2 is past"),
    ([(op.JMP | op.JGT | op.X, 1, 0, 0), RET0], r"instruction 0 \(jgt x jt 2 jf 1\): jump to 2 is past"),
    ([(op.LD | op.IMM, 0, 0, 1)], r"instruction 0 \(ld #0x1\): the last instruction .* must be a return"),
    ([(op.RET | op.K, 0, 0, 0), (op.LD | op.IMM, 0, 0, 1)], "instruction 1 .*must be a return"),
    ([(op.LD | op.IMM, 0, 0, -1), RET0], "instruction 0: k must be an integer"),
    ([(op.LD | op.IMM, 256, 0, 0), RET0], "instruction 0: jt must be an integer"),
    ([(op.LD | op.IMM, 0, 0), RET0], r"instruction 0: expected \(code, jt, jf, k\)"),
    ([RET0, (op.RET, 0, 0, True)], "instruction 1: k must be an integer"),
])
def test_checker_rejects(program, message):
    with pytest.raises(FilterError, match=message):
        check_cbpf(program)
    with pytest.raises(FilterError, match=message):
        cbpf_to_c(program)


def test_scratch_memory_must_be_written_on_every_path():
    # ld [0]; jeq #1 → st M[2] only on the true path; both paths join and read M[2].
    one_path = [(op.LD | op.B | op.ABS, 0, 0, 0), (op.JMP | op.JEQ | op.K, 0, 1, 1), (op.ST, 0, 0, 2),
                (op.LD | op.MEM, 0, 0, 2), (op.RET | op.A, 0, 0, 0)]
    with pytest.raises(FilterError, match=r"instruction 3 \(ld M\[2\]\)"):
        check_cbpf(one_path)
    both_paths = [(op.ST, 0, 0, 2)] + [(c, jt, jf, k) for c, jt, jf, k in one_path]
    assert check_cbpf(both_paths) == both_paths
    # A read after a return that only a jump reaches: like the kernel, the fall-through mask is kept.
    after_ret = [(op.ST, 0, 0, 1), (op.JMP | op.JEQ | op.K, 1, 1, 0), (op.RET | op.K, 0, 0, 0),
                 (op.LDX | op.MEM, 0, 0, 1), (op.RET | op.K, 0, 0, 1)]
    assert check_cbpf(after_ret)


def test_checker_accepts_the_corpus():
    for expr in corpus():
        check_cbpf(compile_cbpf(expr))


def test_protochain_needs_backward_jumps():
    with pytest.raises(FilterError, match=r"instruction \d+ \(ja \d+\): backward jump.*protochain"):
        cbpf_to_c(compile_cbpf("ip6 protochain 6"))


SO_ATTACH_FILTER = 26
SKF_LL_OFF = 0xFFE00000  # from here up, ABS offsets mean something to the kernel only (ancillary data)


def kernel_accepts(program) -> bool:
    """Whether Linux's classic BPF checker accepts the program (SO_ATTACH_FILTER on a UDP socket)."""
    code = b"".join(struct.pack("=HBBI", *insn) for insn in program) or b"\0" * 8
    buf = ctypes.create_string_buffer(code, len(code))
    fprog = struct.pack("=HxxxxxxQ", len(program), ctypes.addressof(buf))
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        try:
            sock.setsockopt(socket.SOL_SOCKET, SO_ATTACH_FILTER, fprog)
        except OSError as exc:
            assert exc.errno == errno.EINVAL, exc
            return False
    return True


@st.composite
def mutated_programs(draw):
    """Valid random programs with a few instructions broken in the ways the checker must catch."""
    program = [list(insn) for insn in draw(random_programs(max_body=12))]
    for _ in range(draw(st.integers(0, 3))):
        pc = draw(st.integers(0, len(program) - 1))
        field = draw(st.sampled_from(["code", "code", "jt", "jf", "k", "k", "drop"]))
        if field == "code":
            program[pc][0] = draw(st.one_of(st.sampled_from(sorted(op.OPCODES)), st.integers(0, 0xFF)))
        elif field in ("jt", "jf"):
            program[pc][1 if field == "jt" else 2] = draw(st.integers(0, 20))
        elif field == "k":
            program[pc][3] = draw(st.one_of(st.integers(0, 40), st.integers(0, 0xFFFFFFFF)))
        elif len(program) > 1:
            del program[pc]
    # ABS loads at the kernel's ancillary offsets mean something else to it: libpcap's meaning
    # (out of bounds) is what we translate, so leave them out of this comparison.
    return [tuple(i) for i in program
            if not (i[0] in (op.LD | s | op.ABS for s in (op.W, op.H, op.B)) and i[3] >= SKF_LL_OFF)]


@settings(max_examples=1500, derandomize=True, database=None, deadline=None,
          suppress_health_check=list(HealthCheck))
@given(program=mutated_programs())
def test_checker_agrees_with_the_kernel(program):
    try:
        check_cbpf(program)
        ours = True
    except FilterError:
        ours = False
    assert ours == kernel_accepts(program), program


def test_kernel_check_helper_sees_ancillary_loads():
    """Sanity of the helper: the kernel accepts SKF_AD_PKTTYPE (libpcap's 'inbound'), as we do."""
    inbound = compile_cbpf("inbound")
    assert kernel_accepts(inbound) and check_cbpf(inbound)
    assert not kernel_accepts([(op.LD | op.MEM, 0, 0, 0), RET0])


# --- cbpf_to_c -------------------------------------------------------------------------------------


def test_translation_is_pure(monkeypatch):
    program = compile_cbpf("tcp port 80 or udp portrange 1-1023")
    first = cbpf_to_c(program)

    def no_io(*args, **kwargs):
        raise AssertionError("cbpf_to_c did I/O")

    for module, name in ((builtins, "open"), (os, "open"), (subprocess, "Popen"), (socket, "socket")):
        monkeypatch.setattr(module, name, no_io)
    assert cbpf_to_c(program) == first
    assert cbpf_to_c(list(program)) == cbpf_to_c(tuple(tuple(i) for i in program))


def test_translation_has_one_label_per_jump_target():
    program = compile_cbpf("tcp port 80")
    source = cbpf_to_c(program, "f")
    targets = set()
    for pc, (code, jt, jf, k) in enumerate(program):
        if code & 0x07 == op.JMP:
            targets |= {pc + 1 + jt, pc + 1 + jf} if code != op.JMP | op.JA else {pc + 1 + k}
    labels = {int(n) for n in re.findall(r"^L(\d+):", source, re.MULTILINE)}
    assert labels == {int(n) for n in re.findall(r"goto L(\d+);", source)}  # no unused label
    assert labels <= targets and len(labels) == source.count(": \t/*")
    assert "static __always_inline __u32 f(const __u8 *pkt, const __u8 *end, __u32 wirelen)" in source


def test_translation_names_and_limits():
    with pytest.raises(ValueError, match="C identifier"):
        cbpf_to_c([RET0], "not valid")
    with pytest.raises(ValueError, match="max_caplen"):
        cbpf_to_c([RET0], max_caplen=MAX_CAPLEN + 1)
    # A load that can never be inside the captured bytes is decided here, not in the kernel.
    far = cbpf_to_c([(op.LD | op.W | op.ABS, 0, 0, MAX_CAPLEN - 3), (op.RET | op.A, 0, 0, 0)])
    assert "return 0;  /* past the largest" in far
    near = cbpf_to_c([(op.LD | op.W | op.ABS, 0, 0, MAX_CAPLEN - 4), (op.RET | op.A, 0, 0, 0)])
    assert "return 0;  /* past the largest" not in near
    small = cbpf_to_c([(op.LD | op.W | op.ABS, 0, 0, 100), (op.RET | op.A, 0, 0, 0)], max_caplen=64)
    assert "return 0;  /* past the largest" in small


def test_translation_semantics_in_the_source():
    """The cases Polycube's translator got wrong, visible in the C itself."""
    tax_txa = cbpf_to_c([(op.MISC | op.TAX, 0, 0, 0), (op.MISC | op.TXA, 0, 0, 0), (op.RET | op.A, 0, 0, 0)])
    assert tax_txa.index("X = A;") < tax_txa.index("A = X;")
    div = cbpf_to_c([(op.ALU | op.DIV | op.X, 0, 0, 0), (op.RET | op.A, 0, 0, 0)])
    assert "if (X == 0)\n\t\treturn 0;\n\tA /= X;" in div
    shift = cbpf_to_c([(op.ALU | op.LSH | op.X, 0, 0, 0), (op.RET | op.A, 0, 0, 0)])
    assert "A = X < 32 ? A << X : 0;" in shift
    for name, alu in (("+=", op.ADD), ("-=", op.SUB), ("*=", op.MUL), ("&=", op.AND), ("|=", op.OR),
                      ("^=", op.XOR)):
        assert f"A {name} 0x7U;" in cbpf_to_c([(op.ALU | alu | op.K, 0, 0, 7), (op.RET | op.A, 0, 0, 0)])


@settings(max_examples=300, derandomize=True, database=None, deadline=None,
          suppress_health_check=list(HealthCheck))
@given(program=random_programs())
def test_random_programs_translate(program):
    source = cbpf_to_c(program, "f")
    assert source.count("return") >= 1 and source == cbpf_to_c(program, "f")


def test_every_translation_compiles_cleanly():
    """All corpus filters in one file, compiled by clang with -Wall -Werror (no kernel needed)."""
    from pynetmon.filter.packet_filter import filter_object_source
    from pynetmon.toolchain import compile_c
    exprs = [e for e in corpus() if "protochain" not in e]
    source = filter_object_source([compile_cbpf(e) for e in exprs], [f"f{i}" for i in range(len(exprs))])
    # One file of every filter: longer than the 10 s a Dynmon compile gets on a loaded machine.
    assert compile_c(source, filename="corpus.bpf.c", cflags=("-Wall", "-Werror"), timeout=300)


# --- live-handle compilation and Linux's ancillary loads ---------------------------------------------


def test_live_compile_tests_vlan_tags_in_skb_metadata_like_tcpdump_i():
    """On a live Linux handle libpcap reads the tag the kernel keeps in metadata ([vlanp], [vlan_tci]),
    exactly as `tcpdump -i lo -d` shows; on a dead handle it looks for a tag in the packet bytes only."""
    live = compile_cbpf_live("vlan 100 and udp")
    text = [disassemble(insn, pc) for pc, insn in enumerate(live)]
    assert text[3:5] == ["ldb [vlanp]", "jeq #0x1 jt 12 jf 5"] and "ldb [vlan_tci]" in text
    proc = subprocess.run(["tcpdump", "-i", "lo", "-d", "vlan 100 and udp"], check=True, capture_output=True,
                          text=True, timeout=30)
    assert [" ".join(line.split()[1:]) for line in proc.stdout.splitlines()] == [" ".join(t.split()) for t in text]
    assert not any(k >= op.SKF_AD_OFF for _, _, _, k in compile_cbpf("vlan 100 and udp"))
    assert compile_cbpf_live("udp") == compile_cbpf("udp") and compile_cbpf_live("all") == compile_cbpf("all")


def test_live_compile_errors_name_the_problem():
    with pytest.raises(FilterError, match="syntax error"):
        compile_cbpf_live("tcp prot 80")
    with pytest.raises(FilterError, match="empty filter expression"):
        compile_cbpf_live(" ")
    with pytest.raises(FilterError, match=r"cannot open a live libpcap handle on 'pnm-no-such-dev'.*No such device"):
        compile_cbpf_live("udp", device="pnm-no-such-dev")


def test_ancillary_loads_read_parameters_only_when_asked():
    inbound = compile_cbpf_live("inbound and ifindex 3")
    offline = cbpf_to_c(inbound, "f")
    assert "__u32 wirelen)" in offline and "pkt_type" not in offline  # libpcap interpreter: out of bounds
    live = cbpf_to_c(inbound, "f", ancillary=True)
    assert ("f(const __u8 *pkt, const __u8 *end, __u32 wirelen, __u32 protocol, __u32 pkt_type, __u32 ifindex, "
            "__u32 vlan_tci, __u32 vlan_present, __u32 vlan_tpid)") in live
    assert "A = pkt_type;" in live and "A = ifindex;" in live
    # every size reads the whole field, as the kernel does (libpcap emits `ldb [vlan_tci]`)
    for size in (op.B, op.H, op.W):
        source = cbpf_to_c([(op.LD | size | op.ABS, 0, 0, op.SKF_AD_OFF + 44), (op.RET | op.A, 0, 0, 0)],
                           ancillary=True)
        assert "A = vlan_tci;" in source
    mark = [(op.LD | op.W | op.ABS, 0, 0, op.SKF_AD_OFF + 20), (op.RET | op.A, 0, 0, 0)]  # SKF_AD_MARK
    with pytest.raises(FilterError, match=r"instruction 0 \(ld \[4294963220\]\): ancillary load SKF_AD_OFF \+ 20 "
                                          r"is not supported; supported: proto, type, ifidx"):
        cbpf_to_c(mark, ancillary=True)
    assert "return 0;" in cbpf_to_c(mark)  # offline: out of bounds, as before


def test_ancillary_translations_compile_cleanly():
    from pynetmon.toolchain import compile_c
    exprs = ["vlan", "vlan 100 and udp", "vlan and vlan 20 and tcp port 80", "inbound", "outbound and ifindex 2",
             "not vlan", "vlan 1 or vlan 2"]
    source = "\n".join(cbpf_to_c(compile_cbpf_live(e), f"g{i}", ancillary=True) for i, e in enumerate(exprs))
    assert compile_c(source + "\nchar LICENSE[] __attribute__((section(\"license\"))) = \"GPL\";\n",
                     filename="ancillary.bpf.c", cflags=("-Wall", "-Werror", "-Wno-unused-function"))

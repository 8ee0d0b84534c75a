"""The Polycube/BCC → libbpf translation: what is rewritten, that line numbers survive, and that clang's
diagnostics point at the user's lines."""
from __future__ import annotations

import re

import pytest

from pynetmon.dynmon.dialect import detect_dialect, translate
from pynetmon.errors import CompileError, ConfigError
from pynetmon.toolchain import compile_c

from .helpers import example

LIBBPF = """#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
SEC("tc") int count(struct __sk_buff *skb) { return -1; }
"""


def user_part(source: str, origin: str) -> list[str]:
    """The lines of the translation that carry the user's code (after `#line 1 "origin"`)."""
    lines = source.splitlines()
    start = lines.index(f'#line 1 "{origin}"') + 1
    end = next((i for i in range(start, len(lines)) if lines[i].startswith("#line 1 ")), len(lines))
    return lines[start:end]


def test_detection():
    assert detect_dialect(LIBBPF) == "libbpf"
    assert detect_dialect("int handle_rx(struct CTXTYPE *ctx, struct pkt_metadata *md) { return RX_OK; }") == \
        "polycube"
    assert detect_dialect('BPF_TABLE("hash", u32, u64, t, 4);') == "polycube"
    # Mentions in comments or strings do not count.
    assert detect_dialect(LIBBPF + "/* handle_rx( BPF_ARRAY( */ char s[] = \"BPF_HASH(\";\n") == "libbpf"


def test_map_macros_and_methods_are_rewritten_line_for_line():
    code = """BPF_ARRAY(A);
BPF_HASH(H, struct key_t, u32,
         128);
BPF_TABLE("lru_percpu_hash", u32, u64, L, 16);
BPF_QUEUE(Q, u32, 8);
int handle_rx(struct CTXTYPE *ctx, struct pkt_metadata *md) {
    u32 k = 0, v;
    H.update(&k, &v); H . lookup
        (&k); A.increment(k, 2); Q.push(&v, 0);
    /* A.lookup(&k) stays as written in comments */
    return RX_OK;
}
"""
    unit = translate(code, direction="ingress")
    body = user_part(unit.source, "ingress-path.code")
    assert len(body) == code.count("\n")
    assert body[0] == "PYNETMON_MAP(BPF_MAP_TYPE_ARRAY, int, u64, A, (10240), (0));"
    assert body[1:3] == ["PYNETMON_MAP(BPF_MAP_TYPE_HASH, struct key_t, u32, H, (128), (0))", ";"]
    assert body[3] == "PYNETMON_MAP(BPF_MAP_TYPE_LRU_PERCPU_HASH, u32, u64, L, (16), (0));"
    assert body[4] == "PYNETMON_KEYLESS_MAP(BPF_MAP_TYPE_QUEUE, u32, Q, (8));"
    assert "pynetmon_update(H,&k, &v); pynetmon_lookup(H," in body[7]
    assert body[8] == "&k); pynetmon_increment(A,k, 2); pynetmon_push(Q,&v, 0);"
    assert "A.lookup(&k) stays" in body[9]
    assert [(m.name, m.type) for m in unit.maps] == [("A", "array"), ("H", "hash"), ("L", "lru_percpu_hash"),
                                                     ("Q", "queue")]
    assert unit.program == "dynmon_ingress" and 'SEC("tc")' in unit.source


def test_bcc_includes_and_pcn_log_formats():
    code = ('#include <uapi/linux/udp.h>\n#include <bcc/proto.h>\n'
            'int handle_rx(struct CTXTYPE *ctx, struct pkt_metadata *md) {\n'
            '  pcn_log(ctx, LOG_DEBUG, "%I:%P from %M", 1, 2, 3); return RX_OK; }\n')
    source = translate(code, direction="egress", pcn_log=True).source
    assert "#include <linux/udp.h>" in source and "bcc/proto.h>" not in source.replace("bcc header", "")
    assert '"%x:%u from %llx"' in source
    assert "#define PYNETMON_PCN_LOG 1" in source


def test_xdp_hook_uses_xdp_context():
    unit = translate("int handle_rx(struct CTXTYPE *ctx, struct pkt_metadata *md) { return RX_DROP; }",
                     direction="ingress", hook="xdp")
    assert "#define PYNETMON_HOOK_XDP 1" in unit.source and 'SEC("xdp")' in unit.source
    assert "XDP_DROP" in unit.source


def test_bad_macro_is_a_config_error_with_the_line():
    with pytest.raises(ConfigError) as info:
        translate('\n\nBPF_TABLE("ringbuf_of_doom", u32, u64, T, 4);\nint handle_rx() { return 0; }',
                  direction="ingress")
    (where, reason), = info.value.problems
    assert where == "ingress-path.code:3" and "'ringbuf_of_doom' is not supported" in reason
    with pytest.raises(ConfigError, match="needs its value argument"):
        translate("BPF_QUEUE(Q);\nint handle_rx() { return 0; }", direction="ingress")


@pytest.mark.parametrize("name", ["packet_counter", "ntp_packets_counter"])
@pytest.mark.parametrize("hook", ["tc", "xdp"])
def test_published_examples_compile(name, hook):
    unit = translate(example(name)["ingress-path"]["code"], direction="ingress", hook=hook)
    assert compile_c(unit.source, filename="ingress-path.bpf.c").startswith(b"\x7fELF")


def test_every_method_compiles():
    code = """
struct key_t { u32 a; u16 b; };
BPF_HASH(H, struct key_t, u64, 64);
BPF_TABLE("percpu_array", int, u64, P, 4);
BPF_STACK(S, u32, 8);
BPF_HISTOGRAM(HIST);
static __always_inline int handle_rx(struct CTXTYPE *ctx, struct pkt_metadata *md) {
    struct key_t k = {.a = md->packet_len, .b = 1};
    u64 zero = 0, one = 1, *p;
    u32 v = 7;
    p = H.lookup_or_try_init(&k, &zero);
    if (p) lock_xadd(p, 1);
    H.insert(&k, &one);
    H.update(&k, &one);
    H.delete(&k);
    P.increment(1);
    P.atomic_increment(2, 5);
    HIST.increment(bpf_log2l(md->packet_len));
    S.push(&v, 0);
    S.peek(&v);
    S.pop(&v);
    return htons(v) == 1 ? RX_DROP : RX_OK;
}
"""
    # bpf_log2l is BCC's; define it as a user would have to for libbpf-style code.
    code = "static __always_inline unsigned int bpf_log2l(unsigned long v) { return v > 1; }\n" + code
    unit = translate(code, direction="ingress")
    assert compile_c(unit.source, filename="ingress-path.bpf.c").startswith(b"\x7fELF")


def test_compile_errors_point_at_the_users_lines():
    # Polycube's examples use CRLF line ends; line 3 uses the undeclared `zero`.
    code = """BPF_ARRAY(C, u64, 1);
static __always_inline int handle_rx(struct CTXTYPE *ctx, struct pkt_metadata *md) {
    u64 *c = C.lookup(&zero);
    return RX_OK;
}""".replace("\n", "\r\n")
    with pytest.raises(CompileError) as info:
        compile_c(translate(code, direction="ingress").source, filename="ingress-path.bpf.c")
    assert re.search(r"^ingress-path\.code:3:\d+: error: use of undeclared identifier 'zero'",
                     info.value.diagnostics, re.MULTILINE), info.value.diagnostics
    with pytest.raises(CompileError) as info:
        compile_c(translate("#include <linux/bpf.h>\n\nint x = ;\n", direction="egress").source)
    assert re.search(r"^egress-path\.code:3:\d+: error", info.value.diagnostics, re.MULTILINE), info.value.diagnostics


def test_libbpf_code_is_left_alone_except_for_a_license():
    unit = translate(LIBBPF, direction="ingress")
    assert unit.dialect == "libbpf" and unit.program is None
    assert user_part(unit.source, "ingress-path.code") == LIBBPF.splitlines()
    assert 'SEC("license")' in unit.source
    licensed = LIBBPF + 'char LICENSE[] SEC("license") = "GPL";\n'
    assert translate(licensed, direction="ingress").source.count('SEC("license")') == 1

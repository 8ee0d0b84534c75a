"""Programs: identity, kernel info, and BPF_PROG_TEST_RUN (return value, packet out, repeat)."""
from __future__ import annotations

import pytest

import pynetmon
from pynetmon._binding import lib
from pynetmon.toolchain import compile_c

REWRITER = """#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
/* Swaps the two MAC addresses and answers XDP_TX for frames of at least 14 bytes, XDP_DROP otherwise. */
SEC("xdp")
int swap_macs(struct xdp_md *ctx)
{
    unsigned char *data = (void *)(long)ctx->data, *end = (void *)(long)ctx->data_end;
    if (data + 14 > end)
        return XDP_DROP;
#pragma unroll
    for (int i = 0; i < 6; i++) {
        unsigned char t = data[i];
        data[i] = data[i + 6];
        data[i + 6] = t;
    }
    return XDP_TX;
}
char LICENSE[] SEC("license") = "GPL";
"""


@pytest.fixture
def rewriter(bpf):
    with pynetmon.BPFObject(compile_c(REWRITER, filename="rewriter.bpf.c"), name="rewriter").load() as obj:
        yield obj.programs["swap_macs"]


def test_test_run_returns_verdict_and_rewritten_packet(rewriter):
    frame = bytes(range(6)) + bytes(range(10, 16)) + b"\x08\x00" + b"payload"
    run = rewriter.test_run(frame)
    assert run.retval == 3  # XDP_TX
    assert run.data == bytes(range(10, 16)) + bytes(range(6)) + b"\x08\x00" + b"payload"
    assert isinstance(run.duration_ns, int) and run.duration_ns >= 0
    with pytest.raises(pynetmon.BPFError, match="swap_macs.*Invalid argument"):
        rewriter.test_run(bytes(13))  # the kernel refuses test packets shorter than an Ethernet header


def test_identity_and_kernel_info(counter_object):
    prog = counter_object.programs["count_ingress"]
    assert (prog.name, prog.type, prog.section) == ("count_ingress", "sched_cls", "tc")
    assert counter_object.programs["count_xdp"].type == "xdp"
    info = prog.info()
    assert info["id"] == prog.id > 0 and info["name"] == "count_ingress" and info["type"] == "sched_cls"
    assert len(info["tag"]) == 16 and info["xlated_prog_len"] > 0
    assert "count_ingress" in repr(prog)


def test_repeat_runs_the_program_that_many_times(counter_object):
    prog = counter_object.programs["count_ingress"]
    assert prog.test_run(bytes(100), repeat=250).retval == 0xFFFFFFFF  # TC_ACT_UNSPEC (-1) as the kernel's u32
    [per_cpu] = [counter_object.maps["counters"][0]]
    assert sum(v["packets"] for v in per_cpu) == 250
    assert sum(v["bytes"] for v in per_cpu) == 250 * 100


def test_program_from_fd(counter_object):
    original = counter_object.programs["count_egress"]
    fd = lib.bpf_prog_get_fd_by_id(original.id)
    assert fd >= 0
    wrapped = pynetmon.Program.from_fd(fd, owned=True)
    assert (wrapped.name, wrapped.type, wrapped.id) == ("count_egress", "sched_cls", original.id)
    wrapped.close()
    with pytest.raises(ValueError, match="closed"):
        _ = wrapped.fd


def test_programs_are_specs_before_load(bpf):
    with pynetmon.BPFObject.from_package("counter") as obj:
        spec = obj.programs["count_xdp"]
        assert isinstance(spec, pynetmon.object.ProgramSpec) and spec.type == "xdp"
        obj.programs["count_egress"].set_autoload(False)
        obj.maps["counters"].set_max_entries(4)
        obj.load()
        assert set(obj.programs) == {"count_ingress", "count_xdp"}
        assert obj.maps["counters"].max_entries == 4 and len(obj.maps["counters"]) == 4

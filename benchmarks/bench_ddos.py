"""ddos: cost per packet of the XDP guard, BPF_PROG_TEST_RUN against an empty XDP program.

Run: `python -m pytest -q -s benchmarks/bench_ddos.py` (root; a few seconds)

The guard's program as the monitor loads it (on a test host's eth0), a 60-byte UDP frame, REPEAT runs per
round, median of ROUNDS interleaved rounds: the pass path (a known source whose bucket never runs dry:
pps = 2^27), the drop path of a rate-blocked source (pps = 1) and of a manual block (LPM trie hit).
Goal (issue 13): pass path within 1.1x the empty program. Nothing asserted on time.
"""
from __future__ import annotations

import os
import statistics

import pytest
from bench_monitors import _udp_frame  # the same 60-byte UDP frame as the other monitors' costs

from pynetmon import monitors
from pynetmon.object import BPFObject
from pynetmon.testhosts import TestHosts
from pynetmon.toolchain import compile_c

ROUNDS = 5
REPEAT = 1_000_000
EMPTY_XDP = '#include <linux/bpf.h>\n#include <bpf/bpf_helpers.h>\nchar LICENSE[] SEC("license") = "GPL";\n' \
            'SEC("xdp") int empty(struct xdp_md *ctx) { return XDP_PASS; }\n'


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root (BPF)")
def test_per_packet_cost():
    frame = _udp_frame()
    with TestHosts() as (a, b), BPFObject(compile_c(EMPTY_XDP, use_cache=False), name="empty") as empty, \
            monitors.open("ddos", interface="eth0", netns=b.netns, pps=1 << 27) as passing, \
            monitors.open("ddos", interface="eth0", netns=a.netns, pps=1) as limited:
        empty.load()
        progs = {"empty": empty.programs["empty"],
                 "ddos pass (known source, bucket)": passing.objects[0].programs["ddos_xdp"],
                 "ddos drop (rate-blocked source)": limited.objects[0].programs["ddos_xdp"]}
        for prog in progs.values():
            prog.test_run(frame, 1000)  # the source enters the table (and the limited one is blocked)
        limited.block("198.18.0.0/24")
        progs["ddos drop (manual block, LPM hit)"] = progs.pop("ddos drop (rate-blocked source)")
        rounds: dict[str, list[float]] = {name: [] for name in progs}
        for _ in range(ROUNDS):
            for name, prog in progs.items():
                rounds[name].append(prog.test_run(frame, REPEAT).duration_ns)
        limited.unblock("198.18.0.0/24")
        limited.objects[0].programs["ddos_xdp"].test_run(frame, 1000)
        rounds["ddos drop (rate-blocked source)"] = [
            limited.objects[0].programs["ddos_xdp"].test_run(frame, REPEAT).duration_ns for _ in range(ROUNDS)]
        snap = limited.snapshot()
    assert snap["dropped"]["rate"] > 0 and snap["dropped"]["blocklist"] > 0  # the drop paths were taken
    med = statistics.median
    base = med(rounds["empty"])
    print(f"\nBPF_PROG_TEST_RUN, XDP, 60-byte UDP frame, {REPEAT:,} repeats, median of {ROUNDS}; "
          f"load {os.getloadavg()[0]:.2f}")
    print("| program | ns/packet | minus empty | ratio to empty |")
    print("|---|---|---|---|")
    for name, values in rounds.items():
        print(f"| {name} | {med(values):.1f} | {med(values) - base:.1f} | {med(values) / base:.2f} |")

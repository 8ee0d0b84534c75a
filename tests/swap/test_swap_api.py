"""SwapDataplane's contract beyond exactness: value shapes, errors at injection, attach points, and the
pure helpers (fold, cpu lists) and the quiescer on their own."""
from __future__ import annotations

import os
import time

import pytest

from pynetmon import ConfigError, NotSupportedError, VerifierError
from pynetmon.link import attach_tc, attach_xdp
from pynetmon.swap import SwapDataplane, fold
from pynetmon.swap.quiesce import Quiescer, parse_cpu_list, realtime_kernel
from pynetmon.toolchain import compile_c

from .programs import counting_object, program_source

COUNTER_HASH = """struct { __uint(type, BPF_MAP_TYPE_HASH); __uint(max_entries, 8); __type(key, __u32);
                           __type(value, __u64); } counts SEC(".maps");"""
COUNT_BODY = "__u32 k = 0; __u64 one = 1, *v = bpf_map_lookup_elem(&counts, &k); " \
             "if (v) __sync_fetch_and_add(v, 1); else bpf_map_update_elem(&counts, &k, &one, 0); return 0;"


# ---- pure helpers -------------------------------------------------------------------------------------
@pytest.mark.parametrize("total, delta, expected", [
    (3, 4, 7),
    (1.5, 1.0, 2.5),
    ({"packets": 2, "bytes": 100}, {"packets": 1, "bytes": 60}, {"packets": 3, "bytes": 160}),
    ([1, 2, 3], [10, 20, 30], [11, 22, 33]),                             # per-CPU values, arrays
    ({"h": [1, 0], "n": {"x": 1}}, {"h": [0, 5], "n": {"x": 2}}, {"h": [1, 5], "n": {"x": 3}}),
    ({"tag": b"ab", "n": 1}, {"tag": b"cd", "n": 1}, {"tag": b"cd", "n": 2}),   # bytes: newest wins
    ({"tag": b"ab", "n": 1}, {"tag": b"\0\0", "n": 0}, {"tag": b"ab", "n": 1}),  # ...unless not written
    (True, False, False),                                                # booleans are states, not counts
])
def test_fold(total, delta, expected):
    assert fold(total, delta) == expected


@pytest.mark.parametrize("text, cpus", [("0", {0}), ("0-3,5,7-8\n", {0, 1, 2, 3, 5, 7, 8}), ("", set()),
                                        ("2-2", {2})])
def test_parse_cpu_list(text, cpus):
    assert parse_cpu_list(text) == cpus


# ---- the quiescer ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("helpers", [True, False], ids=["helper threads", "caller migrates"])
def test_quiescer_uses_the_cpu_hop_on_this_kernel_and_restores_affinity(helpers):
    assert not realtime_kernel()
    q = Quiescer(helpers=helpers)
    assert q.mechanism == "cpu-hop", q.fallback_reason
    before = os.sched_getaffinity(0)
    try:
        pinned = {max(before)}
        os.sched_setaffinity(0, pinned)
        assert q.wait() == "cpu-hop"
        assert os.sched_getaffinity(0) == pinned, "the hop must give the caller its affinity back"
        assert os.sched_getscheduler(0) == os.SCHED_OTHER, "the SCHED_FIFO boost must end with the hop"
    finally:
        os.sched_setaffinity(0, before)
    assert q.stats["cpu-hop"] == 1
    assert q.helpers == helpers and q.helper_problem is None
    q.close()


def test_quiescer_helpers_start_again_in_a_forked_child():
    """Threads do not survive fork: a child's first wait starts its own helpers (joining the parent's
    would hang), and the parent's keep working."""
    q = Quiescer()
    assert q.wait() == "cpu-hop"
    pid = os.fork()
    if pid == 0:  # the child: exit status 0 only if its waits took the cpu-hop way
        ok = False
        try:
            ok = q.wait() == "cpu-hop" and q.wait() == "cpu-hop" and q.helper_problem is None
            q.close()
        finally:
            os._exit(0 if ok else 1)
    deadline = time.monotonic() + 30
    while (status := os.waitpid(pid, os.WNOHANG))[0] == 0 and time.monotonic() < deadline:
        time.sleep(0.01)
    if status[0] == 0:
        os.kill(pid, 9)
        os.waitpid(pid, 0)
        pytest.fail("the forked child's wait hung")
    assert os.waitstatus_to_exitcode(status[1]) == 0
    assert q.wait() == "cpu-hop" and q.stats == {"cpu-hop": 2, "rcu": 0}
    q.close()


def test_quiescer_rcu_and_bad_mechanism():
    q = Quiescer("rcu")
    assert q.wait() == "rcu" and q.stats == {"cpu-hop": 0, "rcu": 1}
    with pytest.raises(ValueError, match="mechanism must be"):
        Quiescer("sleep")


# ---- values of every swappable shape -------------------------------------------------------------------
STRUCT_MAPS = """
struct stats { __u64 packets; __u64 bytes; char tag[4]; };
struct { __uint(type, BPF_MAP_TYPE_PERCPU_HASH); __uint(max_entries, 8); __type(key, __u32);
         __type(value, struct stats); } per_cpu SEC(".maps");
struct { __uint(type, BPF_MAP_TYPE_LRU_HASH); __uint(max_entries, 8); __type(key, __u32);
         __type(value, struct stats); } lru SEC(".maps");
struct { __uint(type, BPF_MAP_TYPE_PERCPU_ARRAY); __uint(max_entries, 2); __type(key, __u32);
         __type(value, __u64); } slots SEC(".maps");
"""
STRUCT_BODY = """
struct __sk_buff *skb = ctx; __u32 k = skb->len, zero = 0;
struct stats init = { 1, skb->len, "abc" }, *s;
__u64 *n = bpf_map_lookup_elem(&slots, &zero);
if (n) *n += 1;
s = bpf_map_lookup_elem(&per_cpu, &k);
if (s) { s->packets++; s->bytes += skb->len; } else bpf_map_update_elem(&per_cpu, &k, &init, 0);
s = bpf_map_lookup_elem(&lru, &k);
if (s) { __sync_fetch_and_add(&s->packets, 1); __sync_fetch_and_add(&s->bytes, skb->len); }
else if (bpf_map_update_elem(&lru, &k, &init, BPF_NOEXIST)) {
    s = bpf_map_lookup_elem(&lru, &k);
    if (s) { __sync_fetch_and_add(&s->packets, 1); __sync_fetch_and_add(&s->bytes, skb->len); } }
return 0;
"""


def test_struct_per_cpu_and_lru_values_fold_over_flips(bpf):
    code = compile_c(program_source(STRUCT_MAPS, STRUCT_BODY))
    cpus = sorted(os.sched_getaffinity(0))
    with SwapDataplane(code, "f", ["per_cpu", "lru", "slots"]) as dp:
        before = os.sched_getaffinity(0)
        try:
            for rnd in range(3):
                for cpu in cpus:
                    os.sched_setaffinity(0, {cpu})
                    dp.program.test_run(bytes(64), repeat=10)
                dp.flip()  # periods are folded together by the non-emptying reads below
        finally:
            os.sched_setaffinity(0, before)
        runs = 3 * len(cpus) * 10
        (key, per_cpu), = dp.read_map("per_cpu")
        assert key == 64 and len(per_cpu) >= len(cpus)
        assert sum(v["packets"] for v in per_cpu) == runs
        assert sum(v["bytes"] for v in per_cpu) == runs * 64
        # The program writes the tag on the CPU that inserts the entry only (the others' slots start zeroed).
        assert b"abc\0" in {v["tag"] for v in per_cpu} <= {b"abc\0", bytes(4)}
        assert dp.read_map("lru") == [(64, {"packets": runs, "bytes": runs * 64, "tag": b"abc\0"})]
        slots = dict(dp.read_map("slots", empty=True))
        assert sum(slots[0]) == runs and sum(slots[1]) == 0
        assert sum(dict(dp.read_map("slots"))[0]) == 0
        assert dp.flips == 3 + 4


# ---- errors at injection ---------------------------------------------------------------------------------
def test_missing_and_unswappable_maps_are_named(bpf):
    maps = COUNTER_HASH + """struct { __uint(type, BPF_MAP_TYPE_RINGBUF); __uint(max_entries, 4096); } events
                              SEC(".maps");"""
    code = compile_c(program_source(maps, COUNT_BODY + "bpf_ringbuf_output(&events, &k, 4, 0);"
                                    .replace("return 0;", "", 1)))
    with pytest.raises(ConfigError) as info:
        SwapDataplane(code, "f", ["counts", "nosuch", "events"])
    paths = dict(info.value.problems)
    assert "nosuch" in paths and "not declared" in paths["nosuch"] and "counts" in paths["nosuch"]
    assert "events" in paths and "ringbuf" in paths["events"]
    with pytest.raises(ConfigError, match="no program named 'g'"):
        SwapDataplane(code, "g", ["counts"])


TAIL_CALLS = """
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
int counted(void *ctx);
struct { __uint(type, BPF_MAP_TYPE_PROG_ARRAY); __uint(max_entries, 2); __uint(key_size, 4);
         __array(values, int (void *)); } jumps SEC(".maps") = { .values = { [1] = (void *)&counted } };
struct { __uint(type, BPF_MAP_TYPE_HASH); __uint(max_entries, 8); __type(key, __u32); __type(value, __u64); }
    counts SEC(".maps");
struct { __uint(type, BPF_MAP_TYPE_ARRAY); __uint(max_entries, 1); __type(key, __u32); __type(value, __u64); }
    entered SEC(".maps");
SEC("tc") int counted(void *ctx) {
    __u32 k = 7; __u64 one = 1, *v = bpf_map_lookup_elem(&counts, &k);
    if (v) __sync_fetch_and_add(v, 1); else bpf_map_update_elem(&counts, &k, &one, BPF_NOEXIST);
    return 0;
}
SEC("tc") int f(void *ctx) {
    __u32 k = 0; __u64 *v = bpf_map_lookup_elem(&entered, &k);
    if (v) __sync_fetch_and_add(v, 1);
    bpf_tail_call(ctx, &jumps, 1);
    return 0;
}
char LICENSE[] SEC("license") = "GPL";
"""


def test_code_with_tail_calls_runs_behind_the_pivot(bpf):
    # Each instance has its own program array, filled by libbpf with its own `counted`, which writes that
    # instance's copy of the swap map: a flip moves the whole chain of tail calls.
    with SwapDataplane(compile_c(TAIL_CALLS), "f", ["counts", "entered"]) as dp:
        a, b = (obj.maps["jumps"] for obj in dp.instances)
        assert a.id != b.id  # two arrays; were B's to call A's `counted`, B's rounds would land in A's copy
        total = 0
        for rounds in (5, 11, 3):
            dp.program.test_run(bytes(64), repeat=rounds)
            total += rounds
            snapshot = dp.read_maps(empty=["counts"])
            assert snapshot["counts"] == [(7, rounds)] and snapshot["entered"] == [(0, total)]
        assert dp.read_map("counts") == [] and dp.missed() == 0


@pytest.mark.parametrize("section, message", [("xdp.frags", "cannot run behind the swap-on-read pivot"),
                                              ("socket", "needs a TC or XDP program")])
def test_programs_the_pivot_cannot_call_are_refused(bpf, section, message):
    code = compile_c(program_source(COUNTER_HASH, COUNT_BODY, section))
    with pytest.raises(NotSupportedError, match=message):
        SwapDataplane(code, "f", ["counts"])


def test_reads_name_what_is_wrong(bpf):
    with SwapDataplane(counting_object(), "count_tc", ["by_len"]) as dp:
        with pytest.raises(ValueError, match="'truth' is not swap-on-read"):
            dp.read_map("truth")
        with pytest.raises(ValueError, match="'by_len' is swap-on-read"):
            dp.shared_map("by_len")
        with pytest.raises(ValueError, match="not swap-on-read here: \\['nosuch'\\]"):
            dp.read_maps(["by_len", "nosuch"])


def test_a_failed_injection_leaves_the_running_one_counting(hosts):
    a, b = hosts
    with SwapDataplane(counting_object(), "count_tc", ["by_len", "by_slot"]) as running, \
            attach_tc(running.program, b.ifname, "ingress", netns=b.netns):
        bad = compile_c(program_source(COUNTER_HASH, "int *p = 0; return *p;"))
        with pytest.raises(VerifierError):
            SwapDataplane(bad, "f", ["counts"])
        a.send_udp(b.ip, 9000, 50)
        counted = sum(v for _, v in running.read_map("by_len", empty=True))
        assert counted >= 50
        assert counted == running.shared_map("truth")[0]


# ---- attach points ----------------------------------------------------------------------------------------
def test_xdp_and_tc_egress_pivots_on_real_traffic(hosts):
    a, b = hosts
    with SwapDataplane(counting_object(), "count_xdp", ["by_len"]) as on_b, \
            SwapDataplane(counting_object(), "count_tc", ["by_len"]) as on_a:
        with attach_xdp(on_b.program, b.ifname, netns=b.netns), \
                attach_tc(on_a.program, a.ifname, "egress", netns=a.netns):
            sent = a.send_udp(b.ip, 9000, 200)
            received_b = sum(v for _, v in on_b.read_map("by_len"))
            sent_a = sum(v for _, v in on_a.read_map("by_len"))
        assert sent == 200
        assert received_b >= 200 and sent_a >= 200
        assert received_b == on_b.shared_map("truth")[0] and sent_a == on_a.shared_map("truth")[0]
        assert on_a.missed() == on_b.missed() == 0

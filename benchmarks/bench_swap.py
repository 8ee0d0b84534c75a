"""Swap-on-read: latency of one atomic read of a 1,000-entry and a 100,000-entry hash metric, while traffic
flows, against the same read without swap and against a full program reload (the approach the pivot
replaces), all measured in the same run.

Run: `make bench PYTEST_ARGS=benchmarks/bench_swap.py`
or `.venv/bin/python -m pytest -q -s benchmarks/bench_swap.py`
(`PYNETMON_BENCH_READS=50` for a quick run).

Set-up: two test hosts; an iperf3 UDP flood (64-byte datagrams, BANDWIDTH) from host a to host b, whose eth0
ingress runs the metric's program. The program counts packets and bytes per key in a hash map of N entries;
the key cycles through 0..N-1 (a per-CPU cursor), so all N keys exist and the traffic keeps touching them.
Before each timed read, all N keys are touched once more (an untimed BPF_PROG_TEST_RUN of N packets), so
every method reads a metric of N entries, decoded (`MapEntries`, as Dynmon's metrics use them), and every
swap collects N changed entries (the worst case for its fold):

- swap: `SwapPathDataplane.read_map` of a swap-on-read metric (not emptied): flip, wait (cpu-hop), collect
  the idle instance (lookup-and-delete batch, decode, fold into the running totals), return the N totals;
- no swap: `PathDataplane.read_map` of the same metric without swap-on-read (batch lookup of N + decode);
- swap + empty-on-read, and its peer without swap (BPF_MAP_LOOKUP_AND_DELETE_BATCH + decode);
- reload: what Polycube does instead of a swap: load a new instance of the (already compiled) object,
  `Link.update` to it, read the old instance's map, close it. The new instance is filled with N keys before
  it is swapped in (untimed), so that each reload reads N entries too. A reload that also runs clang
  (Polycube's ~400 ms path) is measured a few times on its own.

Reads are interleaved in ROUNDS rounds (each method READS/ROUNDS reads per round) so that drift in the
machine's load hits all methods alike; medians and p99 over all READS reads per method.
"""
from __future__ import annotations

import os
import statistics
import subprocess
import time
import uuid

import pytest

from pynetmon import BPFObject
from pynetmon.dynmon.config import parse_config
from pynetmon.dynmon.dataplane import PathDataplane, read_entries
from pynetmon.dynmon.swap_path import SwapPathDataplane
from pynetmon.link import attach_tc
from pynetmon.swap.quiesce import Quiescer, synchronize_rcu
from pynetmon.testhosts import TestHosts
from pynetmon.toolchain import compile_c

READS = int(os.environ.get("PYNETMON_BENCH_READS", "200"))
ROUNDS = 5
BANDWIDTH = "100M"   # iperf3 -b: 64-byte datagrams, about 200,000 packets/s
SIZES = (1_000, 100_000)

CODE = r"""
#include <linux/bpf.h>
#include <linux/pkt_cls.h>
#include <bpf/bpf_helpers.h>
#define N_KEYS %d

struct flow_stats { __u64 packets; __u64 bytes; };

struct {
    __uint(type, BPF_MAP_TYPE_HASH);
    __uint(max_entries, N_KEYS);
    __type(key, __u32);
    __type(value, struct flow_stats);
} flows SEC(".maps");

struct {
    __uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
    __uint(max_entries, 1);
    __type(key, __u32);
    __type(value, __u32);
} cursor SEC(".maps");

SEC("tc")
int count_flows(struct __sk_buff *skb)
{
    __u32 zero = 0, key, *next = bpf_map_lookup_elem(&cursor, &zero);
    struct flow_stats init = {1, skb->len}, *s;

    if (!next)
        return TC_ACT_OK;
    key = *next;
    *next = key + 1 >= N_KEYS ? 0 : key + 1;
    s = bpf_map_lookup_elem(&flows, &key);
    if (!s && bpf_map_update_elem(&flows, &key, &init, BPF_NOEXIST) == 0)
        return TC_ACT_OK;
    if (!s)
        s = bpf_map_lookup_elem(&flows, &key);
    if (s) {
        __sync_fetch_and_add(&s->packets, 1);
        __sync_fetch_and_add(&s->bytes, skb->len);
    }
    return TC_ACT_OK;
}

char LICENSE[] SEC("license") = "GPL";
"""


def _path(n: int, swap: bool, empty: bool):
    options = {"swap-on-read": swap, "empty-on-read": empty}
    return parse_config({"ingress-path": {"name": "bench", "code": CODE % n, "metric-configs": [
        {"name": "flows", "map-name": "flows", "extraction-options": options}]}}).path("ingress")


def _fill(program, n: int) -> None:
    """Touch all n keys once (the cursor cycles), so the map holds n entries. Pinned: a long test run may
    migrate between its rescheduling points, and the other CPU's cursor would revisit keys."""
    allowed = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {min(allowed)})
    try:
        program.test_run(bytes(64), repeat=n)
    finally:
        os.sched_setaffinity(0, allowed)


def _ms(samples: list[float]) -> tuple[float, float]:
    ordered = sorted(samples)
    return statistics.median(ordered), ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]


@pytest.fixture(scope="module")
def flood():
    """Test hosts with an iperf3 UDP flood from a to b for the whole module."""
    from tests.conftest import require_bpf
    require_bpf()
    with TestHosts() as (a, b):
        server = b.popen("iperf3", "-s", "-p", "5201", stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(0.3)
        client = a.popen("iperf3", "-c", b.ip, "-p", "5201", "-u", "-b", BANDWIDTH, "-l", "64", "-t", "3600",
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            yield a, b
        finally:
            for proc in (client, server):
                proc.terminate()
                proc.wait(timeout=10)


class TimedQuiescer:
    """Wraps a dataplane's Quiescer to time the waits (the rest of a swap read is flip + collect)."""

    def __init__(self, inner: Quiescer):
        self.inner = inner
        self.mechanism = inner.mechanism
        self.stats = inner.stats
        self.samples: list[float] = []

    def wait(self) -> str:
        t = time.perf_counter()
        how = self.inner.wait()
        self.samples.append((time.perf_counter() - t) * 1000)
        return how


class Reloader:
    """The reload approach: a new instance per read, swapped in with BPF_LINK_UPDATE."""

    def __init__(self, image: bytes, link, current: BPFObject, n: int):
        self.image, self.link, self.current, self.n = image, link, current, n

    def read(self) -> tuple[float, int]:
        """One reload-read; returns (milliseconds excluding the untimed fill, entries read)."""
        t0 = time.perf_counter()
        fresh = BPFObject(self.image, name="bench")
        for name, spec in fresh.programs.items():
            spec.set_autoload(name == "count_flows")
        fresh.load()
        t1 = time.perf_counter()
        _fill(fresh.programs["count_flows"], self.n)  # untimed: give the read N entries, like the others
        t2 = time.perf_counter()
        self.link.update(fresh.programs["count_flows"])
        entries = read_entries(self.current.maps["flows"], False)
        keys, _values = entries.keys, entries.values  # decoded inside the timed span, as for the others
        self.current.close()
        self.current = fresh
        t3 = time.perf_counter()
        return ((t1 - t0) + (t3 - t2)) * 1000, len(keys)


METHODS = (
    ("swap", "swap-on-read, whole history (flip + wait + collect + fold)"),
    ("plain", "peer: same metric without swap (batch read + decode)"),
    ("swap_empty", "swap-on-read + empty-on-read"),
    ("plain_empty", "peer: empty-on-read without swap (lookup-and-delete)"),
    ("reload", "peer: program reload (load + link update + read)"),
)


@pytest.mark.parametrize("n", SIZES)
def test_swap_read_latency(flood, n):
    _, b = flood
    swap = SwapPathDataplane(_path(n, True, False), "ingress", "tc")
    swap_empty = SwapPathDataplane(_path(n, True, True), "ingress", "tc")
    plain = PathDataplane(_path(n, False, False), "ingress", "tc")
    image = compile_c(CODE % n)
    first = BPFObject(image, name="bench")
    for name, spec in first.programs.items():
        spec.set_autoload(name == "count_flows")
    first.load()
    _fill(first.programs["count_flows"], n)
    waits = TimedQuiescer(swap.swap.quiescer)
    swap.swap.quiescer = swap_empty.swap.quiescer = waits
    link = attach_tc(swap.program, b.ifname, "ingress", netns=b.netns)
    reloader = Reloader(image, link, first, n)
    samples: dict[str, list[float]] = {m: [] for m, _ in METHODS}
    sizes: dict[str, set[int]] = {m: set() for m, _ in METHODS}

    def timed(method: str, program, read) -> None:
        # Every period touches all n keys (untimed fill), so every read handles n entries: the worst case
        # for the swap's collect and fold, and a full map for the emptying peers.
        _fill(program, n)
        t = time.perf_counter()
        entries = read()
        # MapEntries decodes on first use: decode inside the timed span, so that every method's time
        # includes its decode (the swap's collect decodes eagerly).
        keys, _values = entries.keys, entries.values
        samples[method].append((time.perf_counter() - t) * 1000)
        sizes[method].add(len(keys))

    try:
        per_round = max(READS // ROUNDS, 1)
        for _ in range(ROUNDS):
            link.update(swap.program)
            for _ in range(per_round):
                timed("swap", swap.program, lambda: swap.read_map("flows"))
            link.update(swap_empty.program)
            for _ in range(per_round):
                timed("swap_empty", swap_empty.program, lambda: swap_empty.read_map("flows", True))
            link.update(plain.program)
            for _ in range(per_round):
                timed("plain", plain.program, lambda: plain.read_map("flows"))
            for _ in range(per_round):
                timed("plain_empty", plain.program, lambda: plain.read_map("flows", True))
            link.update(reloader.current.programs["count_flows"])
            for _ in range(per_round):
                ms, count = reloader.read()
                samples["reload"].append(ms)
                sizes["reload"].add(count)
        flips = swap.swap.flips + swap_empty.swap.flips
        assert swap.swap.missed() == swap_empty.swap.missed() == 0
    finally:
        link.detach()
        reloader.current.close()
        for dp in (swap, swap_empty, plain):
            dp.close()
    assert all(s == {n} for s in sizes.values()), sizes
    plain_median = _ms(samples["plain"])[0]
    print(f"\nOne read of a {n:,}-entry hash metric (u32 key, 16-byte value) while iperf3 sends "
          f"{BANDWIDTH}bit/s of 64-byte UDP through it; {len(samples['swap'])} reads per method in {ROUNDS} "
          "interleaved rounds")
    print(f"  {'method':60} {'median ms':>10} {'p99 ms':>10}  vs no swap")
    for method, label in METHODS:
        median, p99 = _ms(samples[method])
        print(f"  {label:60} {median:10.3f} {p99:10.3f}  {median / plain_median:6.2f}x")
    median, p99 = _ms(waits.samples)
    print(f"  {'of which the wait (cpu-hop) in the swap reads':60} {median:10.3f} {p99:10.3f}")
    fallback = f", last fallback to RCU: {waits.inner.last_fallback}" if waits.stats["rcu"] else ""
    print(f"  ({flips} flips; waits so far in this process: {waits.stats}{fallback})")
    if n == SIZES[0]:
        _reload_with_clang(n)


def _reload_with_clang(n: int, runs: int = 5) -> None:
    """Polycube's reload path includes compiling the code: clang + load, a few times."""
    samples = []
    for _ in range(runs):
        t = time.perf_counter()
        with BPFObject(compile_c(CODE % n + f"/* {uuid.uuid4()} */\n", use_cache=False)) as obj:
            obj.load()
        samples.append((time.perf_counter() - t) * 1000)
    median = statistics.median(samples)
    print(f"  peer: reload including clang (compile + load), {runs} runs: median {median:.1f} ms")


def test_wait_mechanisms(flood):
    """The wait alone, both proofs, same run, under the flood: what the cpu-hop saves over an RCU grace
    period, and how its variants compare: helper threads (the default), the same as normal threads, and
    the caller migrating over the CPUs itself (with and without the SCHED_FIFO boost)."""
    hop = Quiescer("cpu-hop")
    plain_helpers = Quiescer("cpu-hop", boost=False)
    migrating = Quiescer("cpu-hop", helpers=False)
    plain_migrating = Quiescer("cpu-hop", helpers=False, boost=False)
    rows = {}
    for label, fn, runs in (("cpu-hop (helper threads, SCHED_FIFO)", hop.wait, 1000),
                            ("cpu-hop (helper threads, normal)", plain_helpers.wait, 1000),
                            ("cpu-hop (caller migrates, SCHED_FIFO boost)", migrating.wait, 1000),
                            ("cpu-hop (caller migrates, no boost)", plain_migrating.wait, 1000),
                            ("rcu (membarrier GLOBAL = synchronize_rcu)", synchronize_rcu, 100)):
        samples = []
        for _ in range(runs):
            t = time.perf_counter()
            fn()
            samples.append((time.perf_counter() - t) * 1000)
        rows[label] = _ms(samples)
    for q in (hop, plain_helpers, migrating, plain_migrating):
        assert q.stats["rcu"] == 0, q.stats
        q.close()
    hop_median = rows["cpu-hop (helper threads, SCHED_FIFO)"][0]
    print(f"\nWaiting for in-flight invocations ({os.cpu_count()} CPUs, during the iperf3 flood)")
    print(f"  {'mechanism':44} {'median ms':>10} {'p99 ms':>10}")
    for label, (median, p99) in rows.items():
        print(f"  {label:44} {median:10.3f} {p99:10.3f}  {median / hop_median:8.1f}x")

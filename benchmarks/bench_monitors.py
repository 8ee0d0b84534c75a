"""Ready monitors against no monitor, on the test hosts, in one run.

Run: `python -m pytest -q -s benchmarks/bench_monitors.py` (root; about four minutes)

1. Throughput: iperf3 TCP (one stream) and iperf3 UDP with 18-byte payloads (64-byte frames with the FCS,
   60 on the veth) from host a to host b, RUNS interleaved rounds of DURATION seconds per monitor
   (`MONITORS`: none first, then each monitor watching host b), each monitor started before and closed
   after its run. Reported: the median throughput and its ratio to no monitor measured in the same round
   (goals: ≥ 0.98 for flows, drops, rtt and dns, ≥ 0.95 for tcp and latency), and the kernel's own time
   per program run from BPF_ENABLE_STATS (the monitor's `self`).
2. Per-packet cost: BPF_PROG_TEST_RUN of flows' tc program on a 64-byte UDP frame against an empty tc
   program (ns/packet, the kernel's average over REPEAT runs, median of 5); the same for the programs of
   rtt, dns and latency on the packets of their common paths.
3. Snapshot time of a full 65,536-flow table (goal < 100 ms), median of 5.

Nothing is asserted on time; the numbers go to the README with the load average (the machine is shared).
Other engineers add their monitors to MONITORS.
"""
from __future__ import annotations

import json
import os
import socket
import statistics
import struct
import time

import pytest
from rounds import iperf_hosts

from pynetmon import monitors
from pynetmon.errors import MapFullError
from pynetmon.monitors import dnswire, flowkey, latstats
from pynetmon.object import BPFObject
from pynetmon.testhosts import TestHosts
from pynetmon.toolchain import compile_c

RUNS = 5
DURATION = 3
REPEAT = 1_000_000
SCENARIOS = {"tcp": [], "udp64": ["-u", "-b", "0", "-l", "18"]}
# name → (kind, options builder(a, b) → (interface, netns, options)); every one watches host b.
MONITORS = {
    "flows": ("flows", lambda a, b: ("eth0", b.netns, {})),
    "drops": ("drops", lambda a, b: (None, b.netns, {})),
    "tcp": ("tcp", lambda a, b: (None, b.netns, {})),
    "tcp, live_stats=true": ("tcp", lambda a, b: (None, b.netns, {"live_stats": True})),
    "rtt": ("rtt", lambda a, b: ("eth0", b.netns, {})),
    "dns": ("dns", lambda a, b: ("eth0", b.netns, {})),
    "latency reply": ("latency", lambda a, b: ("eth0", b.netns, {"mode": "reply"})),
    "latency stack": ("latency", lambda a, b: ("eth0", b.netns, {"mode": "stack"})),
}
EMPTY_TC = '#include <linux/bpf.h>\n#include <bpf/bpf_helpers.h>\nchar LICENSE[] SEC("license") = "GPL";\n' \
           'SEC("tc") int empty(struct __sk_buff *skb) { return -1; }\n'


def _iperf(a, b, options: list[str]) -> float:
    proc = a.run("iperf3", "-c", b.ip, "-t", str(DURATION), "-J", *options, timeout=DURATION + 30)
    end = json.loads(proc.stdout)["end"]
    if "-u" in options:
        return (end["sum"]["packets"] - end["sum"]["lost_packets"]) / end["sum"]["seconds"]
    return end["sum_received"]["bits_per_second"]


def _measure(a, b, scenario: list[str], mode: str) -> dict:
    if mode == "none":
        return {"rate": _iperf(a, b, scenario), "ns_per_run": None}
    kind, build = MONITORS[mode]
    interface, netns, options = build(a, b)
    with monitors.open(kind, interface=interface, netns=netns, **options) as m:
        rate = _iperf(a, b, scenario)
        cost = m.self_cost()
    runs, ns = cost["run_count"], cost["run_time_ns"]
    return {"rate": rate, "ns_per_run": ns / runs if runs else None}


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root (namespaces, BPF)")
def test_monitor_throughput():
    modes = ("none", *MONITORS)
    results = {(s, m): [] for s in SCENARIOS for m in modes}
    load_before = os.getloadavg()
    with iperf_hosts("pmb") as (a, b):
        for name, scenario in SCENARIOS.items():
            for _ in range(RUNS):
                for mode in modes:  # interleaved: every mode sees the same moments of the machine
                    results[(name, mode)].append(_measure(a, b, scenario, mode))
    med = statistics.median
    print(f"\n{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; medians of {RUNS} interleaved rounds of "
          f"{DURATION} s; load average before {load_before[0]:.2f}, after {os.getloadavg()[0]:.2f}")
    print("| traffic | monitor | throughput | vs none (same rounds) | kernel ns per program run |")
    print("|---|---|---|---|---|")
    for name in SCENARIOS:
        base = results[(name, "none")]
        for mode in modes:
            runs = results[(name, mode)]
            rate = med(r["rate"] for r in runs)
            ratio = med(r["rate"] / n["rate"] for r, n in zip(runs, base))  # per round, then the median
            unit = f"{rate / 1e9:.2f} Gbit/s" if name == "tcp" else f"{rate / 1e3:.0f} kpps"
            ns = [r["ns_per_run"] for r in runs if r["ns_per_run"] is not None]
            print(f"| {name} | {mode} | {unit} | {ratio:.3f} | {med(ns):.0f} |" if ns else
                  f"| {name} | {mode} | {unit} | {ratio:.3f} | - |")


def _udp_frame() -> bytes:
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + 8 + 18, 1, 0, 64, 17, 0, socket.inet_aton("198.18.0.1"),
                     socket.inet_aton("198.18.0.2"))
    return b"\x02" * 6 + b"\x04" * 6 + b"\x08\x00" + ip + struct.pack("!HHHH", 40000, 5201, 26, 0) + bytes(18)


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root (BPF)")
def test_per_packet_cost():
    frame = _udp_frame()
    with BPFObject.from_package("monitors/flows") as flows, \
            BPFObject(compile_c(EMPTY_TC, use_cache=False), name="empty") as empty:
        flows.load()
        empty.load()
        rounds = {"empty": [], "flows (one flow, update)": []}
        for _ in range(5):
            rounds["empty"].append(empty.programs["empty"].test_run(frame, REPEAT).duration_ns)
            rounds["flows (one flow, update)"].append(flows.programs["flows_ingress"].test_run(frame, REPEAT).duration_ns)
    med = statistics.median
    base = med(rounds["empty"])
    print(f"\nBPF_PROG_TEST_RUN, 60-byte UDP frame, {REPEAT:,} repeats, median of 5; load {os.getloadavg()[0]:.2f}")
    print("| program | ns/packet | minus empty |")
    print("|---|---|---|")
    for name, values in rounds.items():
        print(f"| {name} | {med(values):.1f} | {med(values) - base:.1f} |")


def _tcp_ts_frame(sport: int, dport: int, tsval: int, tsecr: int, payload: bytes) -> bytes:
    tcp = struct.pack("!HHIIBBHHH", sport, dport, 1, 1, 8 << 4, 0x18, 65535, 0, 0) \
        + b"\x01\x01\x08\x0a" + struct.pack("!II", tsval, tsecr) + payload
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(tcp), 1, 0, 64, 6, 0, socket.inet_aton("198.18.0.1"),
                     socket.inet_aton("198.18.0.2"))
    return b"\x02" * 6 + b"\x04" * 6 + b"\x08\x00" + ip + tcp


def _dns_frame() -> bytes:
    query = dnswire.message(0x1234, "www.example.com", 1)
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + 8 + len(query), 1, 0, 64, 17, 0, socket.inet_aton("198.18.0.1"),
                     socket.inet_aton("198.18.0.2"))
    return b"\x02" * 6 + b"\x04" * 6 + b"\x08\x00" + ip + struct.pack("!HHHH", 40000, 53, 8 + len(query), 0) + query


def _delay_object(kind: str, **options) -> BPFObject:
    """The loaded object of a delay monitor with the load-time knobs its Monitor sets for `options`
    (loaded here, not through a started monitor: a started monitor holds BPF_ENABLE_STATS, and run-time
    statistics would add two clock reads to every run measured)."""
    opts = monitors.get(kind).Options(**options)
    hist, nslots = latstats.hist_config(opts)  # type: ignore[arg-type]
    obj = BPFObject.from_package(f"monitors/{kind}")
    obj.maps[f"{kind}_hist"].set_max_entries(nslots)  # type: ignore[union-attr]
    if kind == "rtt":
        obj.set_rodata(rtt_hist_config=hist)
    elif kind == "dns":
        ports = [*opts.ports, *[0] * (8 - len(opts.ports))]  # type: ignore[attr-defined]
        obj.set_rodata(dns_config=hist + struct.pack("=8H", *ports))
    else:
        for name in ("latency_tcp_probe", "latency_data_ready"):
            obj.programs[name].set_autoload(False)  # type: ignore[union-attr]
        obj.set_rodata(latency_config=hist + struct.pack("=I4xQ", 0, 10**9))  # mode reply, max_age 1 s
    return obj.load()


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root (BPF)")
def test_per_packet_cost_delay_monitors():
    """rtt, dns and latency (reply) programs on the packets that take their common paths, against the
    empty program, BPF_PROG_TEST_RUN as above."""
    udp, dns = _udp_frame(), _dns_frame()
    data = _tcp_ts_frame(40000, 5201, 1000, 77, bytes(100))   # TSval seen before: lookup only
    ack = _tcp_ts_frame(5201, 40000, 78, 999, b"")            # TSecr of nothing pending: lookup only
    with BPFObject(compile_c(EMPTY_TC, use_cache=False), name="empty") as empty, _delay_object("rtt") as rtt, \
            _delay_object("dns") as dnso, _delay_object("latency") as lat:
        empty.load()
        cases = {
            "empty": (empty.programs["empty"], udp),
            "rtt, UDP (not TCP)": (rtt.programs["rtt_ingress"], udp),
            "rtt, TCP data, TSval known": (rtt.programs["rtt_egress"], data),
            "rtt, TCP pure ACK, TSecr unknown": (rtt.programs["rtt_ingress"], ack),
            "dns, UDP not DNS": (dnso.programs["dns_ingress"], udp),
            "dns, query www.example.com": (dnso.programs["dns_egress"], dns),
            "latency reply, ingress (flow stamped)": (lat.programs["latency_ingress"], udp),
            "latency reply, egress (no reply pending)": (lat.programs["latency_egress"], udp),
        }
        rounds: dict[str, list[int]] = {name: [] for name in cases}
        for _ in range(9):
            for name, (prog, frame) in cases.items():  # interleaved: each round sees the same machine
                rounds[name].append(prog.test_run(frame, REPEAT).duration_ns)  # type: ignore[union-attr]
    med = statistics.median
    base, base_min = med(rounds["empty"]), min(rounds["empty"])
    # Other processes on a shared machine may hold BPF_ENABLE_STATS (two clock reads per run) for part of
    # the run: the minimum of the rounds is shown next to the median.
    print(f"\nBPF_PROG_TEST_RUN, {REPEAT:,} repeats, 9 interleaved rounds; load {os.getloadavg()[0]:.2f}")
    print("| program, packet | ns/packet median | minus empty | min | minus empty's min |")
    print("|---|---|---|---|---|")
    for name, values in rounds.items():
        print(f"| {name} | {med(values):.1f} | {med(values) - base:.1f} | {min(values):.1f} | "
              f"{min(values) - base_min:.1f} |")


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root (BPF, namespaces)")
def test_snapshot_of_a_full_flow_table():
    n = 65536
    with TestHosts(prefix="pms") as (_a, b):
        b.run("sysctl", "-q", "-w", "net.ipv6.conf.all.disable_ipv6=1")
        m = monitors.open("flows", interface="eth0", netns=b.netns, max_entries=n, idle_timeout=3600)
        table = m._table
        n -= len(table)  # the few flows the hosts made meanwhile fill the rest
        keys = b"".join(flowkey.encode(flowkey.FlowKey(f"10.{i >> 16}.{(i >> 8) & 255}.{i & 255}", "10.255.0.1",
                                                       1024 + i % 60000, 443, "tcp")) for i in range(n))
        now = time.monotonic_ns()
        value = struct.pack("=QQQQQ", 10, 15000, now, now, 0x18)
        try:
            table._update_batch_raw(keys, value * n, n)
        except MapFullError:
            pass  # a packet of the hosts took a slot meanwhile: full all the same
        times, cpu = [], []
        for _ in range(5):
            t0, c0 = time.perf_counter(), time.process_time()
            snap = m.snapshot()
            times.append(time.perf_counter() - t0)
            cpu.append(time.process_time() - c0)
        fam_times = []
        for _ in range(5):
            t0 = time.perf_counter()
            m.families()
            fam_times.append(time.perf_counter() - t0)
        m.close()
    assert len(snap["flows"]) == 65536  # full (later packets of the hosts count as overflow)
    med = statistics.median
    print(f"\nsnapshot of {len(snap['flows']):,} flows: median {med(times) * 1e3:.1f} ms wall of 5 "
          f"(min {min(times) * 1e3:.1f}), {med(cpu) * 1e3:.1f} ms CPU of this process; families() (top 100 "
          f"on /metrics): median {med(fam_times) * 1e3:.1f} ms; load {os.getloadavg()[0]:.2f}")

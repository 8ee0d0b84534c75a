"""Sizing numbers for docs/deploy.md: memory and CPU per ready monitor with its default options, and what
net.core.bpf_jit_harden=2 costs a monitor's program.

Run: `.venv/bin/python benchmarks/sizing.py` (root; about a minute). Prints markdown tables with the load
average; asserts nothing (the machine is shared).

1. Memory: each kind started alone in a fresh Python process on a test host's eth0 (kinds on global hooks
   with the host's netns as filter), with defaults: the kernel's memlock of its maps (`maps_bytes`, what the
   memory cgroup is charged) and the process' resident memory before and after the start.
2. CPU per packet: in the same process, COUNT UDP datagrams (60-byte frames) sent to the monitored host; the
   kernel's run time per run of each program from BPF_ENABLE_STATS (which itself adds two clock reads per
   run), and what that is per million packets a second (1 ns per packet = 0.1% of a core per Mpps).
   Programs that ran for fewer than half the datagrams (an egress program seeing an ICMP error) are left
   out: a handful of cold runs says nothing per Mpps.
3. bpf_jit_harden: flows' tc program loaded once with the sysctl at 0 and once at 2 (constant blinding is
   done at load time, so the sysctl is set for that one load and restored at once), then both run
   interleaved with BPF_PROG_TEST_RUN on a 60-byte UDP frame: ns per packet, median of ROUNDS.
"""
from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

COUNT = 20_000
REPEAT = 1_000_000
ROUNDS = 7
HARDEN = Path("/proc/sys/net/core/bpf_jit_harden")


def _rss_kib() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def measure_one(kind: str, netns_a: str, netns_b: str, ip_b: str) -> dict:
    """In a fresh process: start `kind` on host b, send COUNT datagrams from a, report memory and run time."""
    from pynetmon import monitors
    from pynetmon.testhosts import Host
    cls = monitors.get(kind)
    interface = "eth0" if cls.needs_interface else None
    before = _rss_kib()
    try:
        monitor = monitors.open(kind, interface=interface, netns=netns_b)
    except Exception as exc:  # noqa: BLE001 - reported: a kind that needs options
        return {"kind": kind, "error": f"{type(exc).__name__}: {str(exc).splitlines()[0][:120]}"}
    with monitor:
        after = _rss_kib()
        cost = monitor.self_cost()
        Host(netns_a, "eth0", "", "").send_udp(ip_b, 7000, COUNT, payload=bytes(18))
        runs = monitor.self_cost()["programs"]
    programs = {name: {"runs": p["run_count"] - cost["programs"][name]["run_count"],
                       "ns": p["run_time_ns"] - cost["programs"][name]["run_time_ns"]}
                for name, p in runs.items() if p["run_count"] is not None}
    return {"kind": kind, "maps_bytes": cost["maps_bytes"], "rss_before_kib": before, "rss_after_kib": after,
            "programs": programs}


def memory_and_cpu() -> None:
    from pynetmon import monitors
    from pynetmon.testhosts import TestHosts
    load = os.getloadavg()
    rows = []
    with TestHosts() as (a, b):
        for kind in sorted(monitors.kinds()):
            proc = subprocess.run([sys.executable, __file__, "--one", kind, a.netns, b.netns, b.ip],
                                  capture_output=True, text=True, timeout=300, check=False)
            try:
                rows.append(json.loads(proc.stdout.strip().splitlines()[-1]))
            except (IndexError, ValueError):
                rows.append({"kind": kind, "error": (proc.stderr.strip().splitlines() or ["?"])[-1][:120]})
    print(f"\n## memory and CPU per monitor, defaults, {os.cpu_count()} CPUs, {COUNT:,} UDP datagrams "
          f"(load {load[0]:.2f} before, {os.getloadavg()[0]:.2f} after)")
    print("| monitor | maps (kernel) | process RSS before → after start | program: runs, ns/run, % of a core per Mpps |")
    print("|---|---:|---:|---|")
    for row in rows:
        if "error" in row:
            print(f"| {row['kind']} | not started with defaults: {row['error']} | | |")
            continue
        progs = "; ".join(f"{name}: {p['runs']:,}, {p['ns'] / p['runs']:.0f} ns, {p['ns'] / p['runs'] / 10:.1f}%"
                          for name, p in sorted(row["programs"].items()) if p["runs"] >= COUNT // 2)
        print(f"| {row['kind']} | {row['maps_bytes'] / 2**20:.1f} MiB | {row['rss_before_kib'] / 1024:.0f} → "
              f"{row['rss_after_kib'] / 1024:.0f} MiB | {progs or 'no runs (not on this packet path)'} |")


def _load_flows(harden: str):
    from pynetmon.object import BPFObject
    previous = HARDEN.read_text()
    try:
        HARDEN.write_text(harden)
        return BPFObject.from_package("monitors/flows").load()
    finally:
        HARDEN.write_text(previous)  # at once: other programs loaded on this host must not be blinded


def jit_harden() -> None:
    load = os.getloadavg()
    from bench_monitors import _udp_frame  # the same 60-byte frame as the README's per-packet row
    frame = _udp_frame()
    objects = {"0": _load_flows("0"), "2": _load_flows("2")}
    rounds: dict[str, list[int]] = {k: [] for k in objects}
    try:
        for _ in range(ROUNDS):
            for value, obj in objects.items():
                rounds[value].append(obj.programs["flows_ingress"].test_run(frame, REPEAT).duration_ns)
    finally:
        for obj in objects.values():
            obj.close()
    med = {k: statistics.median(v) for k, v in rounds.items()}
    print(f"\n## bpf_jit_harden: flows_ingress, BPF_PROG_TEST_RUN 60-byte UDP, {REPEAT:,} repeats, median of {ROUNDS} "
          f"interleaved (load {load[0]:.2f} before, {os.getloadavg()[0]:.2f} after; sysctl now {HARDEN.read_text().strip()})")
    print("| bpf_jit_harden | ns/packet (median) | min | vs 0 |")
    print("|---|---:|---:|---:|")
    for value, values in rounds.items():
        print(f"| {value} | {med[value]:.1f} | {min(values):.1f} | {med[value] / med['0']:.2f}x |")


if __name__ == "__main__":
    if len(sys.argv) == 6 and sys.argv[1] == "--one":
        print(json.dumps(measure_one(*sys.argv[2:])))
    else:
        memory_and_cpu()
        jit_harden()

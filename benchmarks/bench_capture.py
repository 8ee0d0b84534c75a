"""Packet capture against tcpdump, on the test hosts, in one run.

Run: `python -m pytest -q -s benchmarks/bench_capture.py` (root; about two minutes)

Three kinds of traffic from host a to host b, each RUNS times for DURATION seconds in three modes,
interleaved so that the three share the machine's state:
- iperf3 TCP (one stream), filter "tcp port 5201";
- iperf3 UDP with 18-byte payloads (60-byte frames) at the highest rate iperf3 reaches here,
  filter "udp port 5201";
- the same UDP into a sink: b's interface drops the datagrams in XDP (benchmarks/c/capture_peers.bpf.c), so
  no receiving process has to be woken on the other CPU and the sending rate depends on a's path alone:
  the capture's cost in that path, without the receiver's share of the two cores;
and modes: no capture; an empty tcx program on a's eth0 egress (what any capture at the TC hook costs at
least); `tcpdump -i eth0 -w FILE -s 96 -B 8192 FILTER` in a's namespace; `pynetmon capture
eth0 -n NS -w FILE -s 96 --ring-size 8388608 -f FILTER` (the CLI, a process like tcpdump; same buffer
size: 8 MiB). Both write to a file on the same disk.

Per mode: throughput of the monitored traffic (TCP bits/s at the receiver, UDP datagrams/s received, sink:
datagrams/s sent)
and its ratio to no capture; packets captured and dropped as each tool reports them at exit; CPU time
of the capturing process (all its threads, from /proc/PID/task/*/schedstat, taken from just before the
traffic starts to half a second after it ends) per captured packet; and the sending iperf3's CPU per unit
sent (byte or datagram), as a ratio to no capture: the capture's cost to the traffic in CPU time, which,
unlike the throughput, a loaded machine does not swamp. For UDP also the sending rate and the datagrams the
receiving iperf3 lost, which split a lower received rate into a slower sender and a starved receiver.
Each round runs the three modes one after the other; every ratio (to no capture, pynetmon to tcpdump) is taken within a round and reported as
median (min-max) over the rounds. Nothing is asserted on time. `PYNETMON_BENCH_RUNS` and
`PYNETMON_BENCH_SECONDS` set the rounds and the seconds per run (`make bench-quick` lowers both).
"""
from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
from rounds import env_int, fmt_spread, iperf_hosts, load_average, ratios, spread

from pynetmon.link import attach_tcx, attach_xdp
from pynetmon.object import BPFObject
from pynetmon.toolchain import compile_c

RUNS = env_int("PYNETMON_BENCH_RUNS", 5)
DURATION = env_int("PYNETMON_BENCH_SECONDS", 3)
SNAPLEN = 96
RING_BYTES = 8 << 20
REPO = Path(__file__).resolve().parents[1]
SCENARIOS = {
    "tcp": {"filter": "tcp port 5201", "iperf": []},
    "udp64": {"filter": "udp port 5201", "iperf": ["-u", "-b", "0", "-l", "18"]},
    "udp64-sink": {"filter": "udp port 5201", "iperf": ["-u", "-b", "0", "-l", "18"], "sink": True},
}
PEERS_SOURCE = Path(__file__).resolve().parent / "c" / "capture_peers.bpf.c"
MODES = ("none", "empty tc", "tcpdump", "pynetmon")


def cpu_seconds(pid: int) -> float:
    """CPU time of every thread of the process, in nanoseconds' resolution (schedstat, not clock ticks)."""
    total = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            total += int((task / "schedstat").read_text().split()[0])
        except (FileNotFoundError, ProcessLookupError):
            pass  # a thread that just ended
    return total / 1e9


def start_capture(mode: str, host, path: str, expr: str) -> subprocess.Popen | None:
    if mode in ("none", "empty tc"):
        return None
    if mode == "tcpdump":
        proc = host.popen("tcpdump", "-i", "eth0", "-w", path, "-s", str(SNAPLEN), "-B", str(RING_BYTES // 1024),
                          expr, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    else:
        env = dict(os.environ, PYTHONPATH=str(REPO))
        proc = subprocess.Popen([sys.executable, "-m", "pynetmon", "capture", "eth0", "-n", host.netns, "-w", path,
                                 "-s", str(SNAPLEN), "--ring-size", str(RING_BYTES), "-f", expr],
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env)
    line = proc.stderr.readline()
    if "listening on" not in line:
        proc.kill()
        raise RuntimeError(f"{mode} did not start: {line}{proc.stderr.read()}")
    return proc


def stop_capture(proc: subprocess.Popen) -> tuple[int, int]:
    """(captured, dropped) as the tool reports them when stopped with SIGINT."""
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    captured = int(re.search(r"(\d+) packets captured", err).group(1))
    dropped = re.search(r"(\d+) packets dropped by kernel", err) or re.search(r"(\d+) packets dropped", err)
    return captured, int(dropped.group(1))


def run_iperf(a, b, options: list[str]) -> tuple[float, float, float, int]:
    """(throughput, sender CPU per unit sent, sending rate, lost): TCP bits/s received and CPU s per byte
    sent; UDP datagrams/s received and CPU s per datagram sent, datagrams/s sent and datagrams lost (UDP
    only: the receiving iperf3's socket overflowed). The sender's CPU (iperf3's own getrusage: user + system) holds
    the kernel's transmit path, the capture's TC program on a's egress and, on veth, the receive softirq;
    unlike the throughput it does not depend on whether the receiving iperf3 got a CPU in time, so it
    shows what capturing costs the traffic even on a loaded machine."""
    proc = a.run("iperf3", "-c", b.ip, "-t", str(DURATION), "-J", *options, timeout=DURATION + 30)
    result = json.loads(proc.stdout)["end"]
    if "-u" in options:
        total = result["sum"]
        sent, lost = total["packets"], total["lost_packets"]
        rate = (sent - lost) / total["seconds"]
        sending = sent / total["seconds"]
    else:
        total = result["sum_sent"]
        sent, lost = total["bytes"], 0
        rate = result["sum_received"]["bits_per_second"]
        sending = total["bits_per_second"]
    sender_cpu = result["cpu_utilization_percent"]["host_total"] / 100 * total["seconds"]
    return rate, sender_cpu / sent if sent else float("nan"), sending, lost


def measure(a, b, scenario: dict, mode: str, workdir: str) -> dict:
    path = os.path.join(workdir, f"{mode}.pcap")
    proc = start_capture(mode, a, path, scenario["filter"])
    try:
        cpu_before = cpu_seconds(proc.pid) if proc else 0.0
        rate, sender_cpu, sending, lost = run_iperf(a, b, scenario["iperf"])
        time.sleep(0.5)  # the reader takes what is still buffered
        cpu = cpu_seconds(proc.pid) - cpu_before if proc else 0.0
    finally:
        counts = stop_capture(proc) if proc else (0, 0)
    if os.path.exists(path):
        os.unlink(path)
    if scenario.get("sink"):
        rate = sending  # nothing is received: the datagrams end in b's XDP program
    return {"rate": rate, "sender_cpu": sender_cpu, "sending": sending, "lost": lost, "captured": counts[0],
            "dropped": counts[1], "cpu": cpu}


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root (namespaces, BPF, tcpdump)")
def test_capture_against_tcpdump():
    results = {(s, m): [] for s in SCENARIOS for m in MODES}
    load_before = load_average()
    with iperf_hosts("pcb") as (a, b), tempfile.TemporaryDirectory(prefix="pynetmon-bench-") as workdir, \
            BPFObject(compile_c(PEERS_SOURCE.read_text(), use_cache=False), name="capture_peers") as peers:
        peers.load()
        for name, scenario in SCENARIOS.items():
            with contextlib.ExitStack() as stack:
                if scenario.get("sink"):
                    stack.enter_context(attach_xdp(peers.programs["udp_sink"], "eth0", "native", netns=b.netns))
                for _ in range(RUNS):
                    for mode in MODES:
                        with contextlib.ExitStack() as empty:
                            if mode == "empty tc":
                                empty.enter_context(attach_tcx(peers.programs["tc_empty"], "eth0", "egress",
                                                               netns=a.netns))
                            results[(name, mode)].append(measure(a, b, scenario, mode, workdir))
    print_table(results, load_before)


def print_table(results: dict, load_before: str) -> None:
    med = statistics.median
    print(f"\n{RUNS} interleaved rounds of {DURATION} s per mode; snaplen {SNAPLEN}; capture buffer "
          f"{RING_BYTES >> 20} MiB; {load_before} before, {load_average()} after")
    print("ratios: median (min-max) of the per-round ratios")
    print("| traffic | capture | throughput | vs no capture | captured | dropped | CPU s | CPU µs/packet |")
    print("|---|---|---|---|---|---|---|---|")
    for name in SCENARIOS:
        base = [r["rate"] for r in results[(name, "none")]]
        per_packet = {}
        for mode in MODES:
            runs = results[(name, mode)]
            rate = med(r["rate"] for r in runs)
            unit = f"{rate / 1e9:.2f} Gbit/s" if name == "tcp" else f"{rate / 1e3:.0f} kpps"
            if mode == "none":
                print(f"| {name} | none | {unit} | 1.00 | - | - | - | - |")
                continue
            if mode == "empty tc":
                print(f"| {name} | {mode} | {unit} | {fmt_spread(ratios([r['rate'] for r in runs], base), 3)} "
                      "| - | - | - | - |")
                continue
            per_packet[mode] = [r["cpu"] / r["captured"] * 1e6 if r["captured"] else float("nan") for r in runs]
            print(f"| {name} | {mode} | {unit} | {fmt_spread(ratios([r['rate'] for r in runs], base), 3)} | "
                  f"{med(r['captured'] for r in runs):.0f} | {med(r['dropped'] for r in runs):.0f} | "
                  f"{med(r['cpu'] for r in runs):.2f} | {fmt_spread(spread(per_packet[mode]))} |")
        cost = {mode: fmt_spread(ratios([r["sender_cpu"] for r in results[(name, mode)]],
                                        [r["sender_cpu"] for r in results[(name, "none")]]), 3) for mode in MODES[1:]}
        print(f"| {name} | sender CPU per unit sent vs no capture: pynetmon {cost['pynetmon']}, "
              f"tcpdump {cost['tcpdump']}, empty tc {cost['empty tc']} | | | | | | |")
        if name == "udp64":
            sending = {mode: fmt_spread(ratios([r["sending"] for r in results[(name, mode)]],
                                               [r["sending"] for r in results[(name, "none")]]), 3)
                       for mode in MODES[1:]}
            lost = {mode: med(r["lost"] for r in results[(name, mode)]) for mode in MODES}
            print(f"| {name} | sending rate vs no capture: pynetmon {sending['pynetmon']}, tcpdump "
                  f"{sending['tcpdump']}, empty tc {sending['empty tc']}; datagrams lost at the receiver (median per run): none {lost['none']:.0f}, "
                  f"pynetmon {lost['pynetmon']:.0f}, tcpdump {lost['tcpdump']:.0f} | | | | | | |")
        ahead = ratios([r["rate"] for r in results[(name, "pynetmon")]], [r["rate"] for r in results[(name, "tcpdump")]])
        print(f"| {name} | pynetmon/tcpdump throughput | | {fmt_spread(ahead, 3)} | | | | |")
        print(f"| {name} | pynetmon/tcpdump CPU per packet | | | | | | "
              f"{fmt_spread(ratios(per_packet['pynetmon'], per_packet['tcpdump']))} |")

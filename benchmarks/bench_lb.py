"""lb: connections per second and throughput through the VIP against a direct connection to the
backend over the same router (goal, issue 13: at least 90%), and the balancer's cost per packet.

Run: `python -m pytest -q -s benchmarks/bench_lb.py` (root; about two minutes)

A client and a backend around one router namespace (RouterHosts); the lb monitor on the router's
client-facing interface with one service per port (nginx's and iperf3's) and one backend. Each round
measures, one right after the other, the direct path (client → backend address, routed) and the VIP
(client → VIP, rewritten to the backend at the router's ingress and back at its egress):
1. connections per second: h2load over HTTP/1.1 with as many clients as requests (`-c N -n N`), so
   every request is a new TCP connection (SYN, request, response, close) to the thesis' nginx;
2. throughput: one iperf3 TCP stream (SECONDS s, the first omitted).
Medians and per-round ratios over ROUNDS interleaved rounds. Nothing is asserted on time.
"""
from __future__ import annotations

import os
import re
import statistics

import pytest
from rounds import env_int, fmt_spread, load_average, ratios
from thesis.loads import HTTP_PORT, IPERF_PORT, Nginx, iperf3

from pynetmon import monitors
from pynetmon.testhosts import RouterHosts

ROUNDS = env_int("PNM_BENCH_ROUNDS", 5)
CONNECTIONS = env_int("PNM_BENCH_LB_CONNECTIONS", 1000)
SECONDS = env_int("PNM_BENCH_SECONDS", 4)
VIP = "192.0.2.80"
_RATE = re.compile(r"finished in [0-9.]+m?s, ([0-9.]+) req/s")
_DONE = re.compile(r"requests: \d+ total, \d+ started, (\d+) done, (\d+) succeeded")


# The backend sees a VIP connection with the client's own address and port, so a client port used
# for a direct connection that the backend still holds in TIME_WAIT, reused towards the VIP, meets
# that TIME_WAIT with other TCP timestamps (their offset hashes the destination address) and waits for
# a SYN retransmission: what any NAT in front of a server meets. Each path gets its own client ports.
PORTS = {"direct": "20000 39999", "vip": "40000 60999"}


def _connections_per_second(client, addr: str, path: str) -> float:
    client.run("sysctl", "-qw", f"net.ipv4.ip_local_port_range={PORTS[path]}")
    out = client.run("h2load", "--h1", "-c", str(CONNECTIONS), "-n", str(CONNECTIONS), "-m", "1",
                     f"http://{addr}:{HTTP_PORT}/foo", timeout=300).stdout
    done, ok = (int(x) for x in _DONE.search(out).groups())
    assert done == ok == CONNECTIONS, out  # every connection answered, through either path
    return float(_RATE.search(out).group(1))


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root (BPF)")
def test_vip_against_direct():
    with RouterHosts(2, prefix="pnmlbb") as r:
        client, backend = r.hosts
        for h in r.hosts:
            h.run("sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1")
            h.run("sysctl", "-qw", "net.ipv4.tcp_tw_reuse=1")
        services = [{"vip": VIP, "port": port, "backends": [{"address": backend.ip, "port": port}],
                     "health": {"type": "none"}} for port in (HTTP_PORT, IPERF_PORT)]
        with Nginx(backend), monitors.open("lb", interface="h0", netns=r.router, services=services,
                                           max_connections=1 << 18) as m:
            cps: dict[str, list[float]] = {"direct": [], "vip": []}
            bps: dict[str, list[float]] = {"direct": [], "vip": []}
            _connections_per_second(client, backend.ip, "direct")  # warm-up
            for _ in range(ROUNDS):
                for name, addr in (("direct", backend.ip), ("vip", VIP)):
                    cps[name].append(_connections_per_second(client, addr, name))
                    bps[name].append(iperf3(client, backend, addr, SECONDS, 1))
            snap = m.snapshot()
            cost = m.self_cost()
    stats = {s["port"]: s["backends"][0] for s in snap["services"]}
    assert stats[HTTP_PORT]["connections"] == CONNECTIONS * ROUNDS  # every VIP connection balanced
    assert snap["packets"]["rewrite_failed"] == 0 and snap["packets"]["no_backend"] == 0
    med = statistics.median
    runs = cost["run_count"] or 1
    per_packet = f"{cost['run_time_ns'] / runs:.0f} ns" if cost["run_time_ns"] is not None else "n/a (stats off)"
    print(f"\nlb vs direct, {ROUNDS} rounds, {load_average()}")
    print(f"connections/s ({CONNECTIONS} per run): direct {med(cps['direct']):.0f}, VIP {med(cps['vip']):.0f}, "
          f"ratio {fmt_spread(ratios(cps['vip'], cps['direct']), 3)}")
    print(f"iperf3 TCP Gbit/s: direct {med(bps['direct']) / 1e9:.2f}, VIP {med(bps['vip']) / 1e9:.2f}, "
          f"ratio {fmt_spread(ratios(bps['vip'], bps['direct']), 3)}")
    print(f"balancer programs: {cost['run_count']} runs, {per_packet} per run (ingress + egress, stats on)")

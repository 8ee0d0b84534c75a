"""Create two test hosts, inject a Dynmon monitor (Polycube-style code, embedded below) on one of them,
send real traffic, print the metrics as JSON and OpenMetrics, and clean up. This is `make run`."""
from __future__ import annotations

import argparse
import json
import time

NAME = "demo"
HELP = "self-contained demo: two test hosts, a Dynmon monitor, real traffic, metrics"

# Polycube/BCC-style dataplane code, as an existing dynmon user would write it: packets per path (read
# atomically through the pivot: swap-on-read) and packets/bytes per IP protocol (a hash with struct values).
DEMO_CODE = r"""
#include <uapi/linux/if_ether.h>
#include <uapi/linux/ip.h>

struct counters { uint64_t packets; uint64_t bytes; };
BPF_HASH(DIR_IP_PROTOCOLS, uint8_t, struct counters, 256);
BPF_ARRAY(DIR_PACKETS, uint64_t, 1);

static __always_inline int handle_rx(struct CTXTYPE *ctx, struct pkt_metadata *md)
{
    void *data = (void *)(long)ctx->data;
    void *data_end = (void *)(long)ctx->data_end;
    unsigned int zero = 0;
    DIR_PACKETS.increment(zero);
    struct ethhdr *eth = data;
    if ((void *)(eth + 1) > data_end || eth->h_proto != bpf_htons(ETH_P_IP))
        return RX_OK;
    struct iphdr *ip = (void *)(eth + 1);
    if ((void *)(ip + 1) > data_end)
        return RX_OK;
    uint8_t proto = ip->protocol;
    struct counters init = {};
    struct counters *c = DIR_IP_PROTOCOLS.lookup_or_try_init(&proto, &init);
    if (c) {
        __sync_fetch_and_add(&c->packets, 1);
        __sync_fetch_and_add(&c->bytes, (uint64_t)(data_end - data));
    }
    return RX_OK;
}
"""


def demo_config() -> dict:
    """The embedded default: the same code on both paths, each with its own maps and metrics."""
    def path(direction: str) -> dict:
        prefix = direction.upper()
        return {
            "name": f"{direction} counter",
            "code": DEMO_CODE.replace("DIR_", f"{prefix}_"),
            "metric-configs": [
                {"name": f"{direction}_packets", "map-name": f"{prefix}_PACKETS",
                 "extraction-options": {"swap-on-read": True, "empty-on-read": False},
                 "open-metrics-metadata": {"help": f"Packets seen on {direction}", "type": "counter",
                                           "labels": [{"name": "host", "value": "b"}]}},
                {"name": f"{direction}_ip_protocols", "map-name": f"{prefix}_IP_PROTOCOLS",
                 "open-metrics-metadata": {"help": f"Packets and bytes per IP protocol on {direction}",
                                           "type": "counter", "labels": []}},
            ],
        }
    return {"ingress-path": path("ingress"), "egress-path": path("egress")}


def _positive_int(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"must be a positive number of datagrams, not {text!r}")
    return int(text)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-c", "--count", type=_positive_int, default=1000, help="UDP datagrams to send (default 1000)")
    parser.add_argument("--json", action="store_true", help="print only the metrics, as JSON")


def run(args: argparse.Namespace) -> int:
    from ..dynmon import Dynmon
    from ..testhosts import TestHosts

    say = (lambda *m: None) if args.json else print
    with TestHosts(prefix="demo") as (a, b), Dynmon("demo", demo_config()) as mon:
        say(f"test hosts: {a.netns} ({a.ip}) <-> {b.netns} ({b.ip}), a veth pair, eth0 in each")
        mon.attach("eth0", netns=b.netns)
        say(f"monitor 'demo' attached to eth0 of {b.netns} (TC ingress and egress)")
        sent = a.send_udp(b.ip, 9000, args.count, payload=b"pynetmon" * 8)
        b.run("ping", "-c", "3", "-i", "0.2", "-q", a.ip)
        time.sleep(0.1)
        say(f"sent {sent} UDP datagrams {a.ip} -> {b.ip} and 3 pings {b.ip} -> {a.ip}\n")
        metrics = mon.metrics()
        if args.json:
            print(json.dumps(metrics))
        else:
            print(json.dumps(metrics, indent=2))
            print("\nOpenMetrics exposition (what `pynetmon serve` gives Prometheus at /metrics):\n")
            print(mon.open_metrics())
        mon.detach()
    say("detached the monitor and removed the test hosts")
    return 0

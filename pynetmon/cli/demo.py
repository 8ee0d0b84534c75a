"""Create two test hosts, attach a packet-counting monitor to one of them, send traffic, print the metrics,
and clean up. This is what `make run` does on a fresh machine."""
from __future__ import annotations

import json
import time

NAME = "demo"
HELP = "self-contained demo: two test hosts, a packet counter, real traffic, metrics"


def add_arguments(parser) -> None:
    parser.add_argument("-c", "--count", type=int, default=1000, help="UDP datagrams to send (default 1000)")
    parser.add_argument("--json", action="store_true", help="print the metrics as JSON only")


def run(args) -> int:
    from ..object import BPFObject
    from ..link import attach_tc
    from ..testhosts import TestHosts

    with TestHosts(prefix="demo") as (a, b), BPFObject.from_package("counter") as obj:
        obj.load()
        say = (lambda *m: None) if args.json else print
        say(f"test hosts: {a.netns} ({a.ip}) <-> {b.netns} ({b.ip}), veth eth0 in each")
        with attach_tc(obj.programs["count_ingress"], "eth0", "ingress", netns=b.netns) as ingress, \
                attach_tc(obj.programs["count_egress"], "eth0", "egress", netns=b.netns) as egress:
            say(f"attached: {ingress}\n          {egress}")
            sent = a.send_udp(b.ip, 9000, args.count, payload=b"pynetmon" * 8)
            b.run("ping", "-c", "3", "-i", "0.2", "-q", a.ip)
            time.sleep(0.2)
            counters = obj.maps["counters"]
            totals = {}
            for direction, per_cpu in counters.items():
                name = ("ingress", "egress")[direction]
                totals[name] = {"packets": sum(v["packets"] for v in per_cpu),
                                "bytes": sum(v["bytes"] for v in per_cpu)}
        metrics = {"sent_udp_datagrams": sent, "host_b_eth0": totals}
        if args.json:
            print(json.dumps(metrics))
        else:
            say(f"sent {sent} UDP datagrams from {a.ip} to {b.ip}, then 3 pings from {b.ip} to {a.ip}")
            say(f"{'direction':<10} {'packets':>10} {'bytes':>12}")
            for name, v in totals.items():
                say(f"{name:<10} {v['packets']:>10} {v['bytes']:>12}")
            say("detached and removed the test hosts")
    return 0

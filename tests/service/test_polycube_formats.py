"""Where pynetmon is better than Polycube by default, and the switch that gives Polycube's numbers and
text instead: `?raw=true` on the metric routes, `open-metrics?format=polycube`. A real daemon, a
Polycube-style config of our own, real UDP datagrams, plain `requests` calls."""
from __future__ import annotations

import ipaddress
import json
import os
import sys
import time

import requests

from .dataplanes import UDP_PORT, UDP_TO_PORT

# Per destination (port and address, both as they sit in the packet: network order), an array of two
# counters, and a per-CPU array: the three things Polycube reads differently.
CODE = r"""
#include <uapi/linux/if_ether.h>
#include <uapi/linux/ip.h>
#include <uapi/linux/udp.h>

struct dest { __be16 dport; __u16 pad; pynetmon_ipv4_t daddr; };

BPF_ARRAY(COUNTS, uint64_t, 2);
BPF_HASH(BY_DEST, struct dest, uint64_t, 64);
BPF_PERCPU_ARRAY(PER_CPU, uint64_t, 1);

""" + UDP_TO_PORT + r"""    unsigned int slot = 0;
    uint64_t *count = COUNTS.lookup(&slot);
    if (count)
        __sync_fetch_and_add(count, 1);
    slot = 1;
    count = COUNTS.lookup(&slot);
    if (count)
        __sync_fetch_and_add(count, 10);
    struct dest d = {.dport = udp->dest, .pad = 0, .daddr = ip->daddr};
    BY_DEST.increment(d);
    slot = 0;
    PER_CPU.increment(slot);
    return RX_OK;
}
"""

CONFIG = {"ingress-path": {"name": "polycube formats", "code": CODE % {"port": UDP_PORT}, "metric-configs": [
    {"name": "udp", "map-name": "COUNTS", "open-metrics-metadata": {
        "help": "UDP datagrams and tens", "type": "counter",
        "labels": [{"name": "proto", "value": "udp"}, {"name": "side", "value": "rx"}]}},
    {"name": "by_dest", "map-name": "BY_DEST",
     "open-metrics-metadata": {"help": "per destination", "type": "counter", "labels": []}},
    {"name": "per_cpu", "map-name": "PER_CPU"},
]}, "egress-path": {}}


def _native(value: int, size: int) -> int:
    """What Polycube reads for a big-endian field holding `value`: the native integer of its bytes."""
    return int.from_bytes(value.to_bytes(size, "big"), sys.byteorder)


def test_raw_numbers_and_polycube_text(host_daemon):
    d, a, b = host_daemon
    url = f"{d.url}/polycube/v1"
    r = requests.post(f"{url}/dynmon/mon/", json.dumps({"dataplane-config": CONFIG}), timeout=60)
    assert r.status_code == 201, r.text
    requests.post(f"{url}/attach", json.dumps({"cube": "mon", "port": "eth0"}), timeout=5).raise_for_status()
    assert a.send_udp(b.ip, UDP_PORT, 6) == 6
    time.sleep(0.2)
    metrics = f"{url}/dynmon/mon/metrics/ingress-metrics"

    # pynetmon: the port in host order, the address as text, per-CPU counts summed.
    (entry,) = requests.get(f"{metrics}/by_dest/value", timeout=5).json()
    assert entry == {"key": {"dport": UDP_PORT, "pad": 0, "daddr": str(b.ip)}, "value": 6}
    assert requests.get(f"{metrics}/per_cpu/value", timeout=5).json() == [6]
    # ?raw=true: Polycube's numbers (the bytes read as native integers), one count per CPU.
    (entry,) = requests.get(f"{metrics}/by_dest/value?raw=true", timeout=5).json()
    assert entry["key"] == {"dport": _native(UDP_PORT, 2), "pad": 0,
                            "daddr": _native(int(ipaddress.IPv4Address(str(b.ip))), 4)}
    (per_cpu,) = requests.get(f"{metrics}/per_cpu/value?raw=true", timeout=5).json()
    assert len(per_cpu) >= (os.cpu_count() or 1) and sum(per_cpu) == 6, per_cpu  # one per possible CPU
    whole = requests.get(f"{url}/dynmon/mon/metrics?raw=true", timeout=5).json()
    assert [m["name"] for m in whole["ingress-metrics"]] == ["udp", "by_dest", "per_cpu"] and "_links" in whole
    listed = requests.get(f"{metrics}?raw=true", timeout=5).json()
    assert listed[0]["value"] == [6, 60] and isinstance(listed[0]["timestamp"], int)
    assert requests.get(f"{metrics}/udp?raw=maybe", timeout=5).status_code == 400

    # open-metrics?format=polycube: Dynmon::toOpenMetrics's text; the hash map cannot be written there
    # (Polycube leaves an empty line), the metric without open-metrics-metadata is left out.
    r = requests.get(f"{url}/dynmon/mon/open-metrics?format=polycube", timeout=5)
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    assert r.text == ("#HELP udp UDP datagrams and tens\n#TYPE udp counter\n"
                      'udp_0{proto="udp", side="rx"} 6\n'
                      "#HELP udp UDP datagrams and tens\n#TYPE udp counter\n"
                      'udp_1{proto="udp", side="rx"} 60\n'), r.text
    # The default stays strict OpenMetrics; Prometheus' text format on request; anything else is a 400.
    strict = requests.get(f"{url}/dynmon/mon/open-metrics", timeout=5).text
    assert 'udp_total{index="1",proto="udp",side="rx"} 60.0' in strict and strict.endswith("# EOF\n")
    text = requests.get(f"{url}/dynmon/mon/open-metrics?format=prometheus", timeout=5).text
    assert "# EOF" not in text and 'udp_total{index="0",proto="udp",side="rx"} 6.0' in text
    assert requests.get(f"{url}/dynmon/mon/open-metrics?format=json", timeout=5).status_code == 400
    # The generic form too (polycubectl mon metrics ingress-metrics udp value show).
    assert requests.get(f"{url}/mon/metrics/ingress-metrics/udp/value", timeout=5).json() == [6, 60]

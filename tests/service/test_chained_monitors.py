"""Several monitors on one interface and direction, as Polycube chains cubes: TC programs run in the order
they were attached (tcx appends each new link last), every monitor passes packets on to the next
(TC_ACT_UNSPEC, tcx's "next"), and a program that drops ends the chain for that packet."""
from __future__ import annotations

import json
import time

import requests

from pynetmon.link import tc_programs

from .dataplanes import UDP_PORT, counter_config

DROPPER = counter_config(name="dropper")
DROPPER["ingress-path"]["code"] = DROPPER["ingress-path"]["code"].replace(
    "        __sync_fetch_and_add(&fs->bytes, (uint64_t)(data_end - data));\n    }\n    return RX_OK;",
    "        __sync_fetch_and_add(&fs->bytes, (uint64_t)(data_end - data));\n    }\n    return RX_DROP;")
assert "return RX_DROP;" in DROPPER["ingress-path"]["code"]


def _count(url: str, name: str) -> int:
    return requests.get(f"{url}/dynmon/{name}/metrics/ingress-metrics/udp_packets_total/value", timeout=5).json()[0]


def test_tc_monitors_chain_in_attach_order(host_daemon):
    d, a, b = host_daemon
    url = f"{d.url}/polycube/v1"
    for name, config in (("first", counter_config()), ("second", counter_config()), ("dropper", DROPPER)):
        r = requests.post(f"{url}/dynmon/{name}/", json.dumps({"dataplane-config": config}), timeout=60)
        assert r.status_code == 201, r.text
    requests.post(f"{url}/packetcapture/cap/", json.dumps({"capture": "ingress", "filter": f"udp port {UDP_PORT}",
                                                           "networkmode": True}), timeout=30).raise_for_status()

    def attach(name):
        requests.post(f"{url}/attach", json.dumps({"cube": name, "port": "eth0"}), timeout=10).raise_for_status()

    def detach(name):
        requests.post(f"{url}/detach", json.dumps({"cube": name, "port": "eth0"}), timeout=10).raise_for_status()

    for name in ("first", "cap", "second"):
        attach(name)
    assert len(tc_programs("eth0", "ingress", netns=b.netns)) == 3
    assert a.send_udp(b.ip, UDP_PORT, 5) == 5
    time.sleep(0.3)
    assert (_count(url, "first"), _count(url, "second")) == (5, 5)
    assert requests.get(f"{url}/cap/", timeout=5).json()["stats"]["captured"] == 5

    # A dropping monitor attached last: everything before it still sees the packets.
    attach("dropper")
    dropper_id = tc_programs("eth0", "ingress", netns=b.netns)[-1]  # run order: the last attached runs last
    a.send_udp(b.ip, UDP_PORT, 4)
    time.sleep(0.3)
    assert (_count(url, "first"), _count(url, "second"), _count(url, "dropper")) == (9, 9, 4)
    # Moved to the front (detached and attached again: attach order is run order), it hides them from the rest.
    for name in ("first", "cap", "second"):
        detach(name)
    for name in ("first", "cap", "second"):
        attach(name)
    order = tc_programs("eth0", "ingress", netns=b.netns)
    assert len(order) == 4 and order[0] == dropper_id, order
    a.send_udp(b.ip, UDP_PORT, 3)
    time.sleep(0.3)
    assert (_count(url, "dropper"), _count(url, "first"), _count(url, "second")) == (7, 9, 9)
    # Removing one leaves the others attached and counting.
    detach("dropper")
    assert a.send_udp(b.ip, UDP_PORT, 2) == 2
    time.sleep(0.3)
    assert (_count(url, "first"), _count(url, "second")) == (11, 11)
    assert len(tc_programs("eth0", "ingress", netns=b.netns)) == 3

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


def test_xdp_monitors_chain_in_attach_order(host_daemon):
    """XDP has one program per interface: pynetmon chains dynmon's XDP programs by tail calls
    (pynetmon/link/xdp_chain.py), first attached runs first, as tcx does for TC."""
    from pynetmon.link.xdp_chain import chain_of

    d, a, b = host_daemon
    url = f"{d.url}/polycube/v1"
    for name, config in (("x1", counter_config()), ("x2", counter_config()), ("xdrop", DROPPER)):
        r = requests.post(f"{url}/dynmon/{name}/", json.dumps({"dataplane-config": config, "type": "XDP_SKB"}),
                          timeout=60)
        assert r.status_code == 201, r.text

    def attach(name):
        r = requests.post(f"{url}/attach", json.dumps({"cube": name, "port": "eth0"}), timeout=10)
        assert r.status_code == 200, r.text

    def detach(name):
        requests.post(f"{url}/detach", json.dumps({"cube": name, "port": "eth0"}), timeout=10).raise_for_status()

    attach("x1")
    attach("x2")
    assert "xdpgeneric" in b.run("ip", "link", "show", "eth0").stdout
    assert a.send_udp(b.ip, UDP_PORT, 5) == 5
    time.sleep(0.3)
    assert (_count(url, "x1"), _count(url, "x2")) == (5, 5)
    attach("xdrop")  # last: the two before it still count
    a.send_udp(b.ip, UDP_PORT, 4)
    time.sleep(0.3)
    assert (_count(url, "x1"), _count(url, "x2"), _count(url, "xdrop")) == (9, 9, 4)
    # The first one leaves: the link moves to x2; x1 back at the end, after the dropper, sees nothing.
    detach("x1")
    attach("x1")
    a.send_udp(b.ip, UDP_PORT, 3)
    time.sleep(0.3)
    assert (_count(url, "x2"), _count(url, "xdrop"), _count(url, "x1")) == (12, 7, 9)
    # The middle one leaves: x2 hands packets to x1 directly.
    detach("xdrop")
    a.send_udp(b.ip, UDP_PORT, 2)
    time.sleep(0.3)
    assert (_count(url, "x2"), _count(url, "x1")) == (14, 11)
    # A new dataplane for the first one (replaced in place in the chain): the rest keeps counting.
    requests.put(f"{url}/dynmon/x2/dataplane-config", json.dumps(counter_config(name="again")),
                 timeout=60).raise_for_status()
    a.send_udp(b.ip, UDP_PORT, 6)
    time.sleep(0.3)
    assert (_count(url, "x2"), _count(url, "x1")) == (6, 17)  # x2's new maps count from zero
    detach("x2")
    detach("x1")
    assert "xdp" not in b.run("ip", "link", "show", "eth0").stdout
    assert chain_of("eth0", b.netns) == []  # (this process's view; the daemon's chain is its own)


def test_xdp_chain_refuses_what_it_cannot_chain(host_daemon, counter_object):
    """A program pynetmon did not attach holds the XDP hook: the kernel's EBUSY, a 409 naming the
    interface, nothing attached. A program that cannot pass packets on may only be last."""
    from pynetmon.link import attach_xdp
    from pynetmon.link.xdp_chain import XdpChainError, attach_xdp_chained

    d, a, b = host_daemon
    url = f"{d.url}/polycube/v1"
    r = requests.post(f"{url}/dynmon/x1/", json.dumps({"dataplane-config": counter_config(), "type": "XDP_SKB"}),
                      timeout=60)
    assert r.status_code == 201, r.text
    foreign = attach_xdp(counter_object.programs["count_xdp"], "eth0", "skb", netns=b.netns)
    try:
        r = requests.post(f"{url}/attach", json.dumps({"cube": "x1", "port": "eth0"}), timeout=10)
        assert r.status_code == 409 and "eth0" in r.json()["message"], r.text
        assert requests.get(f"{url}/x1/", timeout=5).json()["status"] == "detached"
    finally:
        foreign.detach()
    # In this process: the packaged counter has no pnm_xdp_next, so nothing can follow it.
    first = attach_xdp_chained(counter_object.programs["count_xdp"], "eth0", "skb", netns=b.netns)
    try:
        try:
            attach_xdp_chained(counter_object.programs["count_xdp"], "eth0", "skb", netns=b.netns)
            raise AssertionError("a program was chained after one that cannot pass packets on")
        except XdpChainError as exc:
            assert "count_xdp" in str(exc) and "last" in str(exc) and exc.errno == 16
        assert a.send_udp(b.ip, UDP_PORT, 3) == 3
    finally:
        first.detach()
    assert "xdp" not in b.run("ip", "link", "show", "eth0").stdout


def test_polycube_positions_first_before_after(host_daemon):
    """Polycube's `polycubectl attach CUBE PORT position=first|last`, `before=CUBE`, `after=CUBE`: on tcx
    (BPF_F_BEFORE with a program id) and in the XDP chain alike."""
    d, a, b = host_daemon
    url = f"{d.url}/polycube/v1"
    cubes = {"tdrop": ("TC", DROPPER), "t1": ("TC", counter_config()), "t2": ("TC", counter_config()),
             "xdrop": ("XDP_SKB", DROPPER), "x1": ("XDP_SKB", counter_config()), "x2": ("XDP_SKB", counter_config()),
             "x3": ("XDP_SKB", counter_config())}
    for name, (type_, config) in cubes.items():
        r = requests.post(f"{url}/dynmon/{name}/", json.dumps({"dataplane-config": config, "type": type_}), timeout=60)
        assert r.status_code == 201, r.text
    requests.post(f"{url}/packetcapture/cap/", json.dumps({}), timeout=30).raise_for_status()

    def attach(name, **where):
        return requests.post(f"{url}/attach", json.dumps({"cube": name, "port": "eth0", **where}), timeout=10)

    # TC: a dropper; t1 placed first, t2 after t1: both before the dropper, in that order.
    assert attach("tdrop").status_code == 200
    assert attach("t1", position="first").status_code == 200
    assert attach("t2", after="t1").status_code == 200
    ids = tc_programs("eth0", "ingress", netns=b.netns)
    assert len(ids) == 3
    assert a.send_udp(b.ip, UDP_PORT, 4) == 4
    time.sleep(0.3)
    assert (_count(url, "t1"), _count(url, "t2"), _count(url, "tdrop")) == (4, 4, 4)
    # XDP: the same with before=; x3 attached last sees nothing behind the dropper (nor do the TC ones).
    assert attach("xdrop").status_code == 200
    assert attach("x1", before="xdrop").status_code == 200
    assert attach("x2", position="first").status_code == 200
    assert attach("x3", position="last").status_code == 200
    a.send_udp(b.ip, UDP_PORT, 5)
    time.sleep(0.3)
    assert (_count(url, "x2"), _count(url, "x1"), _count(url, "xdrop"), _count(url, "x3")) == (5, 5, 5, 0)
    assert _count(url, "t1") == 4  # dropped at XDP, before TC
    # Bad placements: named, nothing attached.
    r = attach("cap", position="first", before="t1")
    assert r.status_code == 400 and {p["path"] for p in r.json()["problems"]} == {"position", "before"}, r.text
    r = attach("cap", after="cap")
    assert r.status_code == 400 and "dynmon" in r.json()["message"], r.text
    requests.post(f"{url}/dynmon/lonely/", json.dumps({"dataplane-config": counter_config()}), timeout=60)
    r = attach("cap", before="lonely")
    assert r.status_code == 409 and "lonely" in r.json()["message"], r.text
    r = attach("cap", position="middle")
    assert r.status_code in (400, 422) and r.json()["problems"][0]["path"] == "position", r.text
    assert requests.get(f"{url}/cap/", timeout=5).json()["status"] == "detached"

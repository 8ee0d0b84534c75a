"""Dynmon semantics as Polycube users know them (issue 15), each test run twice: through `pynetmon serve`
with the requests Polycube's tools send (plain `requests`, Polycube's paths and bodies) and through the
library (`pynetmon.Dynmon`). Configs in the style of dynmon's published examples (Polycube-style C that
parses Ethernet/IPv4/UDP, `metric-configs` with extraction options and OpenMetrics metadata); real
programs on test host b's eth0, real datagrams, exact counts."""
from __future__ import annotations

import json
import os
import time
import uuid
from typing import Any

import pytest
import requests

from pynetmon.dynmon import Dynmon

from .daemon import Daemon

BASE = "/polycube/v1"
PORT = 6123

# Parses Ethernet/IPv4/UDP like dynmon's NTP examples; %(body)s runs with `dport` (host order) and `len`
# (UDP payload bytes) for every UDP datagram.
PARSE = r"""
%(maps)s
static __always_inline int handle_rx(struct CTXTYPE *ctx, struct pkt_metadata *md) {
    void *data = (void *)(long)ctx->data;
    void *data_end = (void *)(long)ctx->data_end;
    struct ethhdr *eth = data;
    if ((void *)(eth + 1) > data_end || eth->h_proto != htons(ETH_P_IP))
        return RX_OK;
    struct iphdr *ip = (void *)(eth + 1);
    if ((void *)(ip + 1) > data_end || ip->protocol != IPPROTO_UDP || ip->ihl != 5)
        return RX_OK;
    struct udphdr *udp = (void *)(ip + 1);
    if ((void *)(udp + 1) > data_end)
        return RX_OK;
    u16 dport = ntohs(udp->dest);
    u32 len = ntohs(udp->len) - sizeof(*udp);
    if (dport != %(port)d && dport != %(port)d + 1)
        return RX_OK;
    %(body)s
    return RX_OK;
}
"""


def _path(name: str, maps: str, body: str, metrics: list[dict]) -> dict:
    return {"name": name, "code": PARSE % {"maps": maps, "body": body, "port": PORT}, "metric-configs": metrics}


def _metric(name: str, map_name: str, *, swap: bool = False, empty: bool = False, kind: str | None = None) -> dict:
    out: dict[str, Any] = {"name": name, "map-name": map_name,
                           "extraction-options": {"swap-on-read": swap, "empty-on-read": empty}}
    if kind:
        out["open-metrics-metadata"] = {"help": f"{name} of the test", "type": kind,
                                        "labels": [{"name": "L4", "value": "UDP"}]}
    return out


def sharing_config(ingress_decl: str, egress_decl: str) -> dict:
    """Datagrams to PORT counted in UDP_DATAGRAMS (slot 0: ingress, 1: egress), declared per path as given;
    datagrams to PORT + 1 in OTHER_PORT, a plain array in each path. Both paths name their metrics alike."""
    def path(decl: str, slot: int) -> dict:
        return _path(f"sharing {slot}", f"{decl}\nBPF_ARRAY(OTHER_PORT, u64, 1);",
                     f"if (dport == {PORT}) UDP_DATAGRAMS.increment({slot}); else OTHER_PORT.increment(0);",
                     [_metric("udp_datagrams", "UDP_DATAGRAMS", kind="counter"),
                      _metric("other_port_total", "OTHER_PORT", kind="counter")])
    return {"ingress-path": path(ingress_decl, 0), "egress-path": path(egress_decl, 1)}


SHARED = "BPF_TABLE_SHARED(\"array\", int, u64, UDP_DATAGRAMS, 2);"
EXTERN = "BPF_TABLE(\"extern\", int, u64, UDP_DATAGRAMS, 2);"
PLAIN = "BPF_ARRAY(UDP_DATAGRAMS, u64, 2);"

# Ingress: two swap-on-read maps (a hash emptied on read, an array read whole) and a plain truth.
# Egress: empty-on-read on every array and hash type, and a queue and a stack of payload lengths.
READS_CONFIG = {
    "ingress-path": _path("swap several", """
BPF_HASH(BY_PORT, u16, u64, 64);
BPF_ARRAY(TOTAL, u64, 1);
BPF_ARRAY(TRUTH, u64, 1);""", "BY_PORT.increment(dport); TOTAL.increment(0); TRUTH.increment(0);", [
        _metric("by_port", "BY_PORT", swap=True, empty=True, kind="counter"),
        _metric("total", "TOTAL", swap=True, kind="counter"),
        _metric("truth", "TRUTH")]),
    "egress-path": _path("empty on read", """
BPF_ARRAY(E_ARRAY, u64, 2);
BPF_HASH(E_HASH, u16, u64, 64);
BPF_PERCPU_ARRAY(E_PCPU_ARRAY, u64, 1);
BPF_PERCPU_HASH(E_PCPU_HASH, u16, u64, 64);
BPF_TABLE("lru_hash", u16, u64, E_LRU, 64);
BPF_QUEUE(E_QUEUE, u32, 16);
BPF_STACK(E_STACK, u32, 16);""", f"""E_ARRAY.increment(dport - {PORT}); E_HASH.increment(dport); E_PCPU_ARRAY.increment(0);
    E_PCPU_HASH.increment(dport); E_LRU.increment(dport); E_QUEUE.push(&len, 0); E_STACK.push(&len, 0);""", [
        _metric("array", "E_ARRAY", empty=True), _metric("hash", "E_HASH", empty=True),
        _metric("pcpu_array", "E_PCPU_ARRAY", empty=True), _metric("pcpu_hash", "E_PCPU_HASH", empty=True),
        _metric("lru", "E_LRU", empty=True), _metric("queue", "E_QUEUE"), _metric("stack", "E_STACK")]),
}


class Injector:
    """A dynmon cube through the daemon, with the requests Polycube's tools send."""

    def __init__(self, d: Daemon, b):
        self.url = d.url + BASE
        self.name = None

    def create(self, name: str, config: dict | None) -> requests.Response:
        self.name = name
        body = {"dataplane-config": config} if config is not None else {}
        return requests.post(f"{self.url}/dynmon/{name}", json.dumps(body), timeout=60)

    def inject(self, config: dict) -> requests.Response:
        return requests.put(f"{self.url}/dynmon/{self.name}/dataplane-config", json.dumps(config), timeout=60)

    def attach(self, port: str) -> requests.Response:
        return requests.post(f"{self.url}/attach", json.dumps({"cube": self.name, "port": port}), timeout=30)

    def value(self, direction: str, metric: str) -> Any:
        resp = requests.get(f"{self.url}/dynmon/{self.name}/metrics/{direction}-metrics/{metric}/value", timeout=30)
        resp.raise_for_status()
        return resp.json()

    def metrics(self) -> dict:
        body = requests.get(f"{self.url}/dynmon/{self.name}/metrics", timeout=30).json()
        body.pop("_links", None)
        return body

    def open_metrics(self) -> str:
        return requests.get(f"{self.url}/dynmon/{self.name}/open-metrics", timeout=30).text

    def close(self) -> None:
        if self.name:
            requests.delete(f"{self.url}/dynmon/{self.name}", timeout=30)


class Library:
    """The same through `pynetmon.Dynmon`, attached in test host b's namespace."""

    def __init__(self, d: Daemon | None, b):
        self.netns = b.netns
        self.mon: Dynmon | None = None

    def create(self, name: str, config: dict | None) -> None:
        self.mon = Dynmon(name, config)

    def inject(self, config: dict) -> None:
        self.mon.set_dataplane_config(config)

    def attach(self, port: str) -> None:
        self.mon.attach(port, netns=self.netns)

    def value(self, direction: str, metric: str) -> Any:
        return self.mon.metrics(direction, metric)["value"]

    def metrics(self) -> dict:
        return self.mon.metrics()

    def open_metrics(self) -> str:
        return self.mon.open_metrics()

    def close(self) -> None:
        if self.mon is not None:
            self.mon.close()


@pytest.fixture(params=["injector", "library"])
def monitor(request, hosts):
    """(client, a, b): the injector path runs a daemon attaching in b's namespace."""
    a, b = hosts
    d = Daemon("--netns", b.netns) if request.param == "injector" else None
    client = (Injector if d else Library)(d, b)
    try:
        yield client, a, b
    finally:
        client.close()
        if d is not None:
            assert d.stop() == 0, d.log()


def _send(sender, receiver, port: int, count: int, payload: bytes = b"x" * 16) -> None:
    assert sender.send_udp(receiver.ip, port, count, payload) == count
    time.sleep(0.1)  # datagrams sent on a veth are processed by the peer's softirq right after sendto


def _ok(resp) -> None:
    if resp is not None:
        assert resp.status_code in (200, 201), resp.text


@pytest.mark.parametrize("ingress, egress, udp_in, udp_out", [
    (PLAIN, PLAIN, [5, 0], [0, 7]),          # same name without _SHARED: two maps
    (SHARED, EXTERN, [5, 7], [5, 7]),        # _SHARED in one path, "extern" in the other: one map
    (EXTERN, SHARED, [5, 7], [5, 7]),        # the same the other way round
], ids=["plain", "shared-extern", "extern-shared"])
def test_map_sharing(monitor, ingress, egress, udp_in, udp_out):
    client, a, b = monitor
    _ok(client.create("share", sharing_config(ingress, egress)))
    _ok(client.attach("eth0"))
    _send(a, b, PORT, 5)       # b's ingress
    _send(a, b, PORT + 1, 3)
    _send(b, a, PORT, 7)       # b's egress
    _send(b, a, PORT + 1, 2)
    assert client.value("ingress", "udp_datagrams") == udp_in
    assert client.value("egress", "udp_datagrams") == udp_out
    # OTHER_PORT is a plain BPF_ARRAY in both paths: always two maps.
    assert client.value("ingress", "other_port_total") == [3]
    assert client.value("egress", "other_port_total") == [2]


def test_pinned_map_is_the_map_at_its_path(monitor):
    client, a, b = monitor
    pin = f"/sys/fs/bpf/pynetmon_sem_{uuid.uuid4().hex[:12]}"
    decl = f'BPF_TABLE_PINNED("array", int, u64, UDP_DATAGRAMS, 2, "{pin}");'
    try:
        _ok(client.create("pinned", sharing_config(decl, decl)))
        _ok(client.attach("eth0"))
        _send(a, b, PORT, 4)
        _send(b, a, PORT, 6)
        assert client.value("ingress", "udp_datagrams") == [4, 6] == client.value("egress", "udp_datagrams")
        assert os.path.exists(pin)
    finally:
        client.close()
        if os.path.exists(pin):
            os.unlink(pin)


def test_one_metric_name_in_both_paths(monitor):
    client, a, b = monitor
    _ok(client.create("names", sharing_config(PLAIN, PLAIN)))  # every metric name is in both paths
    _ok(client.attach("eth0"))
    _send(a, b, PORT + 1, 3)
    _send(b, a, PORT + 1, 2)
    metrics = client.metrics()
    assert [m["name"] for m in metrics["ingress-metrics"]] == ["udp_datagrams", "other_port_total"]
    assert [m["name"] for m in metrics["egress-metrics"]] == ["udp_datagrams", "other_port_total"]
    assert {m["name"]: m["value"] for m in metrics["egress-metrics"]}["other_port_total"] == [2]
    text = client.open_metrics()
    assert text.count("# TYPE other_port counter") == 1
    assert 'other_port_total{L4="UDP",direction="ingress"} 3.0' in text
    assert 'other_port_total{L4="UDP",direction="egress"} 2.0' in text
    if isinstance(client, Injector):  # the daemon's /metrics: one family too, with the monitor label
        scrape = requests.get(client.url.removesuffix(BASE) + "/metrics", timeout=30,
                              headers={"Accept": "application/openmetrics-text; version=1.0.0"}).text
        assert scrape.count("# TYPE other_port counter") == 1, scrape
        assert 'other_port_total{L4="UDP",direction="egress",monitor="names"} 2.0' in scrape, scrape


@pytest.mark.parametrize("with_dataplane", [False, True])
def test_attaching_to_a_missing_interface(monitor, with_dataplane):
    client, a, b = monitor
    _ok(client.create("missing", sharing_config(PLAIN, PLAIN) if with_dataplane else None))
    if isinstance(client, Injector):
        resp = client.attach("nosuch0")
        assert resp.status_code == 404, resp.text
        assert "nosuch0" in resp.json()["message"]
        cube = requests.get(f"{client.url}/dynmon/missing", timeout=30).json()
        assert cube["status"] == "detached" and cube["parent"] == ""
    else:
        from pynetmon import InterfaceNotFoundError
        with pytest.raises(InterfaceNotFoundError, match="nosuch0"):
            client.attach("nosuch0")
    _ok(client.attach("eth0"))  # the cube is intact: it attaches where the interface exists
    if not with_dataplane:
        client.inject(sharing_config(PLAIN, PLAIN))
    _send(a, b, PORT, 2)
    assert client.value("ingress", "udp_datagrams") == [2, 0]


def _by_key(entries: list[dict]) -> dict:
    return {e["key"]: e["value"] for e in entries}


def test_swap_empty_on_read_queue_and_stack(monitor):
    client, a, b = monitor
    _ok(client.create("reads", READS_CONFIG))
    _ok(client.attach("eth0"))
    _send(a, b, PORT, 3)
    _send(a, b, PORT + 1, 5)
    # Swap-on-read on two metrics of one path: each read is atomic; the emptying one gives the increments
    # since its last read, the other the whole history (see docs/swap.md for how this differs from
    # Polycube, whose second copy alternates with the first).
    assert _by_key(client.value("ingress", "by_port")) == {PORT: 3, PORT + 1: 5}
    assert client.value("ingress", "total") == [8]
    assert client.value("ingress", "by_port") == []
    assert client.value("ingress", "total") == [8]
    _send(a, b, PORT, 2)
    ingress = {m["name"]: m["value"] for m in client.metrics()["ingress-metrics"]}  # one flip for the path
    assert _by_key(ingress["by_port"]) == {PORT: 2}
    assert ingress["total"] == [10] == ingress["truth"]

    for size in (10, 20, 30, 40):
        _send(b, a, PORT, 1, b"y" * size)
    _send(b, a, PORT + 1, 1, b"z" * 50)
    egress = {m["name"]: m["value"] for m in client.metrics()["egress-metrics"]}
    assert egress["array"] == [4, 1]
    assert _by_key(egress["hash"]) == {PORT: 4, PORT + 1: 1} == _by_key(egress["lru"])
    assert egress["pcpu_array"] == [5]                       # per-CPU values summed (pynetmon's default)
    assert _by_key(egress["pcpu_hash"]) == {PORT: 4, PORT + 1: 1}
    assert egress["queue"] == [10, 20, 30, 40, 50]            # pop order: first in, first out
    assert egress["stack"] == [50, 40, 30, 20, 10]            # last in, first out
    # Emptied on read: arrays zeroed (Polycube: "zero-ed, like in an ARRAY"), hashes without entries;
    # queues and stacks are popped whatever empty-on-read says (reading one is popping it).
    egress = {m["name"]: m["value"] for m in client.metrics()["egress-metrics"]}
    assert egress == {"array": [0, 0], "hash": [], "pcpu_array": [0], "pcpu_hash": [], "lru": [], "queue": [],
                      "stack": []}
    _send(b, a, PORT + 1, 2, b"w" * 7)
    assert client.value("egress", "array") == [0, 2]
    assert client.value("egress", "queue") == [7, 7]


# libbpf style (Polycube-style code has no way to fill a program array): the entry tail-calls, through a
# statically initialised program array, the program that counts datagrams to PORT.
TAIL_CALLS = r"""
#include <linux/bpf.h>
#include <linux/pkt_cls.h>
#include <linux/if_ether.h>
#include <linux/ip.h>
#include <linux/udp.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>
int count_port(struct __sk_buff *skb);
struct { __uint(type, BPF_MAP_TYPE_PROG_ARRAY); __uint(max_entries, 1); __uint(key_size, 4);
         __array(values, int (struct __sk_buff *)); } next SEC(".maps") = { .values = { (void *)&count_port } };
struct { __uint(type, BPF_MAP_TYPE_ARRAY); __uint(max_entries, 1); __type(key, __u32); __type(value, __u64); }
    DATAGRAMS SEC(".maps");
SEC("tc") int count_port(struct __sk_buff *skb) {
    void *data = (void *)(long)skb->data, *end = (void *)(long)skb->data_end;
    struct udphdr *udp = data + sizeof(struct ethhdr) + sizeof(struct iphdr);
    __u32 k = 0;
    __u64 *v = bpf_map_lookup_elem(&DATAGRAMS, &k);
    if ((void *)(udp + 1) <= end && udp->dest == bpf_htons(PORT_NUMBER) && v)
        __sync_fetch_and_add(v, 1);
    return TC_ACT_UNSPEC;
}
SEC("tc") int entry(struct __sk_buff *skb) { bpf_tail_call(skb, &next, 0); return TC_ACT_UNSPEC; }
""".replace("PORT_NUMBER", str(PORT))


def test_swap_on_read_with_tail_calls_and_pinned_maps(monitor):
    client, a, b = monitor
    pin = f"/sys/fs/bpf/pynetmon_sem_{uuid.uuid4().hex[:12]}"
    try:
        config = {"ingress-path": {"name": "tail calls", "code": TAIL_CALLS, "metric-configs": [
                      _metric("datagrams", "DATAGRAMS", swap=True, empty=True, kind="counter")]},
                  "egress-path": _path("pinned swap", f'BPF_TABLE_PINNED("array", int, u64, SENT, 1, "{pin}");',
                                       f"if (dport == {PORT}) SENT.increment(0);",
                                       [_metric("sent", "SENT", swap=True, empty=True, kind="counter")])}
        _ok(client.create("tails", config))  # Polycube: reloaded at every read; here a flip (docs/swap.md)
        _ok(client.attach("eth0"))
        for count in (7, 3):
            _send(a, b, PORT, count)
            _send(b, a, PORT, count + 1)
            assert client.value("ingress", "datagrams") == [count]
            assert client.value("egress", "sent") == [count + 1]
        assert os.path.exists(pin) and os.path.exists(pin + "_1")  # the two copies of the pinned map
    finally:
        client.close()
        for path in (pin, pin + "_1"):
            if os.path.exists(path):
                os.unlink(path)


def test_pin_root_confines_pinned_maps(hosts):
    """`pynetmon serve --pin-root DIR`: a config may pin only below DIR (by default anywhere in /sys/fs/bpf,
    as BCC, which lets it use other programs' pinned maps)."""
    root = f"/sys/fs/bpf/pynetmon_root_{uuid.uuid4().hex[:8]}"
    inside, outside = f"{root}/counts", f"/sys/fs/bpf/pynetmon_out_{uuid.uuid4().hex[:8]}"
    with Daemon("--pin-root", root) as d:
        url = d.url + BASE

        def create(name: str, pin: str) -> requests.Response:
            decl = f'BPF_TABLE_PINNED("array", int, u64, UDP_DATAGRAMS, 2, "{pin}");'
            return requests.post(f"{url}/dynmon/{name}", json.dumps({"dataplane-config": sharing_config(decl, PLAIN)}),
                                 timeout=60)
        try:
            refused = create("out", outside)
            assert refused.status_code == 400, refused.text
            assert f"must be a normalised absolute path under {root}/" in refused.json()["message"]
            assert refused.json()["problems"][0]["path"] == "dataplane-config.ingress-path.code"
            assert not os.path.exists(outside)
            assert create("in", inside).status_code == 201
            assert os.path.exists(inside)
        finally:
            for path in (inside, outside):
                if os.path.exists(path):
                    os.unlink(path)
            if os.path.isdir(root):
                os.rmdir(root)

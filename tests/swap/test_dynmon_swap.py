"""Swap-on-read through Dynmon's configuration: both code styles behind the pivot, the errors a config gets
at injection (with their JSON paths), and configuration changes that keep the old dataplane on failure."""
from __future__ import annotations

import copy
import json
import os
import time
import uuid
from pathlib import Path

import pytest

from pynetmon import ConfigError, Map
from pynetmon._binding import lib
from pynetmon.dynmon import Dynmon
from pynetmon.dynmon.swap_path import SwapPathDataplane
from pynetmon.link import tc_programs

from .programs import exactness_config, program_source

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "dynmon"
SWAP_OPTION = "ingress-path.metric-configs[0].extraction-options.swap-on-read"


def _ntp_config(empty: bool) -> dict:
    config = json.loads((EXAMPLES / "ntp_packets_counter.json").read_text())
    config["ingress-path"]["metric-configs"][0]["extraction-options"] = {"swap-on-read": True,
                                                                         "empty-on-read": empty}
    return config


def _send_ntp(a, b, count: int) -> None:
    assert a.send_udp(b.ip, 123, count) == count


def test_polycube_style_code_runs_behind_the_pivot(hosts):
    a, b = hosts
    with Dynmon("ntp", _ntp_config(empty=False)) as mon:
        mon.attach(b.ifname, netns=b.netns)
        dp = mon.path_dataplane("ingress")
        assert isinstance(dp, SwapPathDataplane)
        assert tc_programs(b.ifname, "ingress", netns=b.netns) == [dp.program.id]
        _send_ntp(a, b, 20)
        assert mon.metrics("ingress", "ntp_packets_total")["value"] == [20]
        _send_ntp(a, b, 5)
        assert mon.metrics("ingress", "ntp_packets_total")["value"] == [25]  # not emptied: the whole history
        assert "ntp_packets_total{IP_PROTO=\"UDP\",L4=\"NTP\"} 25.0" in mon.open_metrics()
        assert dp.swap.flips == 3 and dp.swap.missed() == 0


def test_empty_on_read_with_swap(hosts):
    a, b = hosts
    with Dynmon("ntp", _ntp_config(empty=True)) as mon:
        mon.attach(b.ifname, netns=b.netns)
        _send_ntp(a, b, 7)
        assert mon.metrics("ingress", "ntp_packets_total")["value"] == [7]
        assert mon.metrics("ingress", "ntp_packets_total")["value"] == [0]
        _send_ntp(a, b, 3)
        assert mon.metrics("ingress", "ntp_packets_total")["value"] == [3]


# The entry counts every packet in `hits`; the program it tail-calls (a statically initialised program
# array) counts UDP datagrams per destination port in `ports`. Both are swap-on-read.
TAIL_CALLING = r"""
#include <linux/bpf.h>
#include <linux/pkt_cls.h>
#include <linux/if_ether.h>
#include <linux/ip.h>
#include <linux/in.h>
#include <linux/udp.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>
int by_port(struct __sk_buff *skb);
struct { __uint(type, BPF_MAP_TYPE_PROG_ARRAY); __uint(max_entries, 4); __uint(key_size, 4);
         __array(values, int (struct __sk_buff *)); } jumps SEC(".maps") = { .values = { [2] = (void *)&by_port } };
struct { __uint(type, BPF_MAP_TYPE_ARRAY); __uint(max_entries, 1); __type(key, __u32); __type(value, __u64); }
    hits SEC(".maps");
struct { __uint(type, BPF_MAP_TYPE_HASH); __uint(max_entries, 64); __type(key, __u16); __type(value, __u64); }
    ports SEC(".maps");
SEC("tc") int by_port(struct __sk_buff *skb) {
    void *data = (void *)(long)skb->data, *end = (void *)(long)skb->data_end;
    struct ethhdr *eth = data;
    struct iphdr *ip = (void *)(eth + 1);
    struct udphdr *udp = (void *)(ip + 1);
    if ((void *)(udp + 1) > end || eth->h_proto != bpf_htons(ETH_P_IP) || ip->protocol != IPPROTO_UDP ||
        ip->ihl != 5)
        return TC_ACT_UNSPEC;
    __u16 port = bpf_ntohs(udp->dest);
    __u64 one = 1, *v = bpf_map_lookup_elem(&ports, &port);
    if (v)
        __sync_fetch_and_add(v, 1);
    else
        bpf_map_update_elem(&ports, &port, &one, BPF_NOEXIST);
    return TC_ACT_UNSPEC;
}
SEC("tc") int entry(struct __sk_buff *skb) {
    __u32 k = 0;
    __u64 *v = bpf_map_lookup_elem(&hits, &k);
    if (v)
        __sync_fetch_and_add(v, 1);
    bpf_tail_call(skb, &jumps, 2);
    return TC_ACT_UNSPEC;
}
"""


def test_tail_calling_code_with_swap_on_read(hosts):
    """Polycube reloads the program at every read for code it cannot run behind its pivot; pynetmon gives
    each of the two instances its own program arrays (libbpf fills them with that instance's programs), so
    a read stays a flip and the tail-called program's counts are as exact as the entry's."""
    a, b = hosts
    config = {"ingress-path": {"name": "tails", "code": TAIL_CALLING, "metric-configs": [
        {"name": "per_port", "map-name": "ports", "extraction-options": {"swap-on-read": True, "empty-on-read": True}},
        {"name": "packets", "map-name": "hits", "extraction-options": {"swap-on-read": True}}]}}
    with Dynmon("tails", config) as mon:
        mon.attach(b.ifname, netns=b.netns)
        dp = mon.path_dataplane("ingress")
        assert tc_programs(b.ifname, "ingress", netns=b.netns) == [dp.program.id]
        first, second = (obj.maps["jumps"] for obj in dp.swap.instances)
        assert first.id != second.id  # one program array per instance
        for count in (9, 4):
            assert a.send_udp(b.ip, 4242, count) == count
            assert a.send_udp(b.ip, 4343, 2) == 2
            time.sleep(0.1)  # datagrams on a veth are processed by the peer's softirq right after sendto
            ports = {e["key"]: e["value"] for e in mon.metrics("ingress", "per_port")["value"]}
            assert {p: ports[p] for p in (4242, 4343)} == {4242: count, 4343: 2}
        assert mon.metrics("ingress", "packets")["value"][0] >= 17
        assert dp.swap.missed() == 0
QUEUE = program_source(
    """struct { __uint(type, BPF_MAP_TYPE_QUEUE); __uint(max_entries, 8); __type(value, __u32); } events
       SEC(".maps");""",
    "__u32 v = 1; bpf_map_push_elem(&events, &v, 0); return 0;")


@pytest.mark.parametrize("code, map_name, reason", [
    (QUEUE, "events", "is a queue map; swap-on-read works on"),
])
def test_config_errors_name_the_swap_option_and_keep_the_running_dataplane(hosts, code, map_name, reason):
    a, b = hosts
    bad = {"ingress-path": {"code": code, "metric-configs": [
        {"name": "m", "map-name": map_name, "extraction-options": {"swap-on-read": True}}]}}
    with Dynmon("keep", _ntp_config(empty=False)) as mon:
        mon.attach(b.ifname, netns=b.netns)
        running = mon.path_dataplane("ingress")
        with pytest.raises(ConfigError) as info:
            mon.set_dataplane_config(bad)
        (where, message), = info.value.problems
        assert where == SWAP_OPTION and reason in message, info.value.problems
        assert mon.path_dataplane("ingress") is running
        _send_ntp(a, b, 4)
        assert mon.metrics("ingress", "ntp_packets_total")["value"] == [4]


def test_a_swap_map_cannot_be_shared_with_the_other_path(bpf):
    config = exactness_config()
    with Dynmon("shared", config) as mon:
        egress = copy.deepcopy(config["ingress-path"])
        egress["metric-configs"] = [{"name": "egress_seen", "map-name": "truth"}]
        with pytest.raises(ConfigError) as info:
            mon.set_dataplane_config({"egress-path": egress})
        assert {where for where, _ in info.value.problems} == {"ingress-path.code"}
        reasons = " ".join(reason for _, reason in info.value.problems)
        for name in ("by_len", "by_slot"):
            assert f"{name!r} is swap-on-read on the ingress path and also defined by the egress" in reasons
        assert mon.path_dataplane("egress") is None
        # The other order: the plain path exists first, then a swap path wants one of its maps.
        mon.reset_dataplane_config()
        mon.set_dataplane_config({"egress-path": egress})
        with pytest.raises(ConfigError, match="swap-on-read on the ingress path and also defined by the"):
            mon.set_dataplane_config({"ingress-path": config["ingress-path"]})


def test_replacing_a_swap_config_swaps_the_pivot_in_place(hosts):
    a, b = hosts
    with Dynmon("replace", _ntp_config(empty=False)) as mon:
        mon.attach(b.ifname, netns=b.netns)
        first = mon.path_dataplane("ingress")
        _send_ntp(a, b, 3)
        assert mon.metrics("ingress", "ntp_packets_total")["value"] == [3]
        mon.set_dataplane_config(_ntp_config(empty=True))
        second = mon.path_dataplane("ingress")
        assert second is not first
        assert tc_programs(b.ifname, "ingress", netns=b.netns) == [second.program.id]
        _send_ntp(a, b, 6)
        assert mon.metrics("ingress", "ntp_packets_total")["value"] == [6]
        mon.detach()
        assert tc_programs(b.ifname, "ingress", netns=b.netns) == []


def _pinned_ntp_config(pin: str) -> dict:
    """The NTP example with its counter declared _PINNED, swap-on-read (Polycube's rewriter reads the
    second copy from MAP_NAME_1, which its users pin beforehand; pynetmon pins `<path>_1` itself if absent)."""
    config = _ntp_config(empty=True)
    path = config["ingress-path"]
    decl = next(line for line in path["code"].splitlines() if "NTP_PACKETS_COUNTER" in line and "BPF_" in line)
    path["code"] = path["code"].replace(decl, f'BPF_TABLE_PINNED("array", int, uint64_t, NTP_PACKETS_COUNTER, 1, "{pin}");')
    return config


@pytest.fixture
def pin(bpf):
    path = f"/sys/fs/bpf/pynetmon_swap_{uuid.uuid4().hex[:12]}"
    yield path
    for p in (path, path + "_1"):
        if os.path.exists(p):
            os.unlink(p)


@pytest.mark.parametrize("pinned_beforehand", [False, True], ids=["pinned_by_pynetmon", "pinned_beforehand"])
def test_pinned_map_with_swap_on_read(hosts, pin, pinned_beforehand):
    a, b = hosts
    if pinned_beforehand:  # as Polycube's users must: both copies pinned before the code is injected
        for path in (pin, pin + "_1"):
            m = Map.create("array", 4, 8, 1)
            assert lib.bpf_obj_pin(m.fd, path.encode()) == 0
            m.close()
    with Dynmon("pinned", _pinned_ntp_config(pin)) as mon:
        mon.attach(b.ifname, netns=b.netns)
        dp = mon.path_dataplane("ingress")
        ids = {_pinned_id(pin), _pinned_id(pin + "_1")}
        assert ids == {obj.maps["NTP_PACKETS_COUNTER"].id for obj in dp.swap.instances}  # one copy at each path
        for count in (6, 2):
            _send_ntp(a, b, count)
            time.sleep(0.1)
            assert mon.metrics("ingress", "ntp_packets_total")["value"] == [count]
        assert dp.swap.missed() == 0


def _pinned_id(path: str) -> int:
    fd = lib.bpf_obj_get(path.encode())
    assert fd >= 0, path
    try:
        return Map.from_fd(fd).id
    finally:
        os.close(fd)

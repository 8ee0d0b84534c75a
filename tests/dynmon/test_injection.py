"""Injecting code into real test hosts and reading exact counts: both dialects, ingress, egress, both with a
shared map, every readable map type, the XDP modes, precompiled objects."""
from __future__ import annotations

import time

import pytest

from pynetmon.dynmon import Dynmon, PathConfig
from pynetmon.link import tc_programs, xdp_programs
from pynetmon.toolchain import compile_c

from .helpers import example, exchange, path_config

PORT = 5555

LIBBPF_PORTS = r"""
#include <linux/bpf.h>
#include <linux/pkt_cls.h>
#include <linux/in.h>
#include <linux/if_ether.h>
#include <linux/ip.h>
#include <linux/udp.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

struct port_key {
    __u8 proto;
    __u8 pad;
    __be16 dport;
};

struct {
    __uint(type, BPF_MAP_TYPE_HASH);
    __uint(max_entries, 64);
    __type(key, struct port_key);
    __type(value, __u64);
} udp_ports SEC(".maps");

SEC("tc")
int count_ports(struct __sk_buff *skb)
{
    void *data = (void *)(long)skb->data, *end = (void *)(long)skb->data_end;
    struct ethhdr *eth = data;
    struct iphdr *ip = (void *)(eth + 1);
    struct udphdr *udp = (void *)(ip + 1);
    if ((void *)(udp + 1) > end || eth->h_proto != bpf_htons(ETH_P_IP) || ip->protocol != IPPROTO_UDP)
        return TC_ACT_UNSPEC;
    struct port_key key = {.proto = ip->protocol, .dport = udp->dest};
    __u64 one = 1, *count = bpf_map_lookup_elem(&udp_ports, &key);
    if (count)
        __sync_fetch_and_add(count, 1);
    else
        bpf_map_update_elem(&udp_ports, &key, &one, BPF_NOEXIST);
    return TC_ACT_UNSPEC;
}

SEC("xdp")
int count_xdp(struct xdp_md *ctx)
{
    return XDP_PASS;
}
"""


def test_packet_counter_example_counts_exactly(quiet_hosts):
    a, b = quiet_hosts
    with Dynmon("pkts", example("packet_counter")) as mon:
        mon.attach("eth0", netns=b.netns)
        exchange(a, b, 25)
        metric = mon.metrics("ingress", "packets_total")
        assert metric["name"] == "packets_total" and metric["value"] == [25]
        assert abs(metric["timestamp"] - time.time() * 1e6) < 60e6  # microseconds since the epoch
        everything = mon.metrics()
        assert set(everything) == {"ingress-metrics", "egress-metrics"}
        assert [m["name"] for m in everything["ingress-metrics"]] == ["packets_total"]
        assert everything["egress-metrics"] == []
        (listed,) = mon.metrics("ingress")
        assert listed["name"] == "packets_total" and listed["value"] == [25]


def test_ntp_example_counts_only_ntp(quiet_hosts):
    a, b = quiet_hosts
    with Dynmon("ntp", example("ntp_packets_counter")) as mon:
        mon.attach("eth0", netns=b.netns)
        exchange(a, b, 7, port=123)
        exchange(a, b, 5, port=PORT)
        assert mon.metrics("ingress", "ntp_packets_total")["value"] == [7]


def test_libbpf_style_with_struct_keys(hosts):
    a, b = hosts
    cfg = {"ingress-path": path_config(LIBBPF_PORTS, ("udp_ports", "udp_ports"))}
    with Dynmon("ports", cfg) as mon:
        mon.attach("eth0", netns=b.netns)
        exchange(a, b, 6, port=PORT)
        exchange(a, b, 2, port=PORT + 1)
        value = mon.metrics("ingress", "udp_ports")["value"]
        assert sorted(value, key=lambda e: e["key"]["dport"]) == [
            {"key": {"proto": 17, "pad": 0, "dport": PORT}, "value": 6},      # __be16 shown in host order
            {"key": {"proto": 17, "pad": 0, "dport": PORT + 1}, "value": 2}]


# %s: the declaration (Polycube: _SHARED where the map is defined, "extern" where the other path uses it).
SHARED = """
%s
static __always_inline int handle_rx(struct CTXTYPE *ctx, struct pkt_metadata *md) {
    DIRECTIONS.increment(%d);
    return RX_OK;
}
"""
DEFINE, USE = "BPF_ARRAY_SHARED(DIRECTIONS, u64, 2);", 'BPF_TABLE("extern", int, u64, DIRECTIONS, 2);'


def test_ingress_and_egress_share_a_map(quiet_hosts):
    a, b = quiet_hosts
    cfg = {"ingress-path": path_config(SHARED % (DEFINE, 0), ("in_view", "DIRECTIONS")),
           "egress-path": path_config(SHARED % (USE, 1), ("out_view", "DIRECTIONS"))}
    with Dynmon("both", cfg) as mon:
        mon.attach("eth0", netns=a.netns)
        exchange(a, b, 10)  # a's egress
        exchange(b, a, 4)   # a's ingress
        metrics = mon.metrics()
        assert metrics["ingress-metrics"][0]["value"] == [4, 10]
        assert metrics["egress-metrics"][0]["value"] == [4, 10]  # one kernel map seen from both paths
        ingress, egress = mon.path_dataplane("ingress"), mon.path_dataplane("egress")
        assert ingress.maps["DIRECTIONS"].fd != egress.maps["DIRECTIONS"].fd
        assert _map_id(ingress.maps["DIRECTIONS"]) == _map_id(egress.maps["DIRECTIONS"])


def _map_id(m) -> int:
    from pynetmon._binding import ffi, lib
    info = ffi.new("struct bpf_map_info *")
    size = ffi.new("__u32 *", ffi.sizeof("struct bpf_map_info"))
    assert lib.bpf_obj_get_info_by_fd(m.fd, info, size) == 0
    return info.id


def test_egress_only(quiet_hosts):
    a, b = quiet_hosts
    code = example("packet_counter")["ingress-path"]["code"]
    with Dynmon("out", {"egress-path": path_config(code, ("sent", "PKT_COUNTER"))}) as mon:
        mon.attach("eth0", netns=a.netns)
        exchange(a, b, 9)
        assert mon.metrics("egress", "sent")["value"] == [9]
        assert tc_programs("eth0", "ingress", netns=a.netns) == []


ALL_TYPES = """
BPF_HASH(T_HASH, u16, u64, 16);
BPF_ARRAY(T_ARRAY, u64, 2);
BPF_TABLE("percpu_hash", u16, u64, T_PERCPU_HASH, 16);
BPF_PERCPU_ARRAY(T_PERCPU_ARRAY, u64, 2);
BPF_TABLE("lru_hash", u16, u64, T_LRU_HASH, 16);
BPF_TABLE("lru_percpu_hash", u16, u64, T_LRU_PERCPU_HASH, 16);
BPF_QUEUE(T_QUEUE, u32, 32);
BPF_STACK(T_STACK, u32, 32);

static __always_inline int handle_rx(struct CTXTYPE *ctx, struct pkt_metadata *md) {
    void *data = (void *)(long)ctx->data, *end = (void *)(long)ctx->data_end;
    struct ethhdr *eth = data;
    struct iphdr *ip = (void *)(eth + 1);
    struct udphdr *udp = (void *)(ip + 1);
    if ((void *)(udp + 1) > end || eth->h_proto != htons(ETH_P_IP) || ip->protocol != IPPROTO_UDP)
        return RX_OK;
    u16 port = ntohs(udp->dest);
    u32 payload = ntohs(udp->len) - sizeof(*udp);
    u64 zero = 0, *slot;
    T_HASH.increment(port);
    T_ARRAY.increment(1);
    slot = T_PERCPU_HASH.lookup_or_try_init(&port, &zero);
    if (slot)
        *slot += 1;
    slot = T_PERCPU_ARRAY.lookup(&(int){1});
    if (slot)
        *slot += payload;
    T_LRU_HASH.increment(port, 2);
    T_LRU_PERCPU_HASH.increment(port);
    T_QUEUE.push(&payload, 0);
    T_STACK.push(&payload, 0);
    return RX_OK;
}
"""
TYPE_MAPS = ["T_HASH", "T_ARRAY", "T_PERCPU_HASH", "T_PERCPU_ARRAY", "T_LRU_HASH", "T_LRU_PERCPU_HASH",
             "T_QUEUE", "T_STACK"]


def test_every_map_type(hosts):
    a, b = hosts
    cfg = {"ingress-path": path_config(ALL_TYPES, *[(name.lower(), name) for name in TYPE_MAPS])}
    with Dynmon("types", cfg) as mon:
        mon.attach("eth0", netns=b.netns)
        types = {name: m.type for name, m in mon.path_dataplane("ingress").maps.items()}
        assert types == {"T_HASH": "hash", "T_ARRAY": "array", "T_PERCPU_HASH": "percpu_hash",
                         "T_PERCPU_ARRAY": "percpu_array", "T_LRU_HASH": "lru_hash",
                         "T_LRU_PERCPU_HASH": "lru_percpu_hash", "T_QUEUE": "queue", "T_STACK": "stack"}
        sizes = [1, 2, 3, 4, 5]
        for size in sizes:
            exchange(a, b, 1, port=PORT, payload=b"p" * size)
        exchange(a, b, 3, port=PORT + 1, payload=b"q" * 10)
        values = {m["name"].upper(): m["value"] for m in mon.metrics("ingress")}
        by_port = {PORT: 5, PORT + 1: 3}
        for name, factor in (("T_HASH", 1), ("T_PERCPU_HASH", 1), ("T_LRU_HASH", 2), ("T_LRU_PERCPU_HASH", 1)):
            assert {e["key"]: e["value"] for e in values[name]} == {p: n * factor for p, n in by_port.items()}, name
        assert values["T_ARRAY"] == [0, 8]
        assert values["T_PERCPU_ARRAY"] == [0, sum(sizes) + 30]          # summed over CPUs
        assert values["T_QUEUE"] == sizes + [10, 10, 10]                 # pop order: first in, first out
        assert values["T_STACK"] == [10, 10, 10] + sizes[::-1]           # last in, first out
        assert mon.metrics("ingress", "t_queue")["value"] == []          # reading a queue pops it
        per_cpu = mon.metrics("ingress", "t_percpu_array", per_cpu=True)["value"]
        assert len(per_cpu[1]) == mon.path_dataplane("ingress").maps["T_PERCPU_ARRAY"].ncpus
        assert sum(per_cpu[1]) == sum(sizes) + 30


def test_empty_on_read(hosts):
    a, b = hosts
    empty = {"extraction-options": {"empty-on-read": True}}
    cfg = {"ingress-path": path_config(ALL_TYPES, ("hash", "T_HASH", empty), ("array", "T_ARRAY", empty),
                                       ("percpu", "T_PERCPU_HASH", empty), ("kept", "T_LRU_HASH"))}
    with Dynmon("empty", cfg) as mon:
        mon.attach("eth0", netns=b.netns)
        exchange(a, b, 4, port=PORT)
        first = {m["name"]: m["value"] for m in mon.metrics("ingress")}
        assert first == {"hash": [{"key": PORT, "value": 4}], "array": [0, 4],
                         "percpu": [{"key": PORT, "value": 4}], "kept": [{"key": PORT, "value": 8}]}
        exchange(a, b, 3, port=PORT)
        second = {m["name"]: m["value"] for m in mon.metrics("ingress")}
        assert second == {"hash": [{"key": PORT, "value": 3}], "array": [0, 3],
                          "percpu": [{"key": PORT, "value": 3}], "kept": [{"key": PORT, "value": 14}]}
        assert mon.metrics("ingress", "hash")["value"] == []
        assert mon.metrics("ingress", "array")["value"] == [0, 0]


@pytest.mark.parametrize("mode", ["xdp_drv", "xdp_skb"])
def test_xdp_modes_run_ingress_on_xdp_and_egress_on_tc(quiet_hosts, mode):
    a, b = quiet_hosts
    code = example("packet_counter")["ingress-path"]["code"]
    cfg = {"ingress-path": path_config(code, ("received", "PKT_COUNTER")),
           "egress-path": path_config(code.replace("PKT_COUNTER", "SENT"), ("sent", "SENT"))}
    with Dynmon("xdp", cfg) as mon:
        mon.attach("eth0", mode=mode, netns=b.netns)
        ingress = mon.path_dataplane("ingress")
        assert ingress.hook == "xdp" and ingress.program.type == "xdp"
        expected_slot = "drv" if mode == "xdp_drv" else "skb"
        assert xdp_programs("eth0", netns=b.netns)[expected_slot] == ingress.program.id
        assert tc_programs("eth0", "egress", netns=b.netns) == [mon.path_dataplane("egress").program.id]
        exchange(a, b, 11)
        exchange(b, a, 3)
        assert mon.metrics("ingress", "received")["value"] == [11]
        assert mon.metrics("egress", "sent")["value"] == [3]
    assert not any(xdp_programs("eth0", netns=b.netns).values()) and tc_programs("eth0", "egress", netns=b.netns) == []


def test_switching_to_xdp_keeps_the_counts(quiet_hosts):
    a, b = quiet_hosts
    with Dynmon("switch", example("packet_counter")) as mon:
        mon.attach("eth0", netns=b.netns)
        exchange(a, b, 5)
        mon.detach()
        assert tc_programs("eth0", "ingress", netns=b.netns) == []
        mon.attach("eth0", mode="xdp_drv", netns=b.netns)  # recompiled for XDP, same maps
        exchange(a, b, 6)
        assert mon.metrics("ingress", "packets_total")["value"] == [11]


def test_libbpf_code_without_xdp_program_cannot_use_xdp(hosts):
    _, b = hosts
    code = LIBBPF_PORTS.replace('SEC("xdp")', "static __attribute__((unused))")
    with Dynmon("tc-only", {"ingress-path": path_config(code)}) as mon:
        from pynetmon.errors import ConfigError
        with pytest.raises(ConfigError, match=r'no SEC\("xdp"\) program to attach on the XDP hook'):
            mon.attach("eth0", mode="xdp_drv", netns=b.netns)
        assert mon.attachment is None
        mon.attach("eth0", netns=b.netns)  # TC still works
        assert tc_programs("eth0", "ingress", netns=b.netns) == [mon.path_dataplane("ingress").program.id]


def test_precompiled_objects(hosts, tmp_path):
    a, b = hosts
    image = compile_c(LIBBPF_PORTS + 'char LICENSE[] SEC("license") = "GPL";\n')
    path = tmp_path / "ports.bpf.o"
    path.write_bytes(image)
    with Dynmon("objects") as mon:
        mon.set_dataplane_config({"ingress-path": {"name": "file", "object": str(path),
                                                   "metric-configs": [{"name": "p", "map-name": "udp_ports"}]}})
        mon.attach("eth0", netns=b.netns)
        exchange(a, b, 3)
        assert mon.metrics("ingress", "p")["value"][0]["value"] == 3
        # The Python API also takes the object's bytes.
        from pynetmon.dynmon.config import DataplaneConfig, MetricConfig
        mon.set_dataplane_config(DataplaneConfig(ingress_path=PathConfig(
            code=image, metric_configs=[MetricConfig(name="p", map_name="udp_ports")])))
        exchange(a, b, 2)
        assert mon.metrics("ingress", "p")["value"][0]["value"] == 2


def test_detach_and_close_remove_only_our_programs(hosts):
    _, b = hosts
    mon = Dynmon("tidy", example("packet_counter"))
    mon.attach("eth0", netns=b.netns)
    with pytest.raises(Exception, match="already attached"):
        mon.attach("eth0", netns=b.netns)
    prog_id = mon.path_dataplane("ingress").program.id
    assert tc_programs("eth0", "ingress", netns=b.netns) == [prog_id]
    mon.close()
    mon.close()
    assert tc_programs("eth0", "ingress", netns=b.netns) == []

"""Recorder: samples of a real counter map under known traffic between test hosts; counter arithmetic."""
from __future__ import annotations

import time

import pytest
from hypothesis import given
from hypothesis import strategies as st

import pynetmon
from pynetmon.recorder import counter_deltas, flatten_sample
from pynetmon.toolchain import compile_c

PORT = 9999
# Counts the UDP datagrams to PORT only, so that nothing else on the link (IPv6 neighbour discovery...)
# changes the numbers: every count is known in advance.
UDP_COUNTER = r"""
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/udp.h>
#include <linux/pkt_cls.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

struct { __uint(type, BPF_MAP_TYPE_ARRAY); __uint(max_entries, 1); __type(key, __u32);
         __type(value, __u64); } datagrams SEC(".maps");

SEC("tc") int count_udp(struct __sk_buff *skb)
{
    void *data = (void *)(long)skb->data, *end = (void *)(long)skb->data_end;
    struct ethhdr *eth = data;
    struct iphdr *ip = (void *)(eth + 1);
    struct udphdr *udp = (void *)(ip + 1);
    if ((void *)(udp + 1) > end || eth->h_proto != bpf_htons(ETH_P_IP) || ip->protocol != IPPROTO_UDP
        || ip->ihl != 5 || udp->dest != bpf_htons(PORT))
        return TC_ACT_OK;
    __u32 zero = 0;
    __u64 *n = bpf_map_lookup_elem(&datagrams, &zero);
    if (n)
        __sync_fetch_and_add(n, 1);
    return TC_ACT_OK;
}
char LICENSE[] SEC("license") = "GPL";
"""


@pytest.fixture
def counted(hosts):
    """(hosts, datagrams map): UDP datagrams to PORT arriving at host b are counted."""
    with pynetmon.BPFObject(compile_c(UDP_COUNTER, filename="udp_counter.bpf.c", cflags=(f"-DPORT={PORT}",)),
                            name="udp_counter") as obj:
        obj.load()
        with pynetmon.attach_tc(obj.programs["count_udp"], "eth0", "ingress", netns=hosts.b.netns):
            yield hosts, obj.maps["datagrams"]


def test_deltas_and_rates_match_the_traffic_sent_across_a_reset(counted):
    hosts, m = counted
    rec = pynetmon.Recorder(m, interval=60, start=False)  # samples taken by hand: exact boundaries
    rec.sample()
    assert hosts.a.send_udp(hosts.b.ip, PORT, 100) == 100
    time.sleep(0.05)
    rec.sample()
    hosts.a.send_udp(hosts.b.ip, PORT, 50)
    time.sleep(0.05)
    rec.sample()
    m.clear()  # the counter restarts from zero: a reset, not a negative rate
    hosts.a.send_udp(hosts.b.ip, PORT, 70)
    time.sleep(0.05)
    rec.sample()
    deltas = rec.deltas(["0"])
    assert deltas["0"].tolist() == [100, 50, 70]
    rates = rec.rates(["0"])
    assert (rates["0"] * deltas["interval"]).round(6).tolist() == [100, 50, 70]
    assert list(rec.frame()["0"]) == [0, 100, 150, 70]


def test_background_recording_covers_all_traffic(counted):
    hosts, m = counted
    with pynetmon.Recorder(m, interval=0.05) as rec:
        for _ in range(4):
            hosts.a.send_udp(hosts.b.ip, PORT, 25)
            time.sleep(0.06)
    frame = rec.frame()
    assert len(frame) >= 3  # the first sample, at least one tick, the last sample at stop
    assert frame["0"].iloc[0] == 0 and frame["0"].iloc[-1] == 100
    assert rec.deltas()["0"].sum() == 100
    assert not rec.running and rec.errors == 0
    assert "Recorder (stopped" in rec._repr_html_()


def test_max_rows_bounds_memory_and_errors_do_not_stop_it():
    values = iter(range(1000))

    def source():
        v = next(values)
        if v == 3:
            raise RuntimeError("source failed once")
        return {"ingress": {"packets_total": v}}

    rec = pynetmon.Recorder(source, interval=10, max_rows=5, start=False)
    for _ in range(10):
        rec.sample()
    assert len(rec) == 5 and rec.errors == 1 and "failed once" in str(rec.last_error)
    assert rec.frame()["ingress.packets_total"].tolist() == [5, 6, 7, 8, 9]


def test_bad_source_and_interval_are_named():
    with pytest.raises(TypeError, match="a Recorder samples a Map"):
        pynetmon.Recorder(42)
    with pytest.raises(ValueError, match="interval must be a positive number"):
        pynetmon.Recorder(lambda: 1, interval=0)
    rec = pynetmon.Recorder(lambda: {"a": 1}, start=False)
    rec.sample()
    with pytest.raises(KeyError, match=r"no recorded column\(s\) \['b'\]"):
        rec.rates(["b"])


def test_flatten_sample_shapes():
    dynmon = {"ingress-metrics": [{"name": "packets_total", "value": [7], "timestamp": 1},
                                  {"name": "per_cpu", "value": [1, 2], "timestamp": 1}], "egress-metrics": []}
    assert flatten_sample(dynmon) == {"ingress-metrics.packets_total": 7, "ingress-metrics.per_cpu[0]": 1,
                                      "ingress-metrics.per_cpu[1]": 2}
    snapshot = {"rtt_us": {"buckets": [{"le": 1, "count": 2}, {"le": "+Inf", "count": 5}], "count": 5, "sum": 9},
                "up": True, "name": "eth0", "flows": {"tcp": 3}}
    assert flatten_sample(snapshot) == {"rtt_us.count": 5, "rtt_us.sum": 9, "up": 1, "flows.tcp": 3}
    assert flatten_sample(12.5) == {"value": 12.5}


def test_counter_deltas_wrap_and_reset():
    assert counter_deltas([None, 5, 8]) == [None, None, 3]
    assert counter_deltas([(1 << 32) - 10, 5]) == [None, 15]            # a 32-bit counter went round
    assert counter_deltas([(1 << 64) - 1, 4]) == [None, 5]              # a 64-bit one
    assert counter_deltas([1000, 7]) == [None, 7]                       # restarted from zero


@given(st.lists(st.integers(0, 1000), min_size=1, max_size=30), st.integers(0, (1 << 32) - 1))
def test_counter_deltas_sum_to_the_increments_of_a_wrapping_u32(increments, start):
    readings, value = [start], start
    for inc in increments:
        value = (value + inc) % (1 << 32)
        readings.append(value)
    deltas = counter_deltas(readings, wrap_bits=(32,))
    # A wrap is told from a reset by the previous reading being in the upper half: true whenever an
    # increment below 2**31 crosses the top.
    assert deltas[1:] == increments


def test_monitor_rich_display_and_recorder_source(hosts):
    """A ready monitor (flows) shows its snapshot as a table, and a Recorder samples its snapshot()."""
    import pynetmon.monitors
    with pynetmon.monitors.open("flows", interface="eth0", netns=hosts.b.netns) as monitor:
        with pynetmon.Recorder(monitor, interval=10) as rec:  # samples at start and at stop
            hosts.a.send_udp(hosts.b.ip, PORT, 20)
            time.sleep(0.05)
        page = monitor._repr_html_()
        assert page.startswith("<table") and "flows" in page and "self.run_count" in page
    assert len(rec) == 2 and rec.errors == 0
    assert "self.run_count" in rec.frame().columns
    assert "not started" in pynetmon.monitors.create("flows", "eth0", hosts.b.netns, {})._repr_html_()

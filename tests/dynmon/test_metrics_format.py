"""Metric formats: Polycube's JSON shape and OpenMetrics (parsed back with prometheus_client, linted with
promtool), from real maps filled by real packets, plus the pure formatting rules."""
from __future__ import annotations

import math
import shutil
import subprocess

import pytest
from prometheus_client.openmetrics.parser import text_string_to_metric_families

from pynetmon.dynmon import Dynmon, MapEntries
from pynetmon.dynmon.config import MetricConfig
from pynetmon.dynmon.metrics import json_value
from pynetmon.dynmon.openmetrics import exposition, families
from pynetmon.testing import IN_CI

from .helpers import example, exchange, path_config

FLOWS = r"""
struct flow_key {
    pynetmon_ipv4_t saddr;
    pynetmon_ipv4_t daddr;
    __be16 dport;
    u8 proto;
    u8 __pad;
};
struct flow_stats {
    u64 packets;
    u64 bytes;
};
struct size_hist {
    u64 slots[8];
    u64 sum;
};
BPF_HASH(FLOWS, struct flow_key, struct flow_stats, 64);
BPF_ARRAY(SIZES, u64, 8);
BPF_ARRAY(SIZES_WITH_SUM, struct size_hist, 1);
BPF_PERCPU_ARRAY(LAST_LEN, u64, 1);

static __always_inline u32 slot_of(u32 v) {
    u32 slot = 0;
    #pragma unroll
    for (int i = 0; i < 7; i++)
        if (v >> i)
            slot = i + 1;
    return slot;
}

static __always_inline int handle_rx(struct CTXTYPE *ctx, struct pkt_metadata *md) {
    void *data = (void *)(long)ctx->data, *end = (void *)(long)ctx->data_end;
    struct ethhdr *eth = data;
    struct iphdr *ip = (void *)(eth + 1);
    struct udphdr *udp = (void *)(ip + 1);
    if ((void *)(udp + 1) > end || eth->h_proto != htons(ETH_P_IP) || ip->protocol != IPPROTO_UDP)
        return RX_OK;
    struct flow_key key = {.saddr = ip->saddr, .daddr = ip->daddr, .dport = udp->dest, .proto = ip->protocol};
    struct flow_stats zero = {}, *stats = FLOWS.lookup_or_try_init(&key, &zero);
    if (stats) {
        __sync_fetch_and_add(&stats->packets, 1);
        __sync_fetch_and_add(&stats->bytes, md->packet_len);
    }
    u32 payload = ntohs(udp->len) - sizeof(*udp);
    SIZES.increment(slot_of(payload));
    struct size_hist *h = SIZES_WITH_SUM.lookup(&(int){0});
    if (h) {
        u32 s = slot_of(payload);
        if (s < 8)
            __sync_fetch_and_add(&h->slots[s], 1);
        __sync_fetch_and_add(&h->sum, payload);
    }
    u64 *last = LAST_LEN.lookup(&(int){0});
    if (last)
        *last = payload;
    return RX_OK;
}
"""


def flows_config() -> dict:
    meta = lambda type_, **kw: {"open-metrics-metadata": {"help": f"a {type_}", "type": type_, **kw}}
    return {"ingress-path": path_config(
        FLOWS,
        ("flows", "FLOWS", meta("counter", labels=[{"name": "probe", "value": "test"}])),
        ("payload_bytes", "SIZES", meta("Histogram")),
        ("payload_sized", "SIZES_WITH_SUM", meta("histogram", buckets=[0, 1, 3, 7, 15, 31, 63])),
        ("last_payload", "LAST_LEN", meta("GAUGE")),
        ("json_only", "FLOWS"),
    )}


@pytest.fixture
def flows(hosts):
    a, b = hosts
    with Dynmon("flows", flows_config()) as mon:
        mon.attach("eth0", netns=b.netns)
        exchange(a, b, 3, port=5555, payload=b"x" * 10)   # slot 4 (8..15)
        exchange(a, b, 2, port=6666, payload=b"y" * 2)    # slot 2 (2..3)
        yield a, b, mon


def test_json_shape_with_struct_keys_and_addresses(flows):
    a, b, mon = flows
    value = mon.metrics("ingress", "json_only")["value"]
    by_port = {e["key"]["dport"]: e for e in value}
    assert set(by_port) == {5555, 6666}
    entry = by_port[5555]
    assert entry["key"] == {"saddr": a.ip, "daddr": b.ip, "dport": 5555, "proto": 17, "__pad": 0}
    assert entry["value"]["packets"] == 3 and entry["value"]["bytes"] == 3 * (14 + 20 + 8 + 10)
    assert mon.metrics("ingress", "payload_bytes")["value"] == [0, 0, 2, 0, 3, 0, 0, 0]
    assert mon.metrics("ingress", "payload_sized")["value"] == [{"slots": [0, 0, 2, 0, 3, 0, 0, 0], "sum": 34}]
    assert mon.metrics("ingress", "last_payload")["value"] in ([2], [10])


def test_openmetrics_parses_back(flows):
    a, b, mon = flows
    text = mon.open_metrics()
    assert text.endswith("# EOF\n")
    fams = {f.name: f for f in text_string_to_metric_families(text)}  # strict OpenMetrics parser
    assert set(fams) == {"flows_packets", "flows_bytes", "payload_bytes", "payload_sized", "last_payload"}
    assert fams["flows_packets"].type == "counter" and fams["flows_packets"].documentation == "a counter"
    packets = {s.labels["dport"]: s.value for s in fams["flows_packets"].samples if s.name.endswith("_total")}
    assert packets == {"5555": 3, "6666": 2}
    sample = next(s for s in fams["flows_packets"].samples if s.labels["dport"] == "5555")
    assert sample.labels == {"probe": "test", "saddr": a.ip, "daddr": b.ip, "dport": "5555", "proto": "17",
                             "pad": "0"}
    hist = fams["payload_bytes"]
    assert hist.type == "histogram"
    buckets = [(s.labels["le"], s.value) for s in hist.samples if s.name == "payload_bytes_bucket"]
    assert buckets == [("0.0", 0), ("1.0", 0), ("3.0", 2), ("7.0", 2), ("15.0", 5), ("31.0", 5), ("63.0", 5),
                       ("+Inf", 5)]
    sized = {s.name: s.value for s in fams["payload_sized"].samples if "le" not in s.labels}
    assert sized == {"payload_sized_count": 5, "payload_sized_sum": 34}
    assert fams["last_payload"].type == "gauge"


def test_promtool_accepts_the_exposition(flows):
    if not shutil.which("promtool"):
        # `make test` installs the Debian package prometheus: in CI its absence is a broken set-up.
        if IN_CI:
            pytest.fail("promtool (Debian package prometheus) is not installed")
        pytest.skip("promtool (Debian package prometheus) not installed")
    _, _, mon = flows
    for fmt in ("prometheus", "openmetrics"):
        text = mon.open_metrics(fmt)
        proc = subprocess.run(["promtool", "check", "metrics"], input=text, capture_output=True, text=True,
                              check=False)
        if fmt == "prometheus":
            assert proc.returncode == 0, proc.stdout + proc.stderr
        else:
            # promtool parses the Prometheus text format only: OpenMetrics' counter naming (family "x",
            # sample "x_total") is a lint finding there, never a parse error.
            assert proc.returncode in (0, 3), proc.stdout + proc.stderr
            assert all("no help text" in line for line in (proc.stdout + proc.stderr).splitlines()
                       if line.strip()), proc.stdout + proc.stderr


def test_published_example_in_openmetrics(quiet_hosts):
    a, b = quiet_hosts
    with Dynmon("ntp", example("ntp_packets_counter")) as mon:
        mon.attach("eth0", netns=b.netns)
        exchange(a, b, 4, port=123)
        (fam,) = text_string_to_metric_families(mon.open_metrics())
        assert fam.name == "ntp_packets" and fam.type == "counter"
        (sample,) = fam.samples
        assert sample.name == "ntp_packets_total" and sample.value == 4
        assert sample.labels == {"IP_PROTO": "UDP", "L4": "NTP"}


# ---- pure formatting rules ----------------------------------------------------------------------------

def metric(type_: str, **meta) -> MetricConfig:
    return MetricConfig.model_validate({"name": "m", "map-name": "M",
                                        "open-metrics-metadata": {"help": "h", "type": type_, **meta}})


def test_per_cpu_values_are_summed_field_by_field():
    entries = MapEntries("M", "percpu_hash", "hash", [1, 2], [[{"a": 1, "b": [1, 2]}, {"a": 2, "b": [3, 4]}],
                                                             [{"a": 0, "b": [0, 0]}, {"a": 5, "b": [0, 1]}]],
                         per_cpu=True)
    assert json_value(entries) == [{"key": 1, "value": {"a": 3, "b": [4, 6]}},
                                   {"key": 2, "value": {"a": 5, "b": [0, 1]}}]
    assert json_value(entries, per_cpu=True)[0]["value"] == [{"a": 1, "b": [1, 2]}, {"a": 2, "b": [3, 4]}]


def test_char_arrays_become_text_and_other_bytes_hex():
    entries = MapEntries("M", "hash", "hash", [b"curl\0\0\0\0", b"\x01\x02"], [1, 2])
    assert [e["key"] for e in json_value(entries)] == ["curl", "0x0102"]


def test_summary_and_array_index_labels():
    summary = families(metric("summary"), MapEntries("M", "hash", "hash", [{"cpu": 0}], [{"count": 4, "sum": 10}]))
    text = exposition(summary)
    assert 'm_count{cpu="0"} 4.0' in text and 'm_sum{cpu="0"} 10.0' in text
    gauges = families(metric("gauge"), MapEntries("M", "array", "array", [], [5, 6]))
    samples = [(s.labels, s.value) for s in gauges[0].samples]
    assert samples == [({"index": "0"}, 5), ({"index": "1"}, 6)]


def test_empty_maps_still_announce_their_metric():
    (fam,) = families(metric("counter"), MapEntries("M", "hash", "hash", [], []))
    assert fam.name == "m" and fam.samples == []
    (hist,) = families(metric("histogram"), MapEntries("M", "hash", "hash", [], []))
    assert hist.type == "histogram"


def test_histogram_defaults_to_log2_slots():
    (hist,) = families(metric("histogram"), MapEntries("M", "array", "array", [], [1, 1, 0, 2]))
    assert [(s.labels["le"], s.value) for s in hist.samples] == [("0.0", 1), ("1.0", 2), ("3.0", 2), ("+Inf", 4)]
    assert math.isinf(float(hist.samples[-1].labels["le"]))

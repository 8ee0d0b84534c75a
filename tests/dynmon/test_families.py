"""`Dynmon.families()`: the public source of the OpenMetrics families (what `open_metrics()` renders and
the daemon's /metrics collects), one read per path (one swap-on-read flip), and reuse of unchanged
families; plus the rendering rule that picks prometheus_client's faster escaping branch."""
from __future__ import annotations

import pytest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.exposition import generate_latest as generate_text
from prometheus_client.openmetrics.exposition import generate_latest as generate_openmetrics

from pynetmon.dynmon import Dynmon
from pynetmon.dynmon.openmetrics import exposition, render

from .helpers import exchange, path_config

# Packets by UDP destination port (a hash), twice: one map swap-on-read, the other too (so one path has
# two swap-on-read maps), and a plain array counting every IPv4 packet.
BY_PORT = r"""
BPF_HASH(BY_PORT, u16, u64, 64);
BPF_HASH(BY_PORT_COPY, u16, u64, 64);
BPF_ARRAY(IPV4, u64, 1);
static __always_inline int handle_rx(struct CTXTYPE *ctx, struct pkt_metadata *md) {
    void *data = (void *)(long)ctx->data, *end = (void *)(long)ctx->data_end;
    struct ethhdr *eth = data;
    struct iphdr *ip = (void *)(eth + 1);
    struct udphdr *udp = (void *)(ip + 1);
    if ((void *)(udp + 1) > end || eth->h_proto != htons(ETH_P_IP) || ip->protocol != IPPROTO_UDP)
        return RX_OK;
    u16 port = ntohs(udp->dest);
    BY_PORT.increment(port);
    BY_PORT_COPY.increment(port);
    IPV4.increment(0);
    return RX_OK;
}
"""


def _counter(name: str, map_name: str, *, swap: bool = False, empty: bool = False, labels=()) -> tuple:
    return (name, map_name, {
        "extraction-options": {"swap-on-read": swap, "empty-on-read": empty},
        "open-metrics-metadata": {"help": name, "type": "counter",
                                  "labels": [{"name": n, "value": v} for n, v in labels]}})


def _values(fams, name: str) -> dict:
    (fam,) = [f for f in fams if f.name == name]
    return {s.labels.get("key"): s.value for s in fam.samples}


def test_families_carry_the_callers_labels_and_are_reused_while_unchanged(quiet_hosts):
    a, b = quiet_hosts
    config = {"ingress-path": path_config(BY_PORT, _counter("udp_by_port_total", "BY_PORT",
                                                            labels=[("monitor", "mine"), ("probe", "p")]))}
    with Dynmon("fams", config) as mon:
        mon.attach("eth0", netns=b.netns)
        exchange(a, b, 3, port=5555)
        first = mon.families(labels={"monitor": "m1"})
        (fam,) = first
        assert fam.name == "udp_by_port" and fam.type == "counter"
        (sample,) = fam.samples
        # The caller's label wins; the configured label of the same name is kept as exported_monitor.
        assert sample.name == "udp_by_port_total" and sample.value == 3
        assert sample.labels == {"monitor": "m1", "exported_monitor": "mine", "probe": "p", "key": "5555"}
        again = mon.families(labels={"monitor": "m1"})
        assert again[0] is fam  # nothing counted since: the same family object
        assert mon.families()[0] is not fam  # other labels: other families
        exchange(a, b, 2, port=5555)
        changed = mon.families(labels={"monitor": "m1"})
        assert changed[0] is not fam and _values(changed, "udp_by_port") == {"5555": 5}
        assert _values(first, "udp_by_port") == {"5555": 3}  # what a caller kept is not changed
        text = mon.open_metrics()
        assert text == exposition(mon.families())
        assert 'udp_by_port_total{key="5555",monitor="mine",probe="p"} 5.0' in text  # no clash without labels
        assert mon.open_metrics() is text  # unchanged maps: the text of the previous call
        exchange(a, b, 1, port=5555)
        assert 'udp_by_port_total{key="5555",monitor="mine",probe="p"} 6.0' in mon.open_metrics()


def test_a_path_is_read_with_one_flip(quiet_hosts):
    """Two swap-on-read maps of one path: open_metrics() and metrics() flip once per read, and the two
    maps are one snapshot (they count the same packets)."""
    a, b = quiet_hosts
    config = {"ingress-path": path_config(BY_PORT,
                                          _counter("by_port_total", "BY_PORT", swap=True, empty=True),
                                          _counter("copy_total", "BY_PORT_COPY", swap=True),
                                          _counter("ipv4_total", "IPV4"))}
    with Dynmon("flip", config) as mon:
        mon.attach("eth0", netns=b.netns)
        swap = mon.path_dataplane("ingress").swap
        exchange(a, b, 4, port=5555)
        flips = swap.flips
        fams = mon.families()
        assert swap.flips == flips + 1
        assert _values(fams, "by_port") == _values(fams, "copy") == {"5555": 4}
        exchange(a, b, 2, port=6666)
        metrics = mon.metrics()
        assert swap.flips == flips + 2
        by_name = {m["name"]: m["value"] for m in metrics["ingress-metrics"]}
        assert by_name["by_port_total"] == [{"key": 6666, "value": 2}]  # emptied by the previous read
        assert sorted((e["key"], e["value"]) for e in by_name["copy_total"]) == [(5555, 4), (6666, 2)]
        assert by_name["ipv4_total"] == [6]
        assert swap.missed() == 0


def test_a_map_read_by_two_metrics_is_read_once(quiet_hosts):
    """Both metrics see the same snapshot; the map is emptied because one of them is empty-on-read."""
    a, b = quiet_hosts
    config = {"ingress-path": path_config(BY_PORT, _counter("kept_total", "BY_PORT"),
                                          _counter("emptied_total", "BY_PORT", empty=True))}
    with Dynmon("twice", config) as mon:
        mon.attach("eth0", netns=b.netns)
        exchange(a, b, 3, port=5555)
        first = {m["name"]: m["value"] for m in mon.metrics("ingress")}
        assert first == {"kept_total": [{"key": 5555, "value": 3}], "emptied_total": [{"key": 5555, "value": 3}]}
        assert [(m["name"], m["value"]) for m in mon.metrics("ingress")] == [("kept_total", []),
                                                                             ("emptied_total", [])]


# ---- rendering (pure) ---------------------------------------------------------------------------------

class _Registry:
    def __init__(self, fams):
        self.fams = fams

    def collect(self):
        return self.fams


def _fams(metric_name: str, label_name: str):
    counter = CounterMetricFamily(metric_name, "help \\ with \"quotes\"\nand a newline", labels=[label_name, "b"])
    counter.add_metric(['va"l\\ue\n', "x"], 3)
    gauge = GaugeMetricFamily(metric_name + "_g", "g", labels=[label_name])
    gauge.add_metric(["1"], 1.5)
    return [counter, gauge]


@pytest.mark.parametrize("metric_name,label_name", [("plain_name", "key"), ("with:colon", "key"),
                                                    ("plain_name", "__reserved")])
def test_render_writes_what_prometheus_client_writes(metric_name, label_name):
    """render() may use prometheus_client's allow-utf-8 branch only where it writes the same bytes as the
    default escaping: names with ':' (the OpenMetrics writer rewrites them in samples) or reserved label
    names must still come out as the default escaping writes them."""
    fams = _fams(metric_name, label_name)
    assert render(fams, "openmetrics") == generate_openmetrics(_Registry(fams))
    assert render(fams, "prometheus") == generate_text(_Registry(fams))


def test_render_rejects_unknown_formats():
    with pytest.raises(ValueError, match="format must be one of openmetrics, prometheus, not 'json'"):
        render([], "json")

"""Dynmon behaviour Polycube users rely on (issue 15, "Dynmon semantics"), through the library: one metric
name in both paths, attaching to an interface that does not exist. Real programs and datagrams, exact
counts; the same through `pynetmon serve` in tests/service/test_dynmon_semantics.py."""
from __future__ import annotations

import pytest

from pynetmon import ConfigError, InterfaceNotFoundError
from pynetmon.dynmon import Dynmon

from .helpers import example, exchange, path_config

COUNTER = example("packet_counter")["ingress-path"]["code"]


def _both_paths(egress_type: str = "counter") -> dict:
    """packet_counter on both paths, one metric name (Polycube: two metrics, one per path)."""
    def path(kind: str) -> dict:
        return path_config(COUNTER, ("packets_total", "PKT_COUNTER", {
            "open-metrics-metadata": {"help": "Packets", "type": kind, "labels": [{"name": "probe", "value": "p"}]}}))
    return {"ingress-path": path("counter"), "egress-path": path(egress_type)}


def test_one_metric_name_in_both_paths(quiet_hosts):
    a, b = quiet_hosts
    with Dynmon("names", _both_paths()) as mon:
        mon.attach("eth0", netns=a.netns)
        exchange(a, b, 6)   # a's egress
        exchange(b, a, 2)   # a's ingress
        metrics = mon.metrics()
        assert [m["name"] for m in metrics["ingress-metrics"]] == ["packets_total"]
        assert metrics["ingress-metrics"][0]["value"] == [2]  # two maps: a plain BPF_ARRAY per path
        assert metrics["egress-metrics"][0]["value"] == [6]
        assert mon.metrics("egress", "packets_total")["value"] == [6]
        text = mon.open_metrics()
        # One family, its samples told apart by direction (two families of one name are not OpenMetrics).
        assert text.count("# TYPE packets counter") == 1
        assert 'packets_total{direction="ingress",probe="p"} 2.0' in text
        assert 'packets_total{direction="egress",probe="p"} 6.0' in text
        prometheus = mon.open_metrics("prometheus")
        assert prometheus.count("# TYPE packets_total counter") == 1
        assert 'packets_total{direction="egress",probe="p"} 6.0' in prometheus


def test_one_name_with_two_types_is_refused(bpf):
    with pytest.raises(ConfigError) as info:
        Dynmon("types", _both_paths("gauge"))
    (where, reason), = info.value.problems
    assert where == "egress-path.metric-configs[0].open-metrics-metadata.type"
    assert "is a counter on the ingress path and a gauge here" in reason


def test_a_name_in_one_path_has_no_direction_label(bpf):
    with Dynmon("one", example("packet_counter")) as mon:
        assert "direction" not in mon.open_metrics()


@pytest.mark.parametrize("with_dataplane", [False, True])
def test_attaching_to_a_missing_interface_names_it(hosts, with_dataplane):
    a, _ = hosts
    with Dynmon("missing", example("packet_counter") if with_dataplane else None) as mon:
        with pytest.raises(InterfaceNotFoundError, match="no network interface named 'nosuch0'"):
            mon.attach("nosuch0", netns=a.netns)
        assert mon.attachment is None
        mon.attach("eth0", netns=a.netns)  # nothing half-done was left behind
        assert mon.attachment["ifname"] == "eth0"

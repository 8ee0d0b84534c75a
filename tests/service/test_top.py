"""`pynetmon top`: the pure parts (percentiles, rates) and one frame against a real daemon."""
from __future__ import annotations

import math

from pynetmon.cli.top import Reading, histograms, parse, percentile, rates

from .dataplanes import UDP_PORT, counter_config


def test_percentile_interpolates_like_histogram_quantile():
    buckets = [(1.0, 10), (2.0, 20), (4.0, 40), (math.inf, 40)]
    assert percentile(buckets, 0.5) == 2.0
    assert percentile(buckets, 0.25) == 1.0
    assert percentile(buckets, 0.75) == 3.0
    assert percentile(buckets, 1.0) == 4.0
    assert math.isnan(percentile([(1.0, 0), (math.inf, 0)], 0.5))


def test_rates_and_histograms_from_exposition():
    text1 = ('# TYPE pkts_total counter\npkts_total{monitor="m",key="1"} 10\n'
             '# TYPE lat histogram\nlat_bucket{le="1"} 0\nlat_bucket{le="2"} 5\nlat_bucket{le="+Inf"} 5\n'
             'lat_count 5\nlat_sum 7\n')
    text2 = text1.replace("} 10", "} 30").replace('le="1"} 0', 'le="1"} 5').replace('"2"} 5', '"2"} 10') \
        .replace('"+Inf"} 5', '"+Inf"} 10')
    first, second = parse(text1, 100.0), parse(text2, 102.0)
    [r] = rates(first, second, "pkts")
    assert (r.value, r.per_second, r.labels) == (30, 10.0, {"key": "1", "monitor": "m"})
    [(family, labels, stats)] = histograms(second, first)
    assert labels == {}
    assert family == "lat" and stats["count"] == 5 and stats["p50"] == 0.5  # the last interval: all in le=1
    assert isinstance(Reading(0.0).samples, dict)


def test_top_once_shows_counters_and_talkers(host_daemon):
    d, a, b = host_daemon
    d.client.post("/polycube/v1/dynmon/topmon", json={"dataplane-config": counter_config()}).raise_for_status()
    d.client.post("/polycube/v1/attach", json={"cube": "topmon", "port": "eth0"}).raise_for_status()
    a.send_udp(b.ip, UDP_PORT, 60)
    out = d.cli("top", "--once", "-i", "0.3").stdout
    assert "udp_packets" in out and "topmon" in out and "60" in out, out
    assert "Top talkers: flows_packets" in out, out

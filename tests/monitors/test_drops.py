"""drops: UDP to a closed port gives an exact NO_SOCKET count in the receiver's namespace and none in
the sender's (the filter by namespace works in the kernel); stacks name the dropping function; the
CLI's --json and the daemon's REST and /metrics."""
from __future__ import annotations

import pytest
from prometheus_client.openmetrics.parser import text_string_to_metric_families
from prometheus_client.parser import text_string_to_metric_families as prometheus_families
from service.daemon import Daemon

from pynetmon import monitors
from pynetmon.monitors.drops import drop_reasons, reason_name

from .helpers import finish_json, quiet, send_udp, settle, start_cli, wait_started

CLOSED = 5999


def _no_socket(snap: dict) -> list[dict]:
    return [r for r in snap["drops"] if r["reason"] == "NO_SOCKET"]


def test_reason_names_come_from_the_kernel(bpf):
    names = drop_reasons()
    assert "NO_SOCKET" in names.values() and "NOT_SPECIFIED" in names.values()
    value = next(v for v, n in names.items() if n == "NO_SOCKET")
    assert reason_name(value) == "NO_SOCKET"
    assert reason_name(0x30001) == "SUBSYS_3:1"


def test_udp_to_a_closed_port_counts_no_socket_exactly(hosts):
    a, b = hosts
    quiet(a, b)
    with monitors.open("drops", netns=b.netns) as mb, monitors.open("drops", netns=a.netns, stacks=True) as ma, \
            monitors.open("drops", netns=b.netns, stacks=True) as mstack:
        send_udp(a, b.ip, CLOSED, 17, sport=40101)
        settle()
        snap_b, snap_a, snap_stack = mb.snapshot(), ma.snapshot(), mstack.snapshot()
        text = mb.open_metrics()
    assert _no_socket(snap_b) == [{"reason": "NO_SOCKET", "interface": "eth0", "protocol": "ipv4", "count": 17}]
    assert snap_b["total"] == sum(r["count"] for r in snap_b["drops"]) >= 17
    assert _no_socket(snap_a) == []  # the drops happened in b's namespace
    [row] = _no_socket(snap_stack)
    assert row["count"] == 17 and row["location"].startswith("__udp4_lib_rcv+")
    fams = {f.name: f for f in text_string_to_metric_families(text)}
    [sample] = [s for s in fams["drop"].samples if s.labels["reason"] == "NO_SOCKET"]
    assert sample.value == 17 and sample.labels == {"reason": "NO_SOCKET", "interface": "eth0", "protocol": "ipv4"}
    assert snap_b["self"]["programs"]["drops_kfree_skb"]["run_count"] >= 17


def test_bad_netns_is_named(bpf):
    with pytest.raises(Exception, match="no network namespace 'no-such-netns'"):
        monitors.open("drops", netns="no-such-netns")


def test_cli_json(hosts):
    a, b = hosts
    quiet(a, b)
    proc = start_cli("monitor", "drops", "--netns", b.netns, "--duration", "2", "--json")
    wait_started(proc)
    send_udp(a, b.ip, CLOSED, 5, sport=40102)
    snap = finish_json(proc)
    assert [r["count"] for r in _no_socket(snap)] == [5]


def test_rest(hosts):
    a, b = hosts
    quiet(a, b)
    with Daemon() as d:
        r = d.client.post("/monitors/d1", json={"kind": "drops", "netns": b.netns})
        assert r.status_code == 201, r.text
        bad = d.client.post("/monitors/d2", json={"kind": "drops", "netns": "../etc/passwd"})
        assert bad.status_code == 422 and bad.json()["problems"][0]["path"] == "netns"
        send_udp(a, b.ip, CLOSED, 8, sport=40103)
        settle()
        assert [r["count"] for r in _no_socket(d.client.get("/monitors/d1").json())] == [8]
        fams = {f.name: f for f in prometheus_families(d.client.get("/metrics").text)}
        [sample] = [s for s in fams["drop"].samples if s.labels["reason"] == "NO_SOCKET"]
        assert sample.value == 8
        assert sample.labels == {"monitor": "d1", "reason": "NO_SOCKET", "interface": "eth0", "protocol": "ipv4"}

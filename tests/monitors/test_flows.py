"""flows: exact per-5-tuple packets and bytes between test hosts (IPv4, IPv6, tcx and XDP), overflow with
a small table, aggregation, idle eviction, the CLI's --json and the daemon's REST and /metrics."""
from __future__ import annotations

import socket

import pytest
from prometheus_client.parser import text_string_to_metric_families
from service.daemon import Daemon

from pynetmon import monitors
from pynetmon.errors import ConfigError
from pynetmon.link import tc_programs

from .helpers import V6, finish_json, quiet, send_udp, settle, start_cli, udp_sink, wait_attached

PAYLOAD = 32
V4_FRAME = 14 + 20 + 8 + PAYLOAD
V6_FRAME = 14 + 40 + 8 + PAYLOAD


def _ours(snap: dict, dport: int) -> list[dict]:
    return [f for f in snap["flows"] if f["dport"] == dport or f["sport"] == dport]


@pytest.mark.parametrize("mode", ["tc", "xdp"])
def test_counts_each_5_tuple_exactly(hosts, mode):
    a, b = hosts
    quiet(a, b)
    sink = udp_sink(b, 5001)
    with monitors.open("flows", interface="eth0", netns=b.netns, mode=mode) as m:
        send_udp(a, b.ip, 5001, 70, sport=40001)
        send_udp(a, b.ip, 5001, 30, sport=40002)
        settle()
        snap = m.snapshot()
    sink.close()
    rows = {(f["sport"], f["direction"]): f for f in snap["flows"]}
    assert set(rows) == {(40001, "ingress"), (40002, "ingress")}  # b never answers: nothing egress
    for sport, n in ((40001, 70), (40002, 30)):
        f = rows[(sport, "ingress")]
        assert (f["src"], f["dst"], f["dport"], f["proto"]) == (a.ip, b.ip, 5001, "udp")
        assert (f["packets"], f["bytes"]) == (n, n * V4_FRAME)
        assert 0 < f["first_seen_ns"] <= f["last_seen_ns"] and f["tcp_flags"] == []
    assert snap["overflow"] == 0
    assert snap["self"]["maps_bytes"] > 0
    assert not tc_programs("eth0", "ingress", netns=b.netns)  # closed: nothing left behind


def test_ipv6_and_both_directions(hosts):
    a, b = hosts
    quiet(a, b, ipv6=True)
    sink = udp_sink(a, 5002, socket.AF_INET6)
    with monitors.open("flows", interface="eth0", netns=b.netns) as m:
        send_udp(b, V6[0], 5002, 25, sport=40003)  # b → a: egress at b
        settle()
        snap = m.snapshot()
    sink.close()
    [f] = _ours(snap, 5002)
    assert (f["src"], f["dst"], f["sport"], f["dport"], f["direction"]) == (V6[1], V6[0], 40003, 5002, "egress")
    assert (f["packets"], f["bytes"]) == (25, 25 * V6_FRAME)


def test_tcp_flags_seen(hosts):
    a, b = hosts
    quiet(a, b)
    server = b.socket(socket.AF_INET, socket.SOCK_STREAM)
    server.bind((b.ip, 5003))
    server.listen()
    with monitors.open("flows", interface="eth0", netns=b.netns) as m:
        client = a.socket(socket.AF_INET, socket.SOCK_STREAM)
        client.connect((b.ip, 5003))
        conn, _ = server.accept()
        client.sendall(b"hello")
        assert conn.recv(5) == b"hello"
        client.close()
        conn.close()
        settle()
        snap = m.snapshot()
    server.close()
    ingress = next(f for f in snap["flows"] if f["dport"] == 5003 and f["direction"] == "ingress")
    assert {"SYN", "ACK", "PSH", "FIN"} <= set(ingress["tcp_flags"])
    egress = next(f for f in snap["flows"] if f["sport"] == 5003 and f["direction"] == "egress")
    assert {"SYN", "ACK"} <= set(egress["tcp_flags"]) and egress["proto"] == "tcp"


def test_overflow_is_counted_and_aggregation_folds_keys(hosts):
    a, b = hosts
    quiet(a, b)
    sink = udp_sink(b, 5004)
    with monitors.open("flows", interface="eth0", netns=b.netns, max_entries=16) as m:
        for sport in range(41000, 41040):
            send_udp(a, b.ip, 5004, 1, sport=sport)
        settle()
        snap = m.snapshot()
    with monitors.open("flows", interface="eth0", netns=b.netns, aggregate=["dst", "dport"]) as m:
        for sport in range(41000, 41040):
            send_udp(a, b.ip, 5004, 2, sport=sport)
        settle()
        agg = m.snapshot()
    sink.close()
    assert len(snap["flows"]) == 16 and snap["overflow"] == 40 - 16
    assert agg["flows"] == [{"src": None, "dst": b.ip, "sport": None, "dport": 5004, "proto": None,
                             "direction": "ingress", "packets": 80, "bytes": 80 * V4_FRAME,
                             "first_seen_ns": agg["flows"][0]["first_seen_ns"],
                             "last_seen_ns": agg["flows"][0]["last_seen_ns"], "tcp_flags": []}]


def test_idle_flows_are_evicted(hosts):
    a, b = hosts
    quiet(a, b)
    sink = udp_sink(b, 5005)
    with monitors.open("flows", interface="eth0", netns=b.netns, idle_timeout=30) as m:
        send_udp(a, b.ip, 5005, 3, sport=40005)
        settle()
        assert m.evict_idle() == 0  # just seen
        last = m.snapshot()["flows"][0]["last_seen_ns"]
        assert m.evict_idle(now_ns=last + 31 * 10**9) == 1
        snap = m.snapshot()
    sink.close()
    assert snap["flows"] == [] and snap["evicted"] == 1


def test_bad_options_are_named():
    with pytest.raises(ConfigError) as err:
        monitors.create("flows", "eth0", None, {"max_entries": 1, "aggregate": ["srcc"], "mode": "tcx"})
    paths = dict(err.value.problems)
    assert set(paths) == {"options.max_entries", "options.aggregate[0]", "options.mode"}
    with pytest.raises(ConfigError, match="needs an interface"):
        monitors.create("flows")


def test_cli_json_prints_one_snapshot(hosts):
    a, b = hosts
    quiet(a, b)
    sink = udp_sink(b, 5006)
    proc = start_cli("monitor", "flows", "-i", "eth0", "--netns", b.netns, "--duration", "3", "--json",
                     "--set", "top=5", "--set", "mode=tc")
    wait_attached(b, "egress")  # egress is attached last
    send_udp(a, b.ip, 5006, 12, sport=40006)
    snap = finish_json(proc)
    sink.close()
    [f] = _ours(snap, 5006)
    assert (f["packets"], f["bytes"], f["sport"]) == (12, 12 * V4_FRAME, 40006)


def test_rest_metrics_and_state_file(hosts, tmp_path):
    a, b = hosts
    quiet(a, b)
    state = tmp_path / "state.json"
    sink = udp_sink(b, 5007)
    with Daemon("--netns", b.netns, "--state-file", str(state)) as d:
        bad = d.client.post("/monitors/f1", json={"kind": "flows", "interface": "eth0", "options": {"topp": 1}})
        assert bad.status_code == 400 and bad.json()["problems"][0]["path"] == "options.topp"
        assert d.client.post("/monitors/f1", json={"kind": "flowz", "interface": "eth0"}).status_code == 400
        r = d.client.post("/monitors/f1", json={"kind": "flows", "interface": "eth0", "options": {"top": 3}})
        assert r.status_code == 201, r.text
        assert r.json()["options"]["top"] == 3
        send_udp(a, b.ip, 5007, 9, sport=40007)
        settle()
        snap = d.client.get("/monitors/f1").json()
        [f] = _ours(snap, 5007)
        assert (f["packets"], f["bytes"]) == (9, 9 * V4_FRAME)
        assert snap["monitor"]["kind"] == "flows"
        text = d.client.get("/metrics").text
        fams = {fam.name: fam for fam in text_string_to_metric_families(text)}
        [sample] = [s for s in fams["flow_packets"].samples if s.labels.get("dport") == "5007"]
        assert sample.labels["monitor"] == "f1" and sample.value == 9
        assert all(s.labels.get("monitor") == "f1" for s in fams["pynetmon_monitor_maps_bytes"].samples)
        assert d.client.put("/monitors/f1", json={"options": {"top": 1}}).status_code == 200
        fixed = d.client.put("/monitors/f1", json={"options": {"mode": "xdp"}})
        assert fixed.status_code == 400 and fixed.json()["problems"][0]["path"] == "options.mode"
        assert [m["name"] for m in d.client.get("/monitors").json()] == ["f1"]
        assert "flows" in d.client.get("/monitors/kinds").json()
    with Daemon("--netns", b.netns, "--state-file", str(state)) as d:  # restored, with its options
        assert d.client.get("/monitors").json()[0]["options"]["top"] == 1
        assert len(tc_programs("eth0", "ingress", netns=b.netns)) == 1
        assert d.client.delete("/monitors/f1").status_code == 204
        assert d.client.get("/monitors/f1").status_code == 404
        assert not tc_programs("eth0", "ingress", netns=b.netns)
    sink.close()

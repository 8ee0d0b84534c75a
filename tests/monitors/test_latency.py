"""latency: our own packets between test hosts, each mode: counts exact, values plausible. reply: an
echo server answers on the monitored host; stack: datagrams to a bound socket (and to a closed port,
which reach no socket); forward: a router namespace between two hosts."""
from __future__ import annotations

import socket
import time

import pytest
from prometheus_client.parser import text_string_to_metric_families
from service.daemon import Daemon

from pynetmon import monitors
from pynetmon.errors import ConfigError
from pynetmon.testhosts import MiddleHosts

from .helpers import finish_json, quiet, start_cli, udp_sink, wait_attached


def plausible(snap: dict, packets: int) -> dict:
    """The one flow of `snap`, after checking its numbers agree and are those of a host's microseconds."""
    assert snap["packets"] == packets == snap["latency_us"]["count"]
    [flow] = snap["by_flow"]
    assert flow["packets"] == packets
    assert 0 < flow["min_us"] <= flow["p50_us"] <= flow["p99_us"] <= flow["max_us"] < 1_000_000, flow
    assert flow["min_us"] <= flow["avg_us"] <= flow["max_us"]
    assert snap["overflow"] == 0
    return flow


def test_reply_times_how_long_the_host_takes_to_answer(hosts):
    client, server = hosts
    quiet(client, server)
    echo = server.socket()
    echo.bind((server.ip, 7007))
    echo.settimeout(2)
    ask = client.socket()
    ask.settimeout(2)
    with monitors.open("latency", interface="eth0", netns=server.netns, mode="reply", linear=1, buckets=2000) as m:
        for i in range(20):
            ask.sendto(b"ping %d" % i, (server.ip, 7007))
            data, peer = echo.recvfrom(64)
            time.sleep(0.002)  # the host "works" 2 ms before answering
            echo.sendto(data, peer)
            ask.recv(64)
        snap = m.snapshot()
    echo.close()
    ask.close()
    flow = plausible(snap, 20)
    assert (flow["src"], flow["dst"], flow["dport"], flow["proto"]) == (client.ip, server.ip, 7007, "udp")
    assert flow["min_us"] >= 2000   # nothing answered before the sleep
    # linear=1: 1-µs buckets, the last one +Inf
    bounds = [b["le"] for b in snap["latency_us"]["buckets"]]
    assert bounds[:3] == [0, 1, 2] and bounds[-1] == "+Inf"


def test_stack_times_delivery_to_the_socket(hosts):
    client, server = hosts
    quiet(client, server)
    sink = udp_sink(server, 7008)
    with monitors.open("latency", interface="eth0", netns=server.netns, mode="stack") as m:
        client.send_udp(server.ip, 7008, 25)
        client.send_udp(server.ip, 7009, 5)   # closed port: reaches no socket, no sample
        client.run("ping", "-c2", "-i0.05", server.ip)   # no socket takes ICMP here: not even stamped
        time.sleep(0.1)
        snap = m.snapshot()
    sink.close()
    flow = plausible(snap, 25)
    assert flow["dport"] == 7008
    assert snap["stamped"] == 30


def test_stack_with_tcp(hosts):
    client, server = hosts
    quiet(client, server)
    listener = server.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind((server.ip, 7010))
    listener.listen()
    with monitors.open("latency", interface="eth0", netns=server.netns, mode="stack") as m:
        conn = client.socket(socket.AF_INET, socket.SOCK_STREAM)
        conn.connect((server.ip, 7010))
        peer, _ = listener.accept()
        for _ in range(10):
            conn.sendall(b"x" * 100)
            peer.recv(100)
        conn.close()
        peer.close()
        snap = m.snapshot()
    listener.close()
    [flow] = snap["by_flow"]
    # every data segment reached the established socket (ACKs and FIN too; not the handshake)
    assert 10 <= flow["packets"] <= snap["stamped"] - 2, (flow, snap["stamped"])
    assert 0 < flow["min_us"] <= flow["max_us"] < 1_000_000


def test_forward_through_a_router(bpf):
    with MiddleHosts(routed=True) as h:
        quiet(h.a, h.b)
        sink = udp_sink(h.b, 7011)
        with monitors.open("latency", interface="left", netns=h.m, mode="forward", egress_interface="right") as m:
            h.a.send_udp(h.b.ip, 7011, 40)
            time.sleep(0.1)
            snap = m.snapshot()
        sink.close()
    flow = plausible(snap, 40)
    assert (flow["src"], flow["dst"]) == (h.a.ip, h.b.ip)
    assert snap["stale"] == 0


@pytest.mark.parametrize("options, path", [({"mode": "forward"}, "options.egress_interface"),
                                           ({"egress_interface": "eth1"}, "options.egress_interface"),
                                           ({"mode": "kernel"}, "options.mode"),
                                           ({"linear": 0}, "options.linear")])
def test_bad_options_are_refused_by_name(options, path):
    with pytest.raises(ConfigError) as err:
        monitors.create("latency", interface="eth0", options=options)
    assert path in str(err.value)


def _echo_rounds(client, server, port: int, rounds: int) -> None:
    echo = server.socket()
    echo.bind((server.ip, port))
    echo.settimeout(2)
    ask = client.socket()
    ask.settimeout(2)
    with echo, ask:
        for i in range(rounds):
            ask.sendto(b"%d" % i, (server.ip, port))
            data, peer = echo.recvfrom(64)
            echo.sendto(data, peer)
            ask.recv(64)


def test_cli_json_and_rest(hosts):
    client, server = hosts
    quiet(client, server)
    proc = start_cli("monitor", "latency", "-i", "eth0", "--netns", server.netns, "--duration", "3", "--json",
                     "--set", "mode=reply", "--set", "linear=1", "--set", "buckets=100")
    wait_attached(server, "egress")
    _echo_rounds(client, server, 7012, 7)
    snap = finish_json(proc)
    assert snap["mode"] == "reply" and snap["packets"] == 7
    bounds = [b["le"] for b in snap["latency_us"]["buckets"]]
    assert bounds[:-1] == list(range(len(bounds) - 1)) and bounds[-1] == "+Inf"   # 1-µs buckets
    with Daemon("--netns", server.netns) as d:
        r = d.client.post("/monitors/l1", json={"kind": "latency", "interface": "eth0", "options": {"mode": "stack"}})
        assert r.status_code == 201, r.text
        bad = d.client.post("/monitors/l2", json={"kind": "latency", "interface": "eth0",
                                                  "options": {"mode": "forward"}})
        assert bad.status_code == 400
        _echo_rounds(client, server, 7013, 9)
        snap = d.client.get("/monitors/l1").json()
        assert snap["packets"] == 9
        fams = {f.name: f for f in text_string_to_metric_families(d.client.get("/metrics").text)}
        [count] = [s for s in fams["packet_latency_microseconds"].samples
                   if s.name.endswith("_count") and s.labels.get("monitor") == "l1"]
        assert count.value == 9
        [per_flow] = [s for s in fams["packet_latency_samples"].samples if s.labels.get("monitor") == "l1"]
        assert per_flow.labels["dport"] == "7013" and per_flow.value == 9
        assert d.client.delete("/monitors/l1").status_code == 204

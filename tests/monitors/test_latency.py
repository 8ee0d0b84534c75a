"""latency: our own packets between test hosts, each mode: counts exact, values plausible. reply: an
echo server answers on the monitored host; stack: datagrams to a bound socket (and to a closed port,
which reach no socket); forward: a router namespace between two hosts."""
from __future__ import annotations

import socket
import time

import pytest

from pynetmon import monitors
from pynetmon.errors import ConfigError
from pynetmon.testhosts import MiddleHosts

from .helpers import quiet, udp_sink


def plausible(snap: dict, packets: int) -> dict:
    """The one flow of `snap`, after checking its numbers agree and are those of a host's microseconds."""
    assert snap["packets"] == packets == snap["latency_us"]["count"]
    [flow] = snap["by_flow"]
    assert flow["packets"] == packets
    assert 0 < flow["min_us"] <= flow["p50_us"] <= flow["p99_us"] <= flow["max_us"] < 200_000, flow
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
    assert 0 < flow["min_us"] <= flow["max_us"] < 200_000


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


@pytest.mark.parametrize("options, path", [({"mode": "forward"}, "options"),
                                           ({"egress_interface": "eth1"}, "options"),
                                           ({"mode": "kernel"}, "options.mode"),
                                           ({"linear": 0}, "options.linear")])
def test_bad_options_are_refused_by_name(options, path):
    with pytest.raises(ConfigError) as err:
        monitors.create("latency", interface="eth0", options=options)
    assert path in str(err.value)

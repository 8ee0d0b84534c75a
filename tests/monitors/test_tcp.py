"""tcp: N connections opened and closed between test hosts with roles and bytes exact; retransmitted
segments equal to the namespace's TcpRetransSegs (nstat) under loss made by a BPF program that drops
every k-th data segment at the receiver's ingress; failed connects, resets, events, the netns filter in
the kernel; the CLI's --json and --events, REST."""
from __future__ import annotations

import json
import socket
import threading

import pytest
from service.daemon import Daemon

from pynetmon import monitors
from pynetmon.link import attach_tc
from pynetmon.object import BPFObject
from pynetmon.toolchain import compile_c

from .helpers import finish_json, quiet, settle, start_cli, wait_started

PORT = 5020

# Drops every `every`-th TCP segment that carries data, at the tc hook it is attached to. Attached at the
# receiver's ingress: the sender's TCP sees a real loss (a drop at its own egress would be a local drop,
# which TCP resends without counting a retransmission).
LOSSY_C = r"""
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/tcp.h>
#include <linux/pkt_cls.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>
char LICENSE[] SEC("license") = "GPL";
const volatile __u32 every = 10;
__u64 seen = 0, dropped = 0;
SEC("tc") int lossy(struct __sk_buff *skb)
{
	void *data = (void *)(long)skb->data, *end = (void *)(long)skb->data_end;
	struct ethhdr *eth = data;
	struct iphdr *ip = (void *)(eth + 1);
	struct tcphdr *th;

	if ((void *)(ip + 1) > end || eth->h_proto != bpf_htons(ETH_P_IP) || ip->protocol != IPPROTO_TCP)
		return TC_ACT_OK;
	th = (void *)ip + ip->ihl * 4;
	if ((void *)(th + 1) > end || bpf_ntohs(ip->tot_len) <= ip->ihl * 4 + th->doff * 4)
		return TC_ACT_OK;
	if (__sync_fetch_and_add(&seen, 1) % every == every - 1) {
		__sync_fetch_and_add(&dropped, 1);
		return TC_ACT_SHOT;
	}
	return TC_ACT_OK;
}
"""


def _nstat_retrans(host) -> int:
    out = host.run("nstat", "-asz", "TcpRetransSegs").stdout  # -s: the history file is not written
    return int(next(line.split()[1] for line in out.splitlines() if line.startswith("TcpRetransSegs")))


def _server(host, port: int = PORT) -> socket.socket:
    srv = host.socket(socket.AF_INET, socket.SOCK_STREAM)
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind((host.ip, port))
    srv.listen(16)
    return srv


def _exchange(a, b, srv: socket.socket, up: int, down: int) -> int:
    """One connection a → b: `up` bytes to the server, `down` back, then both close; the client port."""
    client = a.socket(socket.AF_INET, socket.SOCK_STREAM)
    client.connect((b.ip, PORT))
    conn, _ = srv.accept()
    client.sendall(b"u" * up)
    got = 0
    while got < up:
        got += len(conn.recv(65536))
    conn.sendall(b"d" * down)
    got = 0
    while got < down:
        got += len(client.recv(65536))
    port = client.getsockname()[1]
    client.close()
    conn.close()
    return port


@pytest.mark.parametrize("live_stats", [True, False])
def test_connections_roles_bytes_and_totals(hosts, live_stats):
    a, b = hosts
    quiet(a, b)
    srv = _server(b)
    with monitors.open("tcp", netns=a.netns, live_stats=live_stats) as ma, \
            monitors.open("tcp", netns=b.netns, live_stats=live_stats) as mb:
        ports = [_exchange(a, b, srv, 1000 * (i + 1), 500) for i in range(3)]
        settle()
        snap_a, snap_b = ma.snapshot(), mb.snapshot()
        again = ma.snapshot()
    srv.close()
    assert snap_a["totals"] == {"opened": 3, "closed": 3, "active": 0, "retransmits": 0, "resets": 0,
                                "failed_connects": 0}
    assert snap_b["totals"]["opened"] == 3 and snap_b["totals"]["closed"] == 3
    clients = snap_a["connections"]
    assert [(c["role"], c["sport"], c["dport"], c["src"], c["dst"], c["state"]) for c in clients] == \
        [("client", p, PORT, a.ip, b.ip, "CLOSE") for p in ports]
    # the kernel's tcp_info counts: acked and received include the SYN and FIN, sent is payload only
    assert [c["bytes_sent"] for c in clients] == [1000, 2000, 3000]
    assert [c["bytes_acked"] for c in clients] == [1002, 2002, 3002]
    assert all(c["bytes_received"] == 501 and c["srtt_us"] > 0 and c["cwnd"] >= 10 for c in clients)
    assert all(c["closed_ns"] > c["established_ns"] > c["opened_ns"] for c in clients)
    servers = snap_b["connections"]
    assert [(c["role"], c["sport"], c["dport"]) for c in servers] == [("server", PORT, p) for p in ports]
    assert [c["bytes_sent"] for c in servers] == [500] * 3
    assert snap_a["connect_latency_us"]["count"] == 3 and snap_b["connect_latency_us"]["count"] == 0
    assert again["connections"] == []  # closed connections are reported once
    assert ("tcp_probe" in snap_a["self"]["programs"]) == live_stats
    assert "tcp_iter" in snap_a["self"]["programs"]


@pytest.mark.parametrize("every", [7, 13])
def test_retransmits_equal_tcp_retrans_segs(hosts, every):
    a, b = hosts
    quiet(a, b)
    lossy = BPFObject(compile_c(LOSSY_C, use_cache=False), name="lossy")
    lossy.set_rodata(every=every)
    lossy.load()
    srv = _server(b)
    with attach_tc(lossy.programs["lossy"], "eth0", "ingress", netns=b.netns):
        before = _nstat_retrans(a)
        with monitors.open("tcp", netns=a.netns) as m:
            done = threading.Event()

            def drain():
                conn, _ = srv.accept()
                while conn.recv(65536):
                    pass
                conn.close()
                done.set()

            threading.Thread(target=drain, daemon=True).start()
            client = a.socket(socket.AF_INET, socket.SOCK_STREAM)
            client.connect((b.ip, PORT))
            client.sendall(b"x" * 1_000_000)
            client.close()
            assert done.wait(60)
            settle()
            snap = m.snapshot()
        delta = _nstat_retrans(a) - before
    srv.close()
    dropped = lossy.maps["lossy.bss"].lookup(0)
    lossy.close()
    assert int.from_bytes(dropped[8:], "little") > 0  # the loss happened
    assert delta > 0
    assert snap["totals"]["retransmits"] == delta
    [conn] = snap["connections"]
    assert conn["retransmits"] == delta


def test_failed_connect_reset_and_events(hosts):
    a, b = hosts
    quiet(a, b)
    with monitors.open("tcp", netns=a.netns) as m:
        client = a.socket(socket.AF_INET, socket.SOCK_STREAM)
        with pytest.raises(ConnectionRefusedError):
            client.connect((b.ip, PORT + 1))  # nothing listens: b answers with a reset
        client.close()
        settle()
        events = list(m.events(timeout=0.3))
        snap = m.snapshot()
    assert snap["totals"]["failed_connects"] == 1 and snap["totals"]["resets"] == 1
    [conn] = snap["connections"]
    assert conn["role"] == "client" and conn["state"] == "CLOSE" and conn["established_ns"] is None
    states = [(e["oldstate"], e["newstate"]) for e in events if e["type"] == "state"]
    assert states == [("CLOSE", "SYN_SENT"), ("SYN_SENT", "CLOSE")]
    assert [e["type"] for e in events].count("reset") == 1


def test_cli_json_and_events(hosts):
    a, b = hosts
    quiet(a, b)
    srv = _server(b)
    proc = start_cli("monitor", "tcp", "--netns", b.netns, "--duration", "2", "--json")
    events = start_cli("monitor", "tcp", "--netns", b.netns, "--duration", "2", "--events")
    wait_started(proc)
    wait_started(events)
    port = _exchange(a, b, srv, 100, 100)
    snap = finish_json(proc)
    out, err = events.communicate(timeout=60)
    srv.close()
    assert events.returncode == 0, err
    assert [(c["role"], c["dport"]) for c in snap["connections"]] == [("server", port)]
    lines = [json.loads(line) for line in out.splitlines()]
    assert ("LISTEN", "SYN_RECV") in [(e.get("oldstate"), e.get("newstate")) for e in lines]


def test_rest(hosts):
    a, b = hosts
    quiet(a, b)
    srv = _server(b)
    with Daemon() as d:
        r = d.client.post("/monitors/t1", json={"kind": "tcp", "netns": a.netns, "options": {"keep_closed": 64}})
        assert r.status_code == 201, r.text
        _exchange(a, b, srv, 10, 10)
        settle()
        snap = d.client.get("/monitors/t1").json()
        assert snap["totals"]["opened"] == 1 and snap["connections"][0]["role"] == "client"
        text = d.client.get("/metrics").text
        assert 'tcp_connections_opened_total{monitor="t1"} 1.0' in text
        assert 'tcp_connect_latency_microseconds_count{monitor="t1"} 1.0' in text
    srv.close()


@pytest.mark.parametrize("live_stats", [True, False])
def test_open_connections_show_current_values(hosts, live_stats):
    """A socket iterator run in the monitor's namespace refreshes open connections at each snapshot (with
    or without tcp_probe's per-segment refresh, whose values are those from before the segment)."""
    a, b = hosts
    quiet(a, b)
    srv = _server(b)
    with monitors.open("tcp", netns=a.netns, live_stats=live_stats) as m:
        client = a.socket(socket.AF_INET, socket.SOCK_STREAM)
        client.connect((b.ip, PORT))
        conn, _ = srv.accept()
        client.sendall(b"u" * 7000)
        got = 0
        while got < 7000:
            got += len(conn.recv(65536))
        conn.sendall(b"d" * 300)
        assert len(client.recv(300)) == 300
        settle()
        [row] = m.snapshot()["connections"]
        client.close()
        conn.close()
    srv.close()
    assert (row["state"], row["closed_ns"]) == ("ESTABLISHED", None)
    assert (row["bytes_sent"], row["bytes_acked"], row["bytes_received"]) == (7000, 7001, 300)

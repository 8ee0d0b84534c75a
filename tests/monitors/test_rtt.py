"""rtt: TCP timestamps matched in the kernel (exact, with BPF_PROG_TEST_RUN) and a delay we make
ourselves (a frame relay holding every frame 10 ms each way) measured within 10%, at an endpoint and on
the host in the middle that only carries the frames."""
from __future__ import annotations

import socket
import statistics
import struct
import threading
import time

from prometheus_client.parser import text_string_to_metric_families
from service.daemon import Daemon

from pynetmon import monitors
from pynetmon.link import tc_programs
from pynetmon.testhosts import FrameRelay, MiddleHosts

from .helpers import finish_json, quiet, start_cli, wait_attached

DELAY = 0.010


def tcp_frame(src: str, dst: str, sport: int, dport: int, flags: int, options: bytes, payload: bytes = b"") -> bytes:
    """An Ethernet + IPv4 + TCP frame (checksums are not checked at tc)."""
    doff = (20 + len(options)) // 4
    tcp = struct.pack("!HHIIBBHHH", sport, dport, 1, 1, doff << 4, flags, 65535, 0, 0) + options + payload
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(tcp), 0, 0, 64, 6, 0, socket.inet_aton(src), socket.inet_aton(dst))
    return b"\x02" * 6 + b"\x04" * 6 + b"\x08\x00" + ip + tcp


def tcp6_frame(src: str, dst: str, sport: int, dport: int, flags: int, options: bytes, payload: bytes = b"") -> bytes:
    """An Ethernet + IPv6 + TCP frame."""
    doff = (20 + len(options)) // 4
    tcp = struct.pack("!HHIIBBHHH", sport, dport, 1, 1, doff << 4, flags, 65535, 0, 0) + options + payload
    ip6 = struct.pack("!IHBB", 6 << 28, len(tcp), 6, 64) + socket.inet_pton(socket.AF_INET6, src) \
        + socket.inet_pton(socket.AF_INET6, dst)
    return b"\x02" * 6 + b"\x04" * 6 + b"\x86\xdd" + ip6 + tcp


def ts_option(tsval: int, tsecr: int) -> bytes:
    return b"\x01\x01\x08\x0a" + struct.pack("!II", tsval, tsecr)


def test_timestamps_are_matched_once_per_tsval(hosts):
    a, _ = hosts
    with monitors.open("rtt", interface="eth0", netns=a.netns) as m:
        prog = m.objects[0].programs["rtt_ingress"]
        syn_opts = b"\x02\x04\x05\xb4\x04\x02\x08\x0a" + struct.pack("!II", 7, 0) + b"\x01\x03\x03\x07"
        prog.test_run(tcp_frame("10.0.0.1", "10.0.0.2", 1000, 80, 0x02, syn_opts))          # SYN, TSval 7
        prog.test_run(tcp_frame("10.0.0.2", "10.0.0.1", 80, 1000, 0x12, syn_opts[:8] + struct.pack("!II", 900, 7) + syn_opts[16:]))
        for tsval in (100, 100, 101):   # the second TSval 100 is not remembered again
            prog.test_run(tcp_frame("10.0.0.1", "10.0.0.2", 1000, 80, 0x18, ts_option(tsval, 900), b"data"))
        prog.test_run(tcp_frame("10.0.0.1", "10.0.0.2", 1000, 80, 0x10, ts_option(102, 900)))  # pure ACK: no
        for tsecr in (100, 100, 101, 102, 55):   # the second echo of 100 matches nothing; 102 was an ACK; 55 never sent
            prog.test_run(tcp_frame("10.0.0.2", "10.0.0.1", 80, 1000, 0x10, ts_option(901, tsecr)))
        prog.test_run(tcp_frame("10.0.0.1", "10.0.0.2", 1000, 80, 0x18, b"\x01\x01\x05\x0a" + bytes(8), b"x"))  # SACK, no TS
        snap = m.snapshot()
    flows = {(f["src"], f["sport"]): f for f in snap["flows"]}
    assert flows[("10.0.0.1", 1000)]["samples"] == 3      # SYN→SYN-ACK, 100, 101
    assert flows[("10.0.0.2", 80)]["samples"] == 1        # the SYN-ACK's 900, echoed by the first data packet
    assert snap["samples"] == 4 and snap["rtt_us"]["count"] == 4
    assert snap["tcp_timestamped_packets"] == 11
    assert snap["timestamps_stored"] == 4                # SYN 7, SYN-ACK 900, 100, 101


SO_TIMESTAMPNS = 35  # linux; Python's socket module does not name it


def _arrival(ancillary: list) -> float:
    """The kernel's arrival time of received data (SCM_TIMESTAMPNS) on the monotonic clock."""
    now = time.monotonic()
    for level, kind, data in ancillary:
        if (level, kind) == (socket.SOL_SOCKET, SO_TIMESTAMPNS):
            sec, nsec = struct.unpack_from("=qq", data)
            return now - (time.time() - (sec + nsec / 1e9))
    return now


def _ping_pong(client_host, server_host, rounds: int, port: int = 7000,
               turnarounds: list[float] | None = None) -> list[float]:
    """`rounds` request/response exchanges over one TCP connection; the application's RTTs. The
    server's turnarounds (the request's arrival in its kernel to its answer sent) go to `turnarounds`."""
    srv = server_host.socket(socket.AF_INET, socket.SOCK_STREAM)
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind((server_host.ip, port))
    srv.listen()

    def serve():
        conn, _ = srv.accept()
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        conn.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
        with conn:
            while True:
                data, ancillary, _, _ = conn.recvmsg(64, socket.CMSG_SPACE(16))
                if not data:
                    break
                arrived = _arrival(ancillary)
                conn.sendall(data)
                if turnarounds is not None:
                    turnarounds.append(time.monotonic() - arrived)

    server = threading.Thread(target=serve, daemon=True)
    server.start()
    cl = client_host.socket(socket.AF_INET, socket.SOCK_STREAM)
    cl.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    cl.settimeout(5)
    cl.connect((server_host.ip, port))
    rtts = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        cl.sendall(b"q" * 64)
        got = b""
        while len(got) < 64:
            got += cl.recv(64 - len(got))
        rtts.append(time.perf_counter() - t0)
    cl.close()
    server.join(5)
    srv.close()
    return rtts


def test_a_delay_we_make_is_measured_at_the_endpoint_and_in_the_middle(bpf):
    rounds = 30
    with MiddleHosts(routed=False) as h, FrameRelay(h.m, "left", "right", DELAY) as relay, \
            monitors.open("rtt", interface="eth0", netns=h.a.netns) as at_a, \
            monitors.open("rtt", interface="left", netns=h.m) as in_middle:
        turnarounds: list[float] = []
        app = _ping_pong(h.a, h.b, rounds, turnarounds=turnarounds)
        time.sleep(3 * DELAY)
        snaps = {"endpoint": at_a.snapshot(), "middle": in_middle.snapshot()}
    # The delay as the relay really held frames, from their arrival (10 ms each way, more when this shared
    # machine was slow to wake the relay). The peer's echo of a request's TSval is its kernel's ACK or the
    # server's answer, whichever leaves first: the RTT lies between the two holds alone and the two holds
    # plus the server's turnaround (≈ 0 on a quiet machine, milliseconds on a loaded one). Within 10%.
    holds_us = 2 * statistics.median(relay.holds) * 1e6
    with_server_us = holds_us + statistics.median(turnarounds) * 1e6
    assert holds_us >= 2 * DELAY * 1e6
    for where, snap in snaps.items():
        flows = {(f["src"], f["dst"]): f for f in snap["flows"]}
        out = flows[(h.a.ip, h.b.ip)]
        # every request (and the SYN) has its own TSval: they are 20 ms apart, TSval ticks every 1 ms
        assert rounds + 1 <= out["samples"] <= rounds + 3, (where, out)
        assert out["min_us"] >= 2 * DELAY * 1e6, (where, out)   # nothing comes back faster than the relay
        assert holds_us * 0.9 <= out["p50_us"] <= with_server_us * 1.1, (where, out, holds_us, with_server_us)
        assert out["p50_us"] <= statistics.median(app) * 1e6 * 1.10, (where, out, statistics.median(app))
        assert out["min_us"] <= out["p50_us"] <= out["p99_us"] <= out["max_us"]
        # b's answers are echoed by a without the relay's delay in between (a answers at once)
        back = flows[(h.b.ip, h.a.ip)]
        assert back["p50_us"] < holds_us, (where, back)
        assert snap["rtt_us"]["count"] == snap["samples"] == sum(f["samples"] for f in snap["flows"])
        assert snap["overflow"] == 0


def test_on_a_router_each_side_of_it(bpf):
    with MiddleHosts(routed=True) as h, monitors.open("rtt", interface="right", netns=h.m) as m:
        quiet(h.a, h.b)
        _ping_pong(h.a, h.b, 10, port=7003)
        snap = m.snapshot()
    flows = {(f["src"], f["dst"]): f for f in snap["flows"]}
    beyond, before = flows[(h.a.ip, h.b.ip)], flows[(h.b.ip, h.a.ip)]   # router→b→router, router→a→router
    assert 11 <= beyond["samples"] <= 13 and 11 <= before["samples"] <= 13
    assert 0 < beyond["min_us"] and 0 < before["min_us"]


def test_ipv6(hosts):
    a, _ = hosts
    with monitors.open("rtt", interface="eth0", netns=a.netns) as m:
        prog = m.objects[0].programs["rtt_egress"]
        prog.test_run(tcp6_frame("fd00::1", "fd00::2", 3000, 443, 0x18, ts_option(40, 1), b"req"))
        prog.test_run(tcp6_frame("fd00::2", "fd00::1", 443, 3000, 0x18, ts_option(77, 40), b"resp"))
        snap = m.snapshot()
    [flow] = [f for f in snap["flows"] if f["src"] == "fd00::1"]
    assert (flow["dst"], flow["sport"], flow["dport"], flow["samples"]) == ("fd00::2", 3000, 443, 1)


def test_full_flow_table_counts_overflow(hosts):
    a, _ = hosts
    with monitors.open("rtt", interface="eth0", netns=a.netns, max_entries=16) as m:
        prog = m.objects[0].programs["rtt_egress"]
        for port in range(20):
            prog.test_run(tcp_frame("10.0.0.1", "10.0.0.2", 2000 + port, 80, 0x18, ts_option(5, 1), b"d"))
            prog.test_run(tcp_frame("10.0.0.2", "10.0.0.1", 80, 2000 + port, 0x10, ts_option(6, 5)))
        snap = m.snapshot()
    assert len(snap["flows"]) == 16
    assert snap["overflow"] == 4 and snap["samples"] == 20


def test_cli_json_and_rest(hosts):
    a, b = hosts
    quiet(a, b)
    proc = start_cli("monitor", "rtt", "-i", "eth0", "--netns", a.netns, "--duration", "3", "--json",
                     "--set", "top=5", "--set", "linear=100", "--set", "buckets=50")
    wait_attached(a, "egress")
    _ping_pong(a, b, 5, port=7001)
    snap = finish_json(proc)
    out = next(f for f in snap["flows"] if (f["src"], f["dport"]) == (a.ip, 7001))
    assert out["samples"] >= 6 and out["min_us"] > 0
    assert [x["le"] for x in snap["rtt_us"]["buckets"][:2]] == [99, 199]   # linear=100: 100-µs buckets
    with Daemon("--netns", a.netns) as d:
        r = d.client.post("/monitors/r1", json={"kind": "rtt", "interface": "eth0", "options": {"top": 3}})
        assert r.status_code == 201, r.text
        bad = d.client.post("/monitors/r2", json={"kind": "rtt", "interface": "eth0", "options": {"linear": "1"}})
        assert bad.status_code == 400 and bad.json()["problems"][0]["path"] == "options.linear"
        _ping_pong(a, b, 5, port=7002)
        snap = d.client.get("/monitors/r1").json()
        out = next(f for f in snap["flows"] if (f["src"], f["dport"]) == (a.ip, 7002))
        assert out["samples"] >= 6
        fams = {f.name: f for f in text_string_to_metric_families(d.client.get("/metrics").text)}
        [sample] = [s for s in fams["tcp_rtt_samples"].samples if s.labels.get("dport") == "7002"]
        assert sample.labels["monitor"] == "r1" and sample.value == out["samples"]
        count = [s for s in fams["tcp_rtt_microseconds"].samples if s.name.endswith("_count")]
        assert count[0].value == snap["rtt_us"]["count"]
        assert d.client.delete("/monitors/r1").status_code == 204
        assert not tc_programs("eth0", "ingress", netns=a.netns)

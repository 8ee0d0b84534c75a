"""The HTTP monitor on a real kernel between two test hosts: exact counts, exact mirrors.

The server (http_helpers.StatusServer) runs in host b; the monitor watches b's eth0 in both directions;
the client is host a. Mirrors go to a veth end the monitor creates in b (captured there with pynetmon's
capture) or to a pcap file.
"""
from __future__ import annotations

import collections
import os
import shutil
import socket
import struct
import subprocess
import sys
import time

import dpkt
import pytest
from prometheus_client.parser import text_string_to_metric_families
from service.daemon import Daemon

from pynetmon import monitors
from pynetmon.capture import PacketCapture
from pynetmon.errors import ConfigError
from pynetmon.link import tc_programs
from pynetmon.monitors.http import HttpOptions

from .helpers import REPO, V6, finish_json, quiet, start_cli, wait_attached
from .http_helpers import StatusServer, read_response, request

PORT = 8888


# -- options (no kernel) ------------------------------------------------------------------------
@pytest.mark.parametrize("options, path, words", [
    ({"mirror_on": ["6xx"]}, "options.mirror_on[0]", "neither a status code"),
    ({"mirror_on": [99]}, "options.mirror_on[0]", "outside 100-599"),
    ({"mirror_on": ["5xx", True]}, "options.mirror_on[1]", "neither a status code"),
    ({"ports": [80, 0]}, "options.ports[1]", "outside 1-65535"),
    ({"ports": list(range(1, 10))}, "options.ports", "at most 8"),
    ({"mirror_to": "bad name!"}, "options.mirror_to", "not an interface name"),
    ({"mirror_to": "../../etc"}, "options.mirror_to", "not an interface name"),
    ({"mirror_to": "pcap:relative.pcap"}, "options.mirror_to", "absolute"),
    ({"mirror_create": True}, "options", "mirror_create needs mirror_to"),
    ({"mirror_ttl": 0}, "options.mirror_ttl", "greater than 0"),
    ({"max_traced": 0}, "options.max_traced", "greater than or equal to 1"),
    ({"direction": "up"}, "options.direction", "'ingress', 'egress' or 'both'"),
])
def test_bad_options_name_their_json_path(options, path, words):
    with pytest.raises(ConfigError) as err:
        monitors.create("http", interface="eth0", options=options)
    found = dict(err.value.problems)
    assert path in found, found
    assert words in found[path]


def test_mirror_on_codes_and_classes():
    opts = HttpOptions(mirror_on=["5xx", 404, "418"])
    assert opts.status_codes() == set(range(500, 600)) | {404, 418}


# -- helpers ------------------------------------------------------------------------------------
def frames(path) -> list[bytes]:
    with open(path, "rb") as f:
        return [bytes(buf) for _, buf in dpkt.pcap.Reader(f)]


def tcp_of(frame: bytes):
    eth = dpkt.ethernet.Ethernet(frame)
    return eth.data.data


def by_connection(packets: list[bytes]) -> dict[int, list[bytes]]:
    """Frames of each connection (keyed by the client's port), in capture order."""
    conns: dict[int, list[bytes]] = collections.defaultdict(list)
    for frame in packets:
        tcp = tcp_of(frame)
        conns[tcp.sport if tcp.dport == PORT else tcp.dport].append(frame)
    return conns


def from_trigger(conn: list[bytes], prefix: bytes = b"HTTP/1.1 5") -> list[bytes]:
    """The frames of a connection from the first server segment starting with `prefix` on."""
    for i, frame in enumerate(conn):
        tcp = tcp_of(frame)
        if tcp.sport == PORT and bytes(tcp.data).startswith(prefix):
            return conn[i:]
    return []


class Mirrored:
    """The monitor on b's eth0 mirroring to a veth end it creates; b's eth0 and the mirror captured."""

    def __init__(self, hosts, tmp_path, **options):
        self.a, self.b = hosts
        self.tmp = tmp_path
        self.options = {"mirror_to": "pnmmir0", "mirror_create": True, **options}

    def __enter__(self):
        b = self.b
        self.monitor = monitors.open("http", interface="eth0", netns=b.netns, **self.options)
        self.wire = PacketCapture("wire", capture="bidirectional", filter=f"tcp port {PORT}",
                                  dump=self.tmp / "wire.pcap")
        self.wire.attach("eth0", b.netns)
        self.mirror = PacketCapture("mirror", capture="ingress", filter="all", dump=self.tmp / "mirror.pcap")
        self.mirror.attach(self.options["mirror_to"], b.netns)
        return self

    def __exit__(self, *exc):
        self.wire.close()
        self.mirror.close()
        self.monitor.close()

    def captured(self) -> tuple[list[bytes], list[bytes]]:
        """(wire, mirror) frames, after the captures are closed (flushed)."""
        time.sleep(0.1)  # the last ACKs reach both hooks
        self.wire.close()
        self.mirror.close()
        return frames(self.tmp / "wire.pcap"), frames(self.tmp / "mirror.pcap")


# -- counts -------------------------------------------------------------------------------------
def test_response_counts_are_exact(hosts):
    a, b = hosts
    plan = [["/200", "/200", "/404"], ["/500"], ["/201", "/503", "/200"], ["/302"], ["/200"] * 5]
    with StatusServer(b, b.ip, PORT), monitors.open("http", interface="eth0", netns=b.netns) as m:
        for paths in plan:
            assert request(a, b.ip, PORT, paths) == [int(p[1:]) for p in paths]
        snap = m.snapshot()
        metrics = m.open_metrics()
    want = collections.Counter(p[1:] for paths in plan for p in paths)
    assert snap["responses"] == dict(want)
    assert snap["requests"] == {"GET": sum(want.values())}
    assert snap["unparsed"] == 0 and snap["parse"]["no_request"] == 0
    assert snap["by_class"]["2xx"]["count"] == 9 and snap["by_class"]["2xx"]["measured"] == 9
    assert snap["by_class"]["5xx"]["count"] == 2 and snap["by_class"]["3xx"]["count"] == 1
    assert snap["latency_us"]["count"] == sum(want.values())
    for status, n in want.items():
        assert f'http_responses_total{{method="GET",status="{status}"}} {float(n)}' in metrics
    assert snap["mirror"]["packets"] == 0 and snap["traced"] == []  # no mirror_to: nothing mirrored


def test_split_status_line_is_recognised(hosts):
    a, b = hosts
    with StatusServer(b, b.ip, PORT), monitors.open("http", interface="eth0", netns=b.netns) as m:
        assert request(a, b.ip, PORT, ["/split/500", "/200", "/split/201"]) == [500, 200, 201]
        snap = m.snapshot()
    assert snap["responses"] == {"500": 1, "200": 1, "201": 1}
    assert snap["parse"]["split"] == 2 and snap["unparsed"] == 0


def test_pipelined_responses_in_one_segment(hosts):
    a, b = hosts
    with StatusServer(b, b.ip, PORT), monitors.open("http", interface="eth0", netns=b.netns) as m:
        assert request(a, b.ip, PORT, ["/200", "/503", "/404", "/201"], pipelined=True) == [200, 503, 404, 201]
        snap = m.snapshot()
    assert snap["responses"] == {"200": 1, "503": 1, "404": 1, "201": 1}
    assert snap["requests"] == {"GET": 4}
    assert snap["parse"]["pipelined"] == 3 and snap["parse"]["no_request"] == 0


# -- mirroring ----------------------------------------------------------------------------------
def test_mirror_holds_exactly_the_error_connections_from_the_trigger_on(hosts, tmp_path):
    a, b = hosts
    plan = [["/200"], ["/500"], ["/200", "/200"], ["/404", "/503"], ["/200"], ["/502"]]
    with StatusServer(b, b.ip, PORT), Mirrored(hosts, tmp_path) as t:
        for paths in plan:
            request(a, b.ip, PORT, paths)
        wire, mirror = t.captured()
        snap = t.monitor.snapshot()
    conns = by_connection(wire)
    assert len(conns) == len(plan)
    expected = [f for conn in conns.values() for f in from_trigger(conn)]
    assert len(expected) > 3 * 4  # each error connection from its trigger to the last ACK
    assert collections.Counter(mirror) == collections.Counter(expected)
    assert snap["mirror"]["triggers"] == 3 and snap["mirror"]["connections"] == 3
    assert snap["mirror"]["packets"] == len(expected)
    assert snap["mirror"]["ended"]["fin"] == 3 and snap["traced"] == []  # closes ended tracing


def test_keep_alive_connection_is_mirrored_from_the_third_response(hosts, tmp_path):
    a, b = hosts
    with StatusServer(b, b.ip, PORT), Mirrored(hosts, tmp_path) as t:
        sock = a.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.settimeout(5)
        sock.connect((b.ip, PORT))
        rest = b""
        for path in ("/200", "/200", "/500"):
            sock.sendall(f"GET {path} HTTP/1.1\r\nHost: t\r\n\r\n".encode())
            _, rest = read_response(sock, rest)
        traced = t.monitor.snapshot()["traced"]
        assert [(x["src"], x["dst"], x["dport"], x["status"]) for x in traced] == [(a.ip, b.ip, PORT, 500)]
        assert traced[0]["sport"] == sock.getsockname()[1]
        sock.close()
        wire, mirror = t.captured()
    (conn,) = by_connection(wire).values()
    assert collections.Counter(mirror) == collections.Counter(from_trigger(conn))
    assert len(from_trigger(conn)) < len(conn) - 6  # handshake and two exchanges stayed out


def test_ttl_ends_tracing(hosts, tmp_path):
    a, b = hosts
    with StatusServer(b, b.ip, PORT), Mirrored(hosts, tmp_path, mirror_ttl=0.3) as t:
        sock = a.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.settimeout(5)
        sock.connect((b.ip, PORT))
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.sendall(b"GET /500 HTTP/1.1\r\nHost: t\r\n\r\n")
        read_response(sock)
        time.sleep(0.1)
        mirrored_before = t.monitor.snapshot()["mirror"]["packets"]
        time.sleep(1.0)  # past the TTL: the sweeper has ended it
        snap = t.monitor.snapshot()
        assert snap["traced"] == [] and snap["mirror"]["ended"]["ttl"] == 1
        sock.sendall(b"GET /200 HTTP/1.1\r\nHost: t\r\n\r\n")
        read_response(sock)
        sock.close()
        time.sleep(0.1)
        snap = t.monitor.snapshot()
    assert mirrored_before >= 1
    assert snap["mirror"]["packets"] == mirrored_before  # nothing after the TTL
    assert snap["responses"] == {"500": 1, "200": 1}


def test_max_traced_is_respected_and_refusals_counted(hosts, tmp_path):
    a, b = hosts
    with StatusServer(b, b.ip, PORT), Mirrored(hosts, tmp_path, max_traced=2) as t:
        socks = []
        for _ in range(4):  # four error connections open at once
            sock = a.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.settimeout(5)
            sock.connect((b.ip, PORT))
            sock.sendall(b"GET /500 HTTP/1.1\r\nHost: t\r\n\r\n")
            read_response(sock)
            socks.append(sock)
        snap = t.monitor.snapshot()
        first_two = {s.getsockname()[1] for s in socks[:2]}
        for sock in socks:
            sock.close()
        wire, mirror = t.captured()
    assert snap["mirror"]["triggers"] == 4 and snap["mirror"]["connections"] == 2
    assert snap["mirror"]["refused"] == 2
    assert {x["sport"] for x in snap["traced"]} == first_two
    conns = by_connection(wire)
    expected = [f for port in first_two for f in from_trigger(conns[port])]
    assert collections.Counter(mirror) == collections.Counter(expected)


@pytest.mark.parametrize("traced_map", ["lru", "lru_percpu"])
def test_lru_traced_tables_mirror_too(hosts, tmp_path, traced_map):
    a, b = hosts
    with StatusServer(b, b.ip, PORT), Mirrored(hosts, tmp_path, traced_map=traced_map) as t:
        request(a, b.ip, PORT, ["/200", "/500"])
        wire, mirror = t.captured()
    (conn,) = by_connection(wire).values()
    assert collections.Counter(mirror) == collections.Counter(from_trigger(conn))


def test_sampler_mirrors_whole_connections(hosts, tmp_path):
    a, b = hosts
    with StatusServer(b, b.ip, PORT), Mirrored(hosts, tmp_path, sample=1, mirror_on=[599]) as t:
        for _ in range(3):
            request(a, b.ip, PORT, ["/200"])
        wire, mirror = t.captured()
        snap = t.monitor.snapshot()
    assert collections.Counter(mirror) == collections.Counter(wire)  # sample=1: every connection, from SYN
    assert snap["mirror"]["sampled"] == 3 and snap["mirror"]["triggers"] == 0


def test_mirror_to_a_pcap_file(hosts, tmp_path):
    a, b = hosts
    path = tmp_path / "errors.pcap"
    with StatusServer(b, b.ip, PORT), monitors.open("http", interface="eth0", netns=b.netns,
                                                    mirror_to=f"pcap:{path}") as m:
        request(a, b.ip, PORT, ["/200"])
        request(a, b.ip, PORT, ["/200", "/504"])
        time.sleep(0.1)
        packets = m.snapshot()["mirror"]["packets"]
        created = m.mirror.ifname
    assert packets > 3
    got = frames(path)
    assert len(got) == packets
    assert bytes(tcp_of(got[0]).data).startswith(b"HTTP/1.1 504")
    # the veth pair made for the capture is gone
    assert b.run("ip", "link", "show", created, check=False).returncode != 0


def test_created_mirror_interface_is_removed_and_an_existing_one_kept(hosts):
    _, b = hosts
    with monitors.open("http", interface="eth0", netns=b.netns, mirror_to="pnmmir1", mirror_create=True):
        assert b.run("ip", "link", "show", "pnmmir1").returncode == 0
    assert b.run("ip", "link", "show", "pnmmir1", check=False).returncode != 0
    b.run("ip", "link", "add", "pnmown", "type", "veth", "peer", "name", "pnmown-p")
    with pytest.raises(ConfigError, match="exists already"):
        monitors.open("http", interface="eth0", netns=b.netns, mirror_to="pnmown", mirror_create=True)
    with monitors.open("http", interface="eth0", netns=b.netns, mirror_to="pnmown"):
        pass
    assert b.run("ip", "link", "show", "pnmown").returncode == 0  # not ours: kept
    # one left behind by a killed pynetmon (our alias on it) is replaced, and removed at close
    b.run("ip", "link", "add", "pnmleft", "type", "veth", "peer", "name", "pnmleft-p")
    b.run("ip", "link", "set", "dev", "pnmleft", "alias", "pynetmon-mirror")
    with monitors.open("http", interface="eth0", netns=b.netns, mirror_to="pnmleft", mirror_create=True):
        pass
    assert b.run("ip", "link", "show", "pnmleft", check=False).returncode != 0
    with pytest.raises(ConfigError, match="no interface 'nope'"):
        monitors.open("http", interface="eth0", netns=b.netns, mirror_to="nope")


def test_ipv6(hosts, tmp_path):
    a, b = hosts
    quiet(a, b, ipv6=True)
    with StatusServer(b, V6[1], PORT, socket.AF_INET6), Mirrored(hosts, tmp_path) as t:
        assert request(a, V6[1], PORT, ["/200", "/500"], socket.AF_INET6) == [200, 500]
        traced = t.monitor.snapshot()["traced"]
        snap = t.monitor.snapshot()
        wire, mirror = t.captured()
    assert snap["responses"] == {"200": 1, "500": 1}
    assert snap["by_class"]["5xx"]["measured"] == 1
    conns = by_connection(wire)
    (conn,) = conns.values()
    assert collections.Counter(mirror) == collections.Counter(from_trigger(conn))
    assert snap["mirror"]["connections"] == 1
    assert [(x["src"], x["dst"], x["dport"], x["status"]) for x in traced] in ([], [(V6[0], V6[1], PORT, 500)])


def test_one_direction_only(hosts):
    a, b = hosts
    with StatusServer(b, b.ip, PORT), monitors.open("http", interface="eth0", netns=b.netns,
                                                    direction="egress") as m:
        request(a, b.ip, PORT, ["/200", "/500"])
        snap = m.snapshot()
    # egress of the server: responses seen, requests (ingress) not, so no latency either
    assert snap["responses"] == {"200": 1, "500": 1} and snap["requests"] == {}
    assert snap["parse"]["no_request"] == 2


def test_cli_json_and_rest(hosts):
    a, b = hosts
    with StatusServer(b, b.ip, PORT):
        proc = start_cli("monitor", "http", "-i", "eth0", "--netns", b.netns, "--duration", "3", "--json",
                         "--set", 'mirror_on=["5xx", 404]', "--set", "ports=[8888]")
        wait_attached(b, "egress")
        request(a, b.ip, PORT, ["/200", "/404", "/503"])
        snap = finish_json(proc)
        assert snap["responses"] == {"200": 1, "404": 1, "503": 1}
        assert snap["mirror"]["triggers"] == 2 and snap["mirror"]["packets"] == 0  # matched, nowhere to mirror
        with Daemon("--netns", b.netns) as d:
            r = d.client.post("/monitors/h1", json={"kind": "http", "interface": "eth0",
                                                    "options": {"ports": [PORT], "mirror_on": [503]}})
            assert r.status_code == 201, r.text
            bad = d.client.post("/monitors/h2", json={"kind": "http", "interface": "eth0",
                                                      "options": {"mirror_on": ["9xx"]}})
            assert bad.status_code == 400 and bad.json()["problems"][0]["path"] == "options.mirror_on[0]"
            # the daemon is root: a client cannot make it write a pcap file outside its capture directory
            out = d.client.post("/monitors/h3", json={"kind": "http", "interface": "eth0",
                                                      "options": {"mirror_to": "pcap:/etc/pynetmon-test.pcap"}})
            assert out.status_code == 400 and out.json()["problems"][0]["path"] == "options.mirror_to"
            assert "outside the daemon's capture directory" in out.text
            assert not os.path.exists("/etc/pynetmon-test.pcap")
            request(a, b.ip, PORT, ["/200", "/200", "/503"])
            snap = d.client.get("/monitors/h1").json()
            assert snap["responses"] == {"200": 2, "503": 1}
            fams = {f.name: f for f in text_string_to_metric_families(d.client.get("/metrics").text)}
            got = {(s.labels["status"], s.labels["method"]): s.value for s in fams["http_responses"].samples
                   if s.labels.get("monitor") == "h1" and s.name == "http_responses_total"}
            assert got == {("200", "GET"): 2, ("503", "GET"): 1}
            assert d.client.delete("/monitors/h1").status_code == 204
            assert not tc_programs("eth0", "ingress", netns=b.netns)


def test_runs_with_only_bpf_net_admin_perfmon(hosts):
    """What deploy/ grants, no CAP_SYS_ADMIN (the thesis needed it), and no kernel headers at run time:
    the monitor loads, counts, creates its mirror veth and mirrors."""
    if shutil.which("setpriv") is None:
        pytest.fail("setpriv (util-linux) is required for the least-privilege test")
    a, b = hosts
    keep = "-all,+bpf,+net_admin,+perfmon"
    cmd = ["ip", "netns", "exec", b.netns, "setpriv", f"--inh-caps={keep}", f"--ambient-caps={keep}",
           f"--bounding-set={keep}", "--", sys.executable, "-m", "pynetmon", "monitor", "http", "-i", "eth0",
           "--duration", "3", "--json", "--set", "mirror_to=pnmlp0", "--set", "mirror_create=true"]
    with StatusServer(b, b.ip, PORT):
        proc = subprocess.Popen(cmd, cwd=REPO, env=dict(os.environ, PYTHONPATH=str(REPO)),
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        wait_attached(b, "egress")
        request(a, b.ip, PORT, ["/200", "/500"])
        snap = finish_json(proc)
    assert snap["responses"] == {"200": 1, "500": 1}
    assert snap["mirror"]["connections"] == 1 and snap["mirror"]["packets"] >= 1 and snap["mirror"]["errors"] == 0
    assert b.run("ip", "link", "show", "pnmlp0", check=False).returncode != 0  # removed at exit


def test_rst_ends_tracing_and_is_mirrored(hosts, tmp_path):
    a, b = hosts
    with StatusServer(b, b.ip, PORT), Mirrored(hosts, tmp_path) as t:
        sock = a.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.settimeout(5)
        sock.connect((b.ip, PORT))
        sock.sendall(b"GET /500 HTTP/1.1\r\nHost: t\r\n\r\n")
        read_response(sock)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        sock.close()  # linger 0: an RST instead of a FIN
        wire, mirror = t.captured()
        snap = t.monitor.snapshot()
    (conn,) = by_connection(wire).values()
    assert tcp_of(conn[-1]).flags & dpkt.tcp.TH_RST
    assert collections.Counter(mirror) == collections.Counter(from_trigger(conn))
    assert snap["mirror"]["ended"]["rst"] == 1 and snap["traced"] == []

"""ddos: real floods between test hosts through the XDP guard — a flooder is blocked and released while a
well-behaved source loses nothing; manual block/allow/unblock with exact counts; protect; IPv6; bad
options named; close leaves no XDP program."""
from __future__ import annotations

import contextlib
import json
import selectors
import socket
import struct
import threading
import time

import pytest
from service.daemon import Daemon

from pynetmon import monitors, netns
from pynetmon.errors import ConfigError
from pynetmon.link import attach_xdp, xdp_programs
from pynetmon.monitors.ddos import lpm_key, lpm_network, parse_cidr, prefix_mask
from pynetmon.object import BPFObject
from pynetmon.toolchain import compile_c

from .helpers import V6, finish_json, quiet, send_udp, settle, start_cli, udp_sink, wait_started

FLOODER = "192.0.2.77"  # a second address on a's eth0: the flooding source
FLOODER6 = "2001:db8::77"


def _second_address(a) -> None:
    a.run("ip", "addr", "add", f"{FLOODER}/32", "dev", "eth0")


def _drain(sink: socket.socket) -> dict[str, int]:
    """Datagrams waiting on `sink`, per source address."""
    got: dict[str, int] = {}
    sink.setblocking(False)
    while True:
        try:
            _, (src, *_) = sink.recvfrom(2048)
        except BlockingIOError:
            return got
        got[src] = got.get(src, 0) + 1


def _send_from(host, src: str, dst: str, port: int, count: int) -> None:
    s = host.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        s.bind((src, 0))
        for _ in range(count):
            s.sendto(b"x" * 32, (dst, port))
    finally:
        s.close()


def test_flooder_blocked_and_released_while_good_source_loses_nothing(hosts):
    a, b = hosts
    quiet(a, b)
    _second_address(a)
    sink = udp_sink(b, 6001)
    pps, flood, good = 500, 3000, 50
    with monitors.open("ddos", interface="eth0", netns=b.netns, pps=pps, block_seconds=2.0) as m:
        assert xdp_programs("eth0", netns=b.netns)["drv"]  # native XDP on veth
        bad = a.socket(socket.AF_INET, socket.SOCK_DGRAM)
        bad.bind((FLOODER, 0))
        fine = a.socket(socket.AF_INET, socket.SOCK_DGRAM)
        fine.bind((a.ip, 0))
        for i in range(flood):  # both at once: one good datagram every 60 flood datagrams
            bad.sendto(b"x" * 32, (b.ip, 6001))
            if i % 60 == 0:
                fine.sendto(b"x" * 32, (b.ip, 6001))
        settle()
        snap = m.snapshot()
        got = _drain(sink)
        assert got.get(a.ip) == good  # the well-behaved source lost nothing
        flood_passed = got[FLOODER]
        # blocked within its first second: it got its 1 s bucket and at most one more second's refill
        assert pps <= flood_passed < 2 * pps
        assert snap["dropped"] == {"rate": flood - flood_passed, "syn": 0, "blocklist": 0}
        assert snap["passed"] - snap["non_ip"] == good + flood_passed
        [blocked] = snap["blocked"]
        assert (blocked["source"], blocked["reason"], blocked["dropped"]) == (FLOODER, "rate", flood - flood_passed)
        assert blocked["until_ns"] - time.monotonic_ns() <= 2 * 10**9
        top = {t["source"]: t for t in snap["top_sources"]}
        assert top[FLOODER]["packets"] == flood and top[a.ip]["packets"] == good
        assert snap["events"]["block"] == 1
        assert list(m.events(timeout=0.2)) == [{"event": "block", "source": FLOODER, "reason": "rate",
                                                  "until_ns": blocked["until_ns"]}]
        # released automatically after block_seconds, with full buckets
        time.sleep(max(0.0, (blocked["until_ns"] - time.monotonic_ns()) / 1e9) + 0.1)
        _send_from(a, FLOODER, b.ip, 6001, 20)
        settle()
        assert _drain(sink) == {FLOODER: 20}
        assert m.snapshot()["blocked"] == []
        bad.close()
        fine.close()
    sink.close()
    assert xdp_programs("eth0", netns=b.netns) == {"drv": 0, "skb": 0, "hw": 0}  # interface restored


def test_manual_block_allow_unblock_exact(hosts):
    a, b = hosts
    quiet(a, b)
    _second_address(a)
    sink = udp_sink(b, 6002)
    with monitors.open("ddos", interface="eth0", netns=b.netns, mode="generic", pps=0, syn_pps=0,
                       protect=[f"{a.ip}/32"]) as m:
        assert xdp_programs("eth0", netns=b.netns)["skb"]
        m.block("192.0.2.0/24", seconds=60)
        m.block(f"{a.ip}/32")  # protected: never dropped
        _send_from(a, FLOODER, b.ip, 6002, 30)
        _send_from(a, a.ip, b.ip, 6002, 7)
        settle()
        assert _drain(sink) == {a.ip: 7}
        snap = m.snapshot()
        assert snap["dropped"] == {"rate": 0, "syn": 0, "blocklist": 30}
        rules = {r["source"]: r for r in snap["blocked"]}
        assert rules["192.0.2.0/24"]["dropped"] == 30 and rules["192.0.2.0/24"]["reason"] == "blocklist"
        assert rules[f"{a.ip}/32"]["until_ns"] is None and rules[f"{a.ip}/32"]["dropped"] == 0
        allowed = {r["source"]: r for r in snap["allowed"]["rules"]}
        assert allowed[f"{a.ip}/32"] == {"source": f"{a.ip}/32", "packets": 7, "protected": True}
        # allow wins over block
        m.allow(f"{FLOODER}/32")
        _send_from(a, FLOODER, b.ip, 6002, 11)
        settle()
        assert _drain(sink) == {FLOODER: 11}
        m.disallow(f"{FLOODER}/32")
        _send_from(a, FLOODER, b.ip, 6002, 5)
        settle()
        assert _drain(sink) == {}
        assert m.unblock("192.0.2.0/24") == 1
        _send_from(a, FLOODER, b.ip, 6002, 13)
        settle()
        assert _drain(sink) == {FLOODER: 13}
        snap = m.snapshot()
        assert snap["dropped"]["blocklist"] == 35 and snap["allowed"]["packets"] == 7 + 11
        with pytest.raises(ConfigError, match="protected"):
            m.disallow(f"{a.ip}/32")
        with pytest.raises(ConfigError) as err:
            m.block("192.0.2.1/24")  # host bits set
        assert err.value.problems[0][0] == "cidr"
        fams = {f.name: f for f in m.families()}
        assert {s.labels["reason"]: s.value for s in fams["ddos_dropped_packets"].samples
                if s.name.endswith("_total")} == {"rate": 0, "syn": 0, "blocklist": 35}
    sink.close()
    assert xdp_programs("eth0", netns=b.netns) == {"drv": 0, "skb": 0, "hw": 0}


def test_ipv6_prefix_keyed_rate_limit(hosts):
    a, b = hosts
    quiet(a, b, ipv6=True)
    sink = udp_sink(b, 6003, socket.AF_INET6)
    with monitors.open("ddos", interface="eth0", netns=b.netns, pps=100, prefix_v6=64, block_seconds=30) as m:
        send_udp(a, V6[1], 6003, 400, sport=40100)
        settle()
        got = sum(_drain(sink).values())
        snap = m.snapshot()
        m.unblock("fd00:5eed::/64")  # releases the rate-blocked /64
        m.block("fd00:5eed::1/128", seconds=30)
        send_udp(a, V6[1], 6003, 6, sport=40101)
        settle()
        assert _drain(sink) == {}
        assert m.snapshot()["dropped"]["blocklist"] == 6
        m.allow("fd00::/8")
        send_udp(a, V6[1], 6003, 3, sport=40102)
        settle()
        assert sum(_drain(sink).values()) == 3
    sink.close()
    assert 100 <= got < 200 and snap["dropped"]["rate"] == 400 - got
    [blocked] = [x for x in snap["blocked"] if x["reason"] == "rate"]
    assert blocked["source"] == "fd00:5eed::/64"


def test_bad_options_are_named():
    with pytest.raises(ConfigError) as err:
        monitors.create("ddos", "eth0", None, {"pps": -1, "mode": "xdp", "protect": ["10.0.0.0/8", "10.0.0.1/8", "x"],
                                               "prefix_v4": 33, "block_seconds": 0,
                                               "block": [{"cidr": "203.0.113.0/24"}, {"cidr": "y", "seconds": -1}]})
    assert set(dict(err.value.problems)) == {"options.pps", "options.mode", "options.protect[1]",
                                             "options.protect[2]", "options.prefix_v4", "options.block_seconds",
                                             "options.block[1].cidr", "options.block[1].seconds"}
    with pytest.raises(ConfigError, match="needs an interface"):
        monitors.create("ddos")


def test_lpm_keys_and_masks():
    assert lpm_network(lpm_key(parse_cidr("203.0.113.0/24"))) == "203.0.113.0/24"
    assert lpm_network(lpm_key(parse_cidr("2001:db8::/32"))) == "2001:db8::/32"
    assert prefix_mask(24, True) == b"\xff" * 15 + b"\x00"
    assert prefix_mask(64, False) == b"\xff" * 8 + b"\x00" * 8
    assert prefix_mask(128, False) == b"\xff" * 16


def test_syn_flood_source_blocked_and_lists_from_options(hosts):
    a, b = hosts
    quiet(a, b)
    _second_address(a)
    sink = udp_sink(b, 6004)
    with monitors.open("ddos", interface="eth0", netns=b.netns, pps=0, syn_pps=5, block_seconds=30,
                       block=[{"cidr": f"{FLOODER}/32", "seconds": 60}], allow=["192.0.2.64/26"]) as m:
        _send_from(a, FLOODER, b.ip, 6004, 9)  # allowed by the broader allow entry, despite the block
        for _ in range(20):  # SYNs to a closed port; each socket closed in SYN_SENT (no retransmission)
            s = a.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.setblocking(False)
            s.connect_ex((b.ip, 6005))
            s.close()
        settle()
        snap = m.snapshot()
        assert _drain(sink) == {FLOODER: 9}
    sink.close()
    syn_passed = snap["passed"] - snap["non_ip"] - 9
    assert 5 <= syn_passed < 20 and snap["dropped"] == {"rate": 0, "syn": 20 - syn_passed, "blocklist": 0}
    assert {(x["source"], x["reason"]) for x in snap["blocked"]} == {(a.ip, "syn"), (f"{FLOODER}/32", "blocklist")}
    assert snap["allowed"]["packets"] == 9


def test_rest_lists_are_live_options_and_a_failed_update_keeps_the_rules(hosts, tmp_path):
    a, b = hosts
    quiet(a, b)
    _second_address(a)
    sink = udp_sink(b, 6006)
    state = tmp_path / "state.json"
    with Daemon("--netns", b.netns, "--state-file", str(state)) as d:
        body = {"kind": "ddos", "interface": "eth0",
                "options": {"pps": 0, "max_rules": 2, "block": [{"cidr": f"{FLOODER}/32", "seconds": 60}]}}
        r = d.client.post("/monitors/g", json=body)
        assert r.status_code == 201, r.text
        _send_from(a, FLOODER, b.ip, 6006, 10)
        settle()
        assert _drain(sink) == {}
        bad = d.client.put("/monitors/g", json={"options": {"block": [{"cidr": "192.0.2.1/24"}]}})
        assert bad.status_code == 400 and bad.json()["problems"][0]["path"] == "options.block[0].cidr"
        full = d.client.put("/monitors/g", json={"options": {"block": [  # 3 entries in a 2-entry trie
            {"cidr": f"{FLOODER}/32"}, {"cidr": "203.0.113.0/24"}, {"cidr": "198.51.100.0/24"}]}})
        assert full.status_code >= 400, full.text
        _send_from(a, FLOODER, b.ip, 6006, 4)  # the old rule is still in force
        settle()
        assert _drain(sink) == {}
        snap = d.client.get("/monitors/g").json()
        assert snap["dropped"]["blocklist"] == 14
        assert [x["source"] for x in snap["blocked"]] == [f"{FLOODER}/32"]
        assert d.client.put("/monitors/g", json={"options": {"block": []}}).status_code == 200
        _send_from(a, FLOODER, b.ip, 6006, 6)
        settle()
        assert _drain(sink) == {FLOODER: 6}
        assert d.client.put("/monitors/g", json={"options": {"block": [{"cidr": "192.0.2.0/24"}]}}).status_code == 200
    with Daemon("--netns", b.netns, "--state-file", str(state)) as d:  # restored with the updated lists
        assert d.client.get("/monitors").json()[0]["options"]["block"] == [{"cidr": "192.0.2.0/24", "seconds": None}]
        _send_from(a, FLOODER, b.ip, 6006, 3)
        settle()
        assert _drain(sink) == {}
        assert d.client.get("/monitors/g").json()["dropped"]["blocklist"] == 3
        assert d.client.delete("/monitors/g").status_code == 204
    sink.close()
    assert xdp_programs("eth0", netns=b.netns) == {"drv": 0, "skb": 0, "hw": 0}


def test_syn_protected_port_keeps_real_clients_connecting(hosts):
    a, b = hosts
    quiet(a, b)
    _second_address(a)
    server = b.socket(socket.AF_INET, socket.SOCK_STREAM)
    server.bind((b.ip, 6007))
    server.listen(512)
    flood = 200
    with monitors.open("ddos", interface="eth0", netns=b.netns, pps=0, syn_pps=0, port_syn_pps=50,
                       syn_share_pps=10) as m:
        for _ in range(flood):  # SYNs from the flooder, each socket closed in SYN_SENT
            s = a.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind((FLOODER, 0))
            s.setblocking(False)
            s.connect_ex((b.ip, 6007))
            s.close()
        settle()
        mid = m.snapshot()
        events = list(m.events(timeout=0.2))
        for _ in range(5):  # a real client during the protection: within its share, every one connects
            c = a.socket(socket.AF_INET, socket.SOCK_STREAM)
            c.settimeout(5)
            c.bind((a.ip, 0))
            c.connect((b.ip, 6007))
            c.close()
        snap = m.snapshot()
    server.close()
    [port] = mid["syn_ports"]
    assert port["port"] == 6007 and port["protected"] and port["syns"] == flood
    # the port's bucket (50) and then the flooder's share (10, plus a refill while it sends)
    assert 0 < mid["dropped"]["syn"] == port["dropped"] <= flood - 60 and mid["events"]["protect"] == 1
    assert [(e["event"], e["port"]) for e in events] == [("protect", 6007)]
    assert snap["dropped"]["syn"] == mid["dropped"]["syn"]  # none of the client's packets were dropped
    assert snap["dropped"]["rate"] == snap["dropped"]["blocklist"] == 0


def test_cli_blacklist_flag_as_the_article(hosts):
    """`--blacklist IP SECONDS` (the article's controller flag) drops IP; `--set block=[...]` is the same.
    `--whitelist CIDR` allows, and wins over a block."""
    a, b = hosts
    quiet(a, b)
    _second_address(a)
    sink = udp_sink(b, 6008)
    proc = start_cli("monitor", "ddos", "-i", "eth0", "--netns", b.netns, "--duration", "3", "--json",
                     "--blacklist", FLOODER, "60", "--blacklist", a.ip, "60", "--whitelist", f"{a.ip}/32",
                     "--set", "pps=0")
    wait_started(proc)
    _send_from(a, FLOODER, b.ip, 6008, 8)
    _send_from(a, a.ip, b.ip, 6008, 4)
    settle()
    assert _drain(sink) == {a.ip: 4}
    snap = finish_json(proc)
    sink.close()
    assert snap["dropped"]["blocklist"] == 8
    assert sorted((x["source"], x["reason"], x["dropped"]) for x in snap["blocked"]) == sorted(
        [(f"{FLOODER}/32", "blocklist", 8), (f"{a.ip}/32", "blocklist", 0)])
    assert snap["allowed"]["rules"] == [{"source": f"{a.ip}/32", "packets": 4, "protected": False}]
    assert xdp_programs("eth0", netns=b.netns) == {"drv": 0, "skb": 0, "hw": 0}


def _frame(src: str) -> bytes:
    """A 60-byte UDP frame from `src` (IPv4)."""
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 46, 1, 0, 64, 17, 0, socket.inet_aton(src), socket.inet_aton("198.18.0.2"))
    return b"\x02" * 6 + b"\x04" * 6 + b"\x08\x00" + ip + struct.pack("!HHHH", 40000, 5201, 26, 0) + bytes(18)


@pytest.mark.parametrize(("options", "passed"), [({"pps": 100}, 100), ({"pps": 0, "bps": 8 * 60 * 10}, 10)])
def test_bucket_is_exact_in_test_run(hosts, options, passed):
    """1,000 identical frames within a millisecond (BPF_PROG_TEST_RUN): exactly one bucket passes — 100
    packets at pps=100, 10 frames of 60 bytes at 4,800 bit/s — and the source is blocked once."""
    a, b = hosts
    quiet(a, b)  # no IPv6 chatter reaching the program beside the test run's frames
    with monitors.open("ddos", interface="eth0", netns=b.netns, **options) as m:
        m.objects[0].programs["ddos_xdp"].test_run(_frame("203.0.113.9"), 1000)
        snap = m.snapshot()
    assert snap["passed"] - snap["non_ip"] == passed and snap["dropped"]["rate"] == 1000 - passed
    assert [(x["source"], x["reason"], x["dropped"]) for x in snap["blocked"]] == [("203.0.113.9", "rate", 1000 - passed)]
    assert snap["events"]["block"] == 1


TX_XDP = '#include <linux/bpf.h>\n#include <bpf/bpf_helpers.h>\nchar LICENSE[] SEC("license") = "GPL";\n' \
         'SEC("xdp") int tx(struct xdp_md *ctx) { return XDP_TX; }\n'


def test_live_frames_flood_through_native_veth_counted_exactly(hosts):
    """The flood benchmark's path: XDP_TX live frames (BPF_F_TEST_XDP_LIVE_FRAMES) leave a's veth end into
    the guard in native mode on b's. At pps=1 the source's first frame passes and every later one (within
    its 1 s bucket) is dropped; the guard's counters agree exactly with the frames b's eth0 received."""
    a, b = hosts
    quiet(a, b)
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 46, 1, 0, 64, 17, 0, socket.inet_aton(a.ip), socket.inet_aton(b.ip))
    frame = bytes.fromhex(b.mac.replace(":", "") + a.mac.replace(":", "")) + b"\x08\x00" + ip + \
        struct.pack("!HHHH", 40000, 5201, 26, 0) + bytes(18)

    def rx() -> int:
        return int(json.loads(b.run("ip", "-s", "-j", "link", "show", "eth0").stdout)[0]["stats64"]["rx"]["packets"])

    with BPFObject(compile_c(TX_XDP), name="tx") as tx, \
            monitors.open("ddos", interface="eth0", netns=b.netns, pps=1, block_seconds=60) as m:
        tx.load()
        before = rx()
        with netns.enter(a.netns):
            tx.programs["tx"].run_live_frames(frame, 20_000, socket.if_nametoindex("eth0"))
        received = rx() - before
        snap = m.snapshot()
    assert received > 10_000  # the veth ring may refuse some under load; those never reach the guard
    assert snap["passed"] - snap["non_ip"] == 1 and snap["dropped"]["rate"] == received - 1
    assert [(x["source"], x["dropped"]) for x in snap["blocked"]] == [(a.ip, received - 1)]


def test_list_counts_follow_every_change(hosts):
    """The kernel skips an empty list (struct ddos_lists): every way of adding or removing an entry keeps
    the counts true, so a block is in force as soon as block() returns and gone after unblock()."""
    a, b = hosts
    quiet(a, b)
    frame = _frame("203.0.113.9")
    with monitors.open("ddos", interface="eth0", netns=b.netns, pps=0, syn_pps=0, protect=["192.0.2.10/32"]) as m:
        prog = m.objects[0].programs["ddos_xdp"]
        lists = next(v for k, v in m.objects[0].maps.items() if k.endswith(".bss"))

        def counts() -> tuple[int, int]:
            return struct.unpack("=II", bytes(lists.lookup(bytes(4))))

        assert counts() == (1, 0)  # protect is on the allow list before the first packet
        assert prog.test_run(frame).retval == 2  # XDP_PASS
        m.block("203.0.113.0/24", seconds=60)
        assert counts() == (1, 1) and prog.test_run(frame).retval == 1  # XDP_DROP
        m.allow("203.0.113.9")
        assert counts() == (2, 1) and prog.test_run(frame).retval == 2
        m.disallow("203.0.113.9")
        assert counts() == (1, 1) and prog.test_run(frame).retval == 1
        m.unblock("203.0.113.0/24")
        assert counts() == (1, 0) and prog.test_run(frame).retval == 2
        m.update(block=[{"cidr": "203.0.113.0/24", "seconds": 60}])
        assert counts() == (1, 1) and prog.test_run(frame).retval == 1
        m.update(block=[])
        assert counts() == (1, 0) and prog.test_run(frame).retval == 2


PASS_XDP = TX_XDP.replace("int tx", "int pass_all").replace("XDP_TX", "XDP_PASS")
TCPI_OPT_TIMESTAMPS = 1  # tcp_info.tcpi_options (byte 5): the connection uses timestamps


def _echo_server(sock: socket.socket, stop: threading.Event) -> None:
    """Echo what each connection sends first, never waiting on one: the flooder's sockets complete their
    handshakes too (their kernel answers the SYN-ACKs) and never send a byte."""
    sel = selectors.DefaultSelector()
    sock.setblocking(False)
    sel.register(sock, selectors.EVENT_READ)
    while not stop.is_set():
        for key, _ in sel.select(0.1):
            if key.fileobj is sock:
                try:
                    conn, _ = sock.accept()
                except BlockingIOError:
                    continue
                conn.setblocking(False)
                sel.register(conn, selectors.EVENT_READ)
                continue
            conn = key.fileobj  # type: ignore[assignment]
            sel.unregister(conn)
            try:
                conn.sendall(conn.recv(64))
            except OSError:
                pass
            conn.close()
    for key in list(sel.get_map().values()):
        if key.fileobj is not sock:
            key.fileobj.close()  # type: ignore[union-attr]
    sel.close()


@pytest.mark.parametrize(("family", "mode"), [(socket.AF_INET, "native"), (socket.AF_INET6, "native"),
                                            (socket.AF_INET, "generic")])
def test_syncookies_answer_a_syn_flood_while_real_clients_connect(hosts, family, mode):
    """syncookies=true: a SYN flood (real SYNs from the flooder's kernel) switches the port into protection;
    its SYNs are answered in XDP with the kernel's SYN cookies, and 20 real clients, connecting during the
    flood, all complete and exchange data — most of them through an XDP cookie (the XDP SYN-ACK offers no
    timestamps, the listener's own does). tcp_syncookies is 2 while the guard runs, as before afterwards.
    IPv4 and IPv6, native XDP; IPv4 in generic XDP."""
    a, b = hosts
    v6 = family == socket.AF_INET6
    quiet(a, b, ipv6=v6)
    flooder, a_ip, b_ip = (FLOODER6, V6[0], V6[1]) if v6 else (FLOODER, a.ip, b.ip)
    a.run("ip", "addr", "add", f"{flooder}/{128 if v6 else 32}", "dev", "eth0", *(["nodad"] if v6 else []))
    sysctl = "/proc/sys/net/ipv4/tcp_syncookies"

    def syncookies_sysctl() -> str:
        with b.enter(), open(sysctl) as f:
            return f.read().strip()

    before = syncookies_sysctl()
    # The listener accepts a cookie only after sending one itself within two minutes: the SYNs the guard
    # lets on to it must be answerable, so b routes the (unreachable) flooder as a server has a default route.
    b.run("ip", "-6" if v6 else "-4", "route", "add", "default", "via", a_ip)
    server = b.socket(family, socket.SOCK_STREAM)
    server.bind((b_ip, 6009))
    server.listen(4096)
    stop = threading.Event()
    threads = [threading.Thread(target=_echo_server, args=(server, stop), daemon=True)]

    def flood() -> None:
        while not stop.is_set():
            for _ in range(50):  # SYNs from the flooder, each socket closed in SYN_SENT
                s = a.socket(family, socket.SOCK_STREAM)
                s.bind((flooder, 0))
                s.setblocking(False)
                s.connect_ex((b_ip, 6009))
                s.close()
            time.sleep(0.01)

    threads.append(threading.Thread(target=flood, daemon=True))
    options, echoed = [], 0
    try:
        # A veth end takes XDP_TX frames from its peer only with NAPI on, i.e. with an XDP program (or GRO):
        # a's eth0 gets one that passes everything, as a NIC would simply receive them.
        with BPFObject(compile_c(PASS_XDP), name="pass_all") as pass_all:
            pass_all.load()
            stack = contextlib.ExitStack()
            stack.enter_context(attach_xdp(pass_all.programs["pass_all"], "eth0", "native", netns=a.netns))
        with stack, monitors.open("ddos", interface="eth0", netns=b.netns, pps=0, syn_pps=0, port_syn_pps=50,
                                  syncookies=True, mode=mode) as m:
            assert syncookies_sysctl() == "2"
            for t in threads:
                t.start()
            deadline = time.monotonic() + 10
            while m.snapshot()["syncookies"]["sent"] < 100 and time.monotonic() < deadline:
                time.sleep(0.05)
            for i in range(20):
                c = a.socket(family, socket.SOCK_STREAM)
                c.settimeout(5)
                c.bind((a_ip, 0))
                c.connect((b_ip, 6009))
                c.sendall(b"hello %d" % i)
                echoed += c.recv(64) == b"hello %d" % i
                options.append(c.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 8)[5])
                c.close()
            snap = m.snapshot()
            stop.set()
    finally:
        stop.set()
        for t in threads:
            t.join(10)
        server.close()
    assert echoed == 20
    assert snap["syn_ports"][0]["port"] == 6009 and snap["syn_ports"][0]["protected"]
    assert snap["syncookies"]["sent"] >= 100 and snap["syncookies"]["to_kernel"] >= 1
    assert snap["dropped"] == {"rate": 0, "syn": 0, "blocklist": 0}  # answered, not dropped
    via_xdp = sum(1 for o in options if not o & TCPI_OPT_TIMESTAMPS)
    assert via_xdp >= 15, options  # one SYN a second goes on to the listener; the rest get XDP's cookie
    assert syncookies_sysctl() == before


def test_syncookies_needs_port_protection():
    with pytest.raises(ConfigError, match="syncookies needs port_syn_pps"):
        monitors.open("ddos", interface="eth0", syncookies=True)


def test_rest_actions_persist_blocks_and_allows_across_a_restart(hosts, tmp_path):
    """POST /monitors/NAME/block|unblock|allow|disallow run the monitor's methods; the state file keeps the
    blocks and allows they made (with the time left), so a restarted daemon drops and passes as before."""
    a, b = hosts
    quiet(a, b)
    _second_address(a)
    sink = udp_sink(b, 6010)
    state = tmp_path / "state.json"
    with Daemon("--netns", b.netns, "--state-file", str(state)) as d:
        r = d.client.post("/monitors/g", json={"kind": "ddos", "interface": "eth0", "options": {"pps": 0}})
        assert r.status_code == 201, r.text
        r = d.client.post("/monitors/g/block", json={"cidr": f"{FLOODER}/32", "seconds": 600})
        assert r.status_code == 200 and r.json() == {"action": "block", "result": None}, r.text
        assert d.client.post("/monitors/g/block", json={"cidr": "203.0.113.0/24", "seconds": 0.5}).status_code == 200
        assert d.client.post("/monitors/g/block", json={"cidr": "198.51.100.0/24"}).status_code == 200
        assert d.client.post("/monitors/g/allow", json={"cidr": "10.0.0.0/8"}).status_code == 200
        assert d.client.post("/monitors/g/allow", json={"cidr": "10.9.0.0/16"}).status_code == 200
        assert d.client.post("/monitors/g/disallow", json={"cidr": "10.9.0.0/16"}).status_code == 200
        assert d.client.post("/monitors/g/unblock", json={"cidr": "198.51.100.0/24"}).json()["result"] == 1
        bad = d.client.post("/monitors/g/block", json={"cidr": "192.0.2.1/24"})
        assert bad.status_code == 400 and bad.json()["problems"][0]["path"] == "args.cidr", bad.text
        unknown = d.client.post("/monitors/g/reboot", json={})
        assert unknown.status_code == 400 and "block" in unknown.json()["problems"][0]["reason"], unknown.text
        _send_from(a, FLOODER, b.ip, 6010, 5)
        settle()
        assert _drain(sink) == {}
        runtime = json.loads(state.read_text())["cubes"][0]["runtime"]
        assert sorted(x["cidr"] for x in runtime["block"]) == ["192.0.2.77/32", "203.0.113.0/24"]
        assert runtime["allow"] == ["10.0.0.0/8"]
        time.sleep(0.6)  # the 0.5 s block runs out before the restart
    with Daemon("--netns", b.netns, "--state-file", str(state)) as d:
        snap = d.client.get("/monitors/g").json()
        blocked = {x["source"]: x for x in snap["blocked"]}
        assert set(blocked) == {f"{FLOODER}/32"}  # the expired one and the unblocked one stay gone
        left = (blocked[f"{FLOODER}/32"]["until_ns"] - time.monotonic_ns()) / 1e9
        assert 500 < left <= 600  # the time it had left, not a new 600 s
        assert [x["source"] for x in snap["allowed"]["rules"]] == ["10.0.0.0/8"]
        _send_from(a, FLOODER, b.ip, 6010, 3)
        settle()
        assert _drain(sink) == {}
        assert d.client.get("/monitors/g").json()["dropped"]["blocklist"] == 3
        assert d.client.delete("/monitors/g").status_code == 204
    sink.close()


def test_option_list_update_leaves_runtime_entries(hosts):
    """An entry both in an option list and made with block()/allow() stays when the option list drops it."""
    a, b = hosts
    quiet(a, b)
    frame = _frame("203.0.113.9")
    with monitors.open("ddos", interface="eth0", netns=b.netns, pps=0, syn_pps=0,
                       block=[{"cidr": "203.0.113.0/24"}], allow=["198.51.100.0/24"]) as m:
        prog = m.objects[0].programs["ddos_xdp"]
        m.block("203.0.113.0/24", seconds=600)
        m.allow("198.51.100.0/24")
        m.update(block=[], allow=[])
        assert prog.test_run(frame).retval == 1  # XDP_DROP: the block() stays
        assert [x["source"] for x in m.snapshot()["allowed"]["rules"]] == ["198.51.100.0/24"]
        assert m.runtime_state()["block"][0]["cidr"] == "203.0.113.0/24"


def test_syncookies_sysctl_is_shared_by_the_guards_of_a_namespace(hosts):
    """The first guard with syncookies in a namespace sets tcp_syncookies=2, the last one to close puts
    back what the first found."""
    from pynetmon.monitors.ddos import _SYNCOOKIES

    _, b = hosts

    def value() -> str:
        with b.enter(), open("/proc/sys/net/ipv4/tcp_syncookies") as f:
            return f.read().strip()

    before = value()
    _SYNCOOKIES.acquire(b.netns)
    _SYNCOOKIES.acquire(b.netns)
    assert value() == "2"
    _SYNCOOKIES.release(b.netns)
    assert value() == "2"
    _SYNCOOKIES.release(b.netns)
    assert value() == before


def _tcp_frame(src: str, dst: str, sport: int, dport: int, flags: int, seq: int, ack: int) -> bytes:
    """An IPv4 TCP segment without options or payload (60 bytes with padding)."""
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 40, 1, 0x4000, 64, 6, 0, socket.inet_aton(src), socket.inet_aton(dst))
    tcp = struct.pack("!HHIIBBHHH", sport, dport, seq, ack, 5 << 4, flags, 64240, 0, 0)
    return b"\x02" * 6 + b"\x04" * 6 + b"\x08\x00" + ip + tcp + bytes(6)


def test_syncookies_drop_acks_the_listener_would_refuse(hosts):
    """While a port is protected, an ACK that only its listener would see must carry a valid cookie: a bogus
    one is dropped in XDP (counted), the ACK answering the guard's own SYN-ACK passes, and a segment of an
    established connection passes (the socket lookup finds it). BPF_PROG_TEST_RUN in b's namespace, as if
    the frames arrived on b's eth0."""
    a, b = hosts
    quiet(a, b)
    server = b.socket(socket.AF_INET, socket.SOCK_STREAM)
    server.bind((b.ip, 6012))
    server.listen(16)
    with monitors.open("ddos", interface="eth0", netns=b.netns, pps=0, syn_pps=0, port_syn_pps=1,
                       syncookies=True) as m:
        client = a.socket(socket.AF_INET, socket.SOCK_STREAM)
        client.settimeout(5)
        client.connect((b.ip, 6012))  # before the port is protected
        cport = client.getsockname()[1]
        prog = m.objects[0].programs["ddos_xdp"]
        with b.enter():
            ifindex = socket.if_nametoindex("eth0")

            def run(frame: bytes):
                return prog.test_run(frame, ctx=struct.pack("6I", 0, len(frame), 0, ifindex, 0, 0))

            syn = _tcp_frame("203.0.113.9", b.ip, 4444, 6012, 0x02, 1000, 0)
            # the client's SYN took the port's bucket of 1: this one protects the port and goes on to the
            # listener (the first SYN of a protected port each second does)
            assert run(syn).retval == 2
            synack = run(syn)
            assert synack.retval == 3  # XDP_TX
            cookie = struct.unpack_from("!I", synack.data, 14 + 20 + 4)[0]
            good = run(_tcp_frame("203.0.113.9", b.ip, 4444, 6012, 0x10, 1001, (cookie + 1) & 0xFFFFFFFF))
            bogus = run(_tcp_frame("203.0.113.9", b.ip, 4445, 6012, 0x10, 5000, 123456))
            established = run(_tcp_frame(a.ip, b.ip, cport, 6012, 0x10, 1, 1))
        snap = m.snapshot()
        client.close()
    server.close()
    assert (good.retval, bogus.retval, established.retval) == (2, 1, 2)  # XDP_PASS, XDP_DROP, XDP_PASS
    assert snap["syncookies"] == {"sent": 1, "to_kernel": 1, "bad_acks": 1}
    assert snap["dropped"]["syn"] == 1 and snap["syn_ports"][0]["dropped"] == 1

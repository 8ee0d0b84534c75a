"""The pieces every monitor shares: flow key decoding, the packet parser (through BPF_PROG_TEST_RUN on
crafted frames), cardinality bounds, namespaces, self-cost, read-only knobs."""
from __future__ import annotations

import os
import socket
import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pynetmon import netns
from pynetmon.errors import Error, LoadError
from pynetmon.monitors import flowkey, selfcost
from pynetmon.monitors.cardinality import SeriesTTL, top_keys
from pynetmon.object import BPFObject

# -- flow keys (pure) ---------------------------------------------------------------------------
v4 = st.ip_addresses(v=4).map(str)
v6 = st.ip_addresses(v=6).map(str).filter(lambda a: not a.startswith("::ffff:"))


@given(st.one_of(st.tuples(v4, v4), st.tuples(v6, v6)), st.integers(0, 65535), st.integers(0, 65535),
       st.sampled_from(["tcp", "udp", "icmp", "icmpv6", 47]), st.sampled_from(flowkey.DIRECTIONS))
def test_flow_key_round_trip(addrs, sport, dport, proto, direction):
    key = flowkey.FlowKey(addrs[0], addrs[1], sport, dport, proto, direction)
    raw = flowkey.encode(key)
    assert len(raw) == flowkey.KEY_SIZE == 40
    assert flowkey.decode(raw) == key
    assert list(flowkey.decode_many(raw * 3, 3)) == [key] * 3


def test_flow_key_layout_is_the_c_layout():
    raw = flowkey.encode(flowkey.FlowKey("10.0.0.1", "10.0.0.2", 1, 0x0203, "udp", "egress"))
    assert raw[:16] == bytes(10) + b"\xff\xff" + bytes([10, 0, 0, 1])  # IPv4-mapped
    assert raw[32:36] == b"\x00\x01\x02\x03"  # ports in network order
    assert raw[36:] == bytes([17, 4, 1, 0])  # proto, family, direction, pad
    with pytest.raises(ValueError, match="different families"):
        flowkey.encode(flowkey.FlowKey("10.0.0.1", "::1", 1, 2, "udp"))
    with pytest.raises(ValueError, match="unknown protocol 'sctpx'"):
        flowkey.proto_number("sctpx")


# -- the kernel parser --------------------------------------------------------------------------
ETH = b"\x02" * 6 + b"\x04" * 6


def _ipv4(proto: int, payload: bytes, src="10.0.0.1", dst="10.0.0.2", frag_off=0) -> bytes:
    hdr = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(payload), 1, frag_off, 64, proto, 0,
                      socket.inet_aton(src), socket.inet_aton(dst))
    return hdr + payload


def _ipv6(nexthdr: int, payload: bytes, src="2001:db8::1", dst="2001:db8::2") -> bytes:
    return struct.pack("!IHBB16s16s", 6 << 28, len(payload), nexthdr, 64, socket.inet_pton(socket.AF_INET6, src),
                       socket.inet_pton(socket.AF_INET6, dst)) + payload


UDP = struct.pack("!HHHH", 1234, 53, 12, 0) + b"abcd"
TCP_SYN = struct.pack("!HHIIBBHHH", 40000, 80, 1, 0, 5 << 4, 0x02, 1024, 0, 0)
ICMP_ECHO = bytes([8, 0, 0, 0, 0, 1, 0, 1])
HOPOPTS = bytes([17, 0, 1, 4, 0, 0, 0, 0])  # next: UDP, 8 bytes, PadN


@pytest.fixture
def flows_object(bpf):
    with BPFObject.from_package("monitors/flows") as obj:
        obj.load()
        yield obj


def _parsed(obj: BPFObject, frame: bytes, program: str = "flows_ingress") -> dict:
    obj.programs[program].test_run(frame)
    keys, _values, n = obj.maps["flows_table"].read_raw(delete=True)
    return {k: None for k in flowkey.decode_many(keys, n)}


@pytest.mark.parametrize("frame, key", [
    (ETH + b"\x08\x00" + _ipv4(17, UDP), ("10.0.0.1", "10.0.0.2", 1234, 53, "udp")),
    (ETH + b"\x08\x00" + _ipv4(6, TCP_SYN), ("10.0.0.1", "10.0.0.2", 40000, 80, "tcp")),
    (ETH + b"\x08\x00" + _ipv4(1, ICMP_ECHO), ("10.0.0.1", "10.0.0.2", 8, 0, "icmp")),
    (ETH + b"\x81\x00\x00\x05\x08\x00" + _ipv4(17, UDP), ("10.0.0.1", "10.0.0.2", 1234, 53, "udp")),
    (ETH + b"\x88\xa8\x00\x05\x81\x00\x00\x06\x08\x00" + _ipv4(17, UDP), ("10.0.0.1", "10.0.0.2", 1234, 53, "udp")),
    (ETH + b"\x08\x00" + _ipv4(17, UDP, frag_off=10), ("10.0.0.1", "10.0.0.2", 0, 0, "udp")),
    (ETH + b"\x86\xdd" + _ipv6(17, UDP), ("2001:db8::1", "2001:db8::2", 1234, 53, "udp")),
    (ETH + b"\x86\xdd" + _ipv6(0, HOPOPTS + UDP), ("2001:db8::1", "2001:db8::2", 1234, 53, "udp")),
    (ETH + b"\x86\xdd" + _ipv6(58, bytes([128, 0, 0, 0, 0, 1, 0, 1])), ("2001:db8::1", "2001:db8::2", 128, 0, "icmpv6")),
    (ETH + b"\x08\x00" + _ipv4(17, UDP[:4]), ("10.0.0.1", "10.0.0.2", 0, 0, "udp")),  # truncated UDP header
])
def test_parser_fills_the_flow_key(flows_object, frame, key):
    assert list(_parsed(flows_object, frame)) == [flowkey.FlowKey(*key)]


def test_parser_rejects_what_is_not_ip(flows_object):
    arp = ETH + b"\x08\x06" + bytes(28)
    assert _parsed(flows_object, arp) == {}
    # (XDP: the kernel's test run refuses an skb whose IPv6 header is cut short before the program runs)
    assert _parsed(flows_object, ETH + b"\x86\xdd" + bytes(10), "flows_xdp") == {}
    assert sum(flows_object.maps["flows_counters"].lookup(1)) == 2  # FLOWS_CTR_NON_IP


# -- cardinality (pure) -------------------------------------------------------------------------
def test_top_keys_keeps_the_largest_and_sums_the_rest():
    assert top_keys({"a": 5, "b": 1, "c": 3}, 2) == ({"a": 5, "c": 3}, 1, 1)
    assert top_keys({"a": 5}, 2) == ({"a": 5}, 0, 0)
    assert top_keys({"a": (1, 9), "b": (2, 0)}, 1, weight=lambda v: v[0]) == ({"b": (2, 0)}, 1, 1)


def test_series_ttl_drops_keys_that_stop_changing_or_vanish():
    now = [0.0]
    ttl = SeriesTTL(10, clock=lambda: now[0])
    assert ttl.observe({"a": 1, "b": 1}) == {"a": 1, "b": 1}
    now[0] = 5
    assert ttl.observe({"a": 2}) == {"a": 2, "b": 1}  # b vanished: keeps its last value for a while
    now[0] = 11
    assert ttl.observe({"a": 2}) == {"a": 2}  # b gone for > 10 s
    now[0] = 16
    assert ttl.observe({"a": 2}) == {}  # a unchanged for > 10 s
    now[0] = 17
    assert ttl.observe({"a": 2}) == {}  # still unchanged: stays out
    assert ttl.observe({"a": 3}) == {"a": 3}  # changes again: back


# -- namespaces -------------------------------------------------------------------------------
def test_netns_inode_by_name_and_path(hosts):
    a, _ = hosts
    by_name = netns.inode(a.netns)
    assert by_name == os.stat(f"/run/netns/{a.netns}").st_ino
    assert netns.inode(f"/run/netns/{a.netns}") == by_name != netns.inode(None)
    assert netns.cookie(a.netns) != netns.cookie(None)


@pytest.mark.parametrize("name, words", [("no-such-ns", "no network namespace 'no-such-ns'"),
                                         ("..", "not a network namespace name"),
                                         ("/etc/hostname", "is not a network namespace")])
def test_netns_bad_names_are_named(name, words):
    with pytest.raises(Error, match=words):
        netns.inode(name)


# -- self-cost and knobs ------------------------------------------------------------------------
def test_self_cost_counts_runs(counter_object):
    selfcost.STATS.acquire()
    try:
        counter_object.programs["count_ingress"].test_run(bytes(64), repeat=25)
        cost = selfcost.cost([counter_object])
    finally:
        selfcost.STATS.release()
    assert cost["stats"] in ("BPF_ENABLE_STATS", "sysctl")
    assert cost["programs"]["count_ingress"]["run_count"] == 25
    assert cost["run_count"] == 25 and cost["run_time_ns"] > 0
    assert cost["maps_bytes"] > 0
    names = {f.name: f for f in selfcost.families(cost)}
    assert next(s.labels for s in names["pynetmon_program_run_count"].samples if s.name.endswith("_total")) \
        == {"program": "count_egress"}


def test_set_rodata_names_unknown_globals(bpf):
    with BPFObject.from_package("monitors/flows") as obj:
        with pytest.raises(LoadError, match="it has flows_keep"):
            obj.set_rodata(nope=1)
        obj.set_rodata(flows_keep=3)
        obj.load()
        assert obj.maps["flows.rodata"].lookup(0) == b"\x03\x00\x00\x00"


def test_attach_tracing_names_what_is_wrong(flows_object):
    from pynetmon.link import attach_tracing
    with pytest.raises(Error, match="has no program 'nope'"):
        attach_tracing(flows_object, "nope")
    with pytest.raises(Error, match="section 'tc' is not a tracing hook"):
        attach_tracing(flows_object, "flows_ingress")


def test_cli_set_values_are_json_where_they_parse():
    from pynetmon.cli.monitor import parse_options
    assert parse_options(["top=10", "mode=xdp", 'aggregate=["src"]', "stacks=true", "name=a=b"]) == \
        {"top": 10, "mode": "xdp", "aggregate": ["src"], "stacks": True, "name": "a=b"}
    with pytest.raises(Error, match="--set top: expected KEY=VALUE"):
        parse_options(["top"])


def test_with_labels_puts_the_monitor_label_on_every_sample():
    from prometheus_client.core import CounterMetricFamily

    from pynetmon.monitors.exposition import with_labels
    fam = CounterMetricFamily("x", "x", labels=["monitor", "k"])
    fam.add_metric(["spoofed", "1"], 3)
    [out] = with_labels([fam], {"monitor": "m1"})
    assert [s.labels for s in out.samples] == [{"monitor": "m1", "k": "1"}]
    assert fam.samples[0].labels["monitor"] == "spoofed"  # the original is not changed


def test_without_cap_sys_admin_run_time_is_null_with_the_reason(hosts):
    """Least privilege (CAP_BPF, CAP_NET_ADMIN, CAP_PERFMON): BPF_ENABLE_STATS is refused, the sysctl is
    left alone, and the snapshot says why its run counts are null."""
    import json
    import shutil
    import sys

    from .helpers import REPO
    _a, b = hosts
    assert shutil.which("setpriv"), "setpriv (util-linux) is required for the least-privilege test"
    keep = "-all,+bpf,+net_admin,+perfmon"
    proc = b.run("setpriv", f"--inh-caps={keep}", f"--ambient-caps={keep}", f"--bounding-set={keep}", "--",
                 sys.executable, "-m", "pynetmon", "monitor", "flows", "-i", "eth0", "--duration", "0.5", "--json",
                 cwd=REPO)
    cost = json.loads(proc.stdout)["self"]
    if selfcost.sysctl_enabled():  # somebody turned the global statistics on: then they count
        assert cost["stats"] == "sysctl" and cost["run_time_ns"] is not None
        return
    assert cost["run_count"] is None and cost["run_time_ns"] is None
    assert "BPF_ENABLE_STATS" in cost["stats"] and "CAP_SYS_ADMIN" in cost["stats"]
    assert "kernel.bpf_stats_enabled=1" in cost["stats"]
    assert cost["maps_bytes"] > 0

"""A capture on a test host holds what was sent and exactly what tcpdump, running on the same veth with the
same filter, snaplen and direction at the same time, records - packet by packet, byte for byte."""
from __future__ import annotations

import subprocess
import time
from collections import Counter

import dpkt
import pytest

from pynetmon.capture import PacketCapture

from .helpers import (
    LiveTcpdump,
    dpkt_reader_packets,
    ping,
    read_pcap,
    send_tcp,
    send_udp,
    tcp_sink,
    tcpdump_count,
    udp_payloads,
)

CASES = [
    # filter, snaplen, direction
    ("udp port 7000", 96, "bidirectional"),
    ("icmp", 64, "egress"),
    ("tcp", 262144, "ingress"),
    ("udp or icmp", 1500, "bidirectional"),
    ("all", 80, "bidirectional"),  # (tcpdump records 58 bytes for -s 60: a libpcap quirk)
    ("ip[9] = 17 and len > 200", 130, "egress"),  # absolute loads only, and the wire length
]


def mixed_traffic(a, b) -> dict[int, list[bytes]]:
    """UDP to two ports both ways, pings, one short TCP exchange; returns the UDP payloads by port."""
    sent = {7000: udp_payloads(12, b"u7000"), 7001: udp_payloads(8, b"u7001", size=40)}
    with tcp_sink(b, 7002):
        send_udp(a, b.ip, 7000, sent[7000][:6])
        send_udp(b, a.ip, 7000, sent[7000][6:])
        send_udp(a, b.ip, 7001, sent[7001])
        ping(a, b.ip, 3)
        send_tcp(a, b.ip, 7002, b"hello over tcp " * 20)
    return sent


@pytest.mark.parametrize(("expr", "snaplen", "direction"), CASES)
def test_capture_equals_live_tcpdump_and_what_was_sent(quiet_hosts, tmp_path, expr, snaplen, direction):
    a, b = quiet_hosts
    live = LiveTcpdump(a, tmp_path / "tcpdump.pcap", expr, snaplen, direction)
    expect = None
    try:
        cap = PacketCapture("t", capture=direction, filter=expr, snaplen=snaplen, dump=tmp_path / "ours")
        cap.attach("eth0", netns=a.netns)
        before = time.time_ns()
        sent = mixed_traffic(a, b)
        after = time.time_ns()
        cap.detach()
        expect = cap.stats()["delivered"]
    finally:
        theirs = live.stop(expect)
    ours = read_pcap(tmp_path / "ours.pcap")
    stats = cap.stats()

    # the file: nanosecond magic, Ethernet, the configured snaplen
    assert (ours.magic, ours.linktype, ours.snaplen) == (0xA1B23C4D, 1, snaplen)
    assert ours.packets, "the filter matched none of the traffic"
    # the same packets as tcpdump: data, captured length and original length
    assert Counter(p.key() for p in ours.packets) == Counter(p.key() for p in theirs.packets)
    for packet in ours.packets:
        assert packet.caplen == min(snaplen, packet.wirelen) == len(packet.data)
        assert before <= packet.ts_ns <= after  # wall-clock time, nanoseconds
    # counters agree with the file
    assert stats["captured"] == stats["delivered"] == len(ours.packets)
    assert stats["dropped"] == stats["errors"] == 0
    assert stats["seen"] >= stats["matched"] == len(ours.packets)
    # readers: tcpdump (also refiltering the file with the same expression), dpkt
    assert tcpdump_count(tmp_path / "ours.pcap") == len(ours.packets)
    assert tcpdump_count(tmp_path / "ours.pcap", expr) == len(ours.packets)
    assert [data for _, data in dpkt_reader_packets(tmp_path / "ours.pcap")] == [p.data for p in ours.packets]
    # what was sent: every UDP datagram the filter selects, its payload cut at the snaplen
    if "udp" in expr and direction == "bidirectional":
        for port, payloads in sent.items():
            if expr == "udp port 7000" and port != 7000:
                continue
            got = [bytes(dpkt.ethernet.Ethernet(p.data).data.data.data) for p in ours.packets
                   if p.wirelen == 14 + 20 + 8 + len(payloads[0]) and
                   dpkt.ethernet.Ethernet(p.data).data.p == 17 and
                   dpkt.ethernet.Ethernet(p.data).data.data.dport == port]
            assert len(got) == len(payloads)
            for payload, data in zip(payloads, got):
                assert payload.startswith(data)
                assert len(data) == min(len(payload), max(snaplen - 42, 0))


def test_tshark_reads_the_file_with_both_lengths(quiet_hosts, tmp_path):
    a, b = quiet_hosts
    with PacketCapture("t", filter="udp", snaplen=70, dump=tmp_path / "x.pcap") as cap:
        cap.attach("eth0", netns=a.netns)
        send_udp(a, b.ip, 7000, udp_payloads(5, b"tshark", size=200))
    proc = subprocess.run(["tshark", "-r", str(tmp_path / "x.pcap"), "-T", "fields", "-e", "frame.len",
                           "-e", "frame.cap_len", "-e", "udp.dstport"], check=False, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    rows = [line.split("\t") for line in proc.stdout.splitlines()]
    assert rows == [["242", "70", "7000"]] * 5

"""Frames as on the wire: VLAN tags the kernel moved into skb metadata, and large non-linear TCP skbs."""
from __future__ import annotations

import struct
from collections import Counter

import dpkt

from pynetmon import BPFObject
from pynetmon.capture import PacketCapture
from pynetmon.link import attach_tc
from pynetmon.toolchain import compile_c

from .helpers import LiveTcpdump, read_pcap, send_tcp, send_udp, tcp_sink, udp_payloads

VLAN_ID = 10
# This kernel may lack 802.1Q devices, so a tiny tcx program tags the test's frames instead: like a VLAN
# device on a NIC with tx VLAN offload, bpf_skb_vlan_push puts the tag in skb metadata, not in the frame.
VLAN_PUSHER = r"""
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/pkt_cls.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

SEC("tc")
int push_vlan(struct __sk_buff *skb)
{
    if (skb->protocol == bpf_htons(ETH_P_IP))
        bpf_skb_vlan_push(skb, bpf_htons(ETH_P_8021Q), VLAN_ID);
    return TC_ACT_UNSPEC;  /* tcx: on to the next program (the capture's) */
}
char LICENSE[] SEC("license") = "GPL";
""".replace("VLAN_ID", str(VLAN_ID))


def test_vlan_tag_in_skb_metadata_is_in_the_frame_as_tcpdump_records_it(quiet_hosts, tmp_path):
    """Egress of a: the tag is in metadata when the capture runs. Ingress of b: the receive path keeps
    it there (or moves an in-band tag there). Both captures hold the tagged frame, like tcpdump's."""
    a, b = quiet_hosts
    expr = f"vlan {VLAN_ID} and udp"
    with BPFObject(compile_c(VLAN_PUSHER, filename="vlan_pusher.bpf.c")) as pusher:
        pusher.load()
        with attach_tc(pusher.programs["push_vlan"], "eth0", "egress", netns=a.netns):
            live_a = LiveTcpdump(a, tmp_path / "tcpdump_a.pcap", expr, 200, "egress")
            live_b = LiveTcpdump(b, tmp_path / "tcpdump_b.pcap", expr, 200, "ingress")
            try:
                with PacketCapture("vlan_a", capture="egress", filter=expr, snaplen=200,
                                   dump=tmp_path / "a.pcap") as cap_a, \
                        PacketCapture("vlan_b", capture="ingress", filter=expr, snaplen=200,
                                      dump=tmp_path / "b.pcap") as cap_b:
                    cap_a.attach("eth0", netns=a.netns)
                    cap_b.attach("eth0", netns=b.netns)
                    send_udp(a, b.ip, 7000, udp_payloads(5, b"tagged", 100))
            finally:
                theirs = {"a": live_a.stop(5), "b": live_b.stop(5)}
    for side, cap in (("a", cap_a), ("b", cap_b)):
        ours = read_pcap(tmp_path / f"{side}.pcap")
        assert len(ours.packets) == 5, side
        assert Counter(p.key() for p in ours.packets) == Counter(p.key() for p in theirs[side].packets), side
        for packet in ours.packets:
            tpid, tci = struct.unpack_from("!HH", packet.data, 12)
            assert (tpid, tci & 0xFFF) == (0x8100, VLAN_ID)
            assert dpkt.ethernet.Ethernet(packet.data).vlan_tags[0].id == VLAN_ID
            assert packet.wirelen == 14 + 4 + 20 + 8 + 100
        assert cap.stats()["captured"] == 5


def test_large_tcp_transfer_is_captured_whole(quiet_hosts, tmp_path):
    """GSO skbs up to 64 KiB (non-linear: the payload is in page fragments) are captured whole, as tcpdump
    captures them, and the TCP payload in the file adds up to what was sent."""
    a, b = quiet_hosts
    data = bytes(range(256)) * (3 * 4096)  # 3 MiB
    expr = "tcp port 7300"
    live = LiveTcpdump(a, tmp_path / "tcpdump.pcap", expr, 262144)
    expect = None
    try:
        with PacketCapture("big", filter=expr, dump=tmp_path / "ours.pcap", ring_bytes=64 << 20) as cap:
            cap.attach("eth0", netns=a.netns)
            with tcp_sink(b, 7300) as received:
                send_tcp(a, b.ip, 7300, data)
        expect = cap.stats()["delivered"]
    finally:
        theirs = live.stop(expect)
    assert received == [len(data)]
    ours = read_pcap(tmp_path / "ours.pcap")
    stats = cap.stats()
    assert stats["dropped"] == stats["errors"] == 0
    assert "\n0 packets dropped by kernel" in "".join(live.stderr), "tcpdump dropped: nothing to compare"
    assert Counter(p.key() for p in ours.packets) == Counter(p.key() for p in theirs.packets)
    assert all(p.caplen == p.wirelen for p in ours.packets)
    assert max(p.wirelen for p in ours.packets) > 1514, "no GSO packet: the non-linear path was not exercised"
    payload = bytearray()
    for p in ours.packets:
        ip = dpkt.ethernet.Ethernet(p.data).data
        if ip.data.dport == 7300 and ip.data.data:
            payload += ip.data.data
    assert bytes(payload) == data

"""Filters select what a live tcpdump selects on the same interface, where that differs from `tcpdump -r`.

A live tcpdump on Linux puts libpcap's live-handle code on its packet socket: the kernel runs it on the
frame without the 802.1Q tag it keeps in skb metadata, and `vlan` reads that tag through ancillary loads.
So `udp` matches tagged UDP, `vlan` matches it, `not vlan` does not. The capture must agree packet for
packet, and still write the tagged frame, as tcpdump does. `inbound`/`outbound` read the packet type,
another ancillary load.
"""
from __future__ import annotations

import struct
import time
from collections import Counter

import pytest

from pynetmon import BPFObject
from pynetmon.capture import PacketCapture
from pynetmon.link import attach_tc
from pynetmon.toolchain import compile_c

from .helpers import LiveTcpdump, read_pcap, send_udp, udp_payloads

VLAN_ID = 100
TAGGED_PORT, UNTAGGED_PORT, WARM_UP_PORT = 7000, 7001, 7009
# No 802.1Q module on this kernel: a tcx program on a's egress tags the UDP datagrams to TAGGED_PORT the
# way a VLAN device on a NIC with tx VLAN offload does (bpf_skb_vlan_push: the tag goes in skb metadata).
# Datagrams to UNTAGGED_PORT and ARP stay untagged.
PORT_TAGGER = r"""
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/pkt_cls.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

SEC("tc")
int tag_port(struct __sk_buff *skb)
{
    __u8 proto;
    __u16 dport;

    if (skb->protocol != bpf_htons(ETH_P_IP) || skb->vlan_present)
        return TC_ACT_UNSPEC;
    if (bpf_skb_load_bytes(skb, 14 + 9, &proto, 1) < 0 || proto != IPPROTO_UDP)
        return TC_ACT_UNSPEC;
    if (bpf_skb_load_bytes(skb, 14 + 20 + 2, &dport, 2) < 0 || dport != bpf_htons(TAGGED_PORT))
        return TC_ACT_UNSPEC;
    bpf_skb_vlan_push(skb, bpf_htons(ETH_P_8021Q), VLAN_ID);
    return TC_ACT_UNSPEC;  /* tcx: on to the next program (the capture's) */
}
char LICENSE[] SEC("license") = "GPL";
""".replace("TAGGED_PORT", str(TAGGED_PORT)).replace("VLAN_ID", str(VLAN_ID))

# filter → (tagged datagrams, untagged datagrams) it selects, as a live tcpdump does
CASES = {
    "udp": (True, True),
    "vlan": (True, False),
    f"vlan {VLAN_ID} and udp": (True, False),
    "not vlan": (False, True),
    f"udp dst port {TAGGED_PORT}": (True, False),
    f"vlan and udp dst port {TAGGED_PORT}": (True, False),
    # `len` is the length without the metadata tag (142 for the tagged datagrams, 146 in the file)
    "udp and len <= 142": (True, True),
}


@pytest.fixture(scope="module")
def tagger():
    with BPFObject(compile_c(PORT_TAGGER, filename="port_tagger.bpf.c")) as obj:
        obj.load()
        yield obj.programs["tag_port"]


@pytest.mark.parametrize("expr", list(CASES))
def test_vlan_filter_selects_what_live_tcpdump_selects(quiet_hosts, tmp_path, tagger, expr):
    """a's egress (tag in metadata when the capture runs) and b's ingress (the receive path keeps it in
    metadata), each against tcpdump on the same side with the same filter."""
    a, b = quiet_hosts
    tagged, untagged = udp_payloads(4, b"tagged", 100), udp_payloads(3, b"plain", 60)
    with attach_tc(tagger, "eth0", "egress", netns=a.netns):
        live = {"a": LiveTcpdump(a, tmp_path / "tcpdump_a.pcap", expr, 300, "egress"),
                "b": LiveTcpdump(b, tmp_path / "tcpdump_b.pcap", expr, 300, "ingress")}
        expect = {}
        try:
            with PacketCapture("vlan_a", capture="egress", filter=expr, snaplen=300,
                               dump=tmp_path / "a.pcap") as cap_a, \
                    PacketCapture("vlan_b", capture="ingress", filter=expr, snaplen=300,
                                  dump=tmp_path / "b.pcap") as cap_b:
                cap_a.attach("eth0", netns=a.netns)
                cap_b.attach("eth0", netns=b.netns)
                send_udp(a, b.ip, TAGGED_PORT, tagged)
                send_udp(a, b.ip, UNTAGGED_PORT, untagged)
            expect = {"a": cap_a.stats()["delivered"], "b": cap_b.stats()["delivered"]}
        finally:
            theirs = {side: tool.stop(expect.get(side)) for side, tool in live.items()}

    want_tagged, want_untagged = CASES[expr]
    for side in ("a", "b"):
        ours = read_pcap(tmp_path / f"{side}.pcap").packets
        udp = [p for p in ours if p.wirelen in (14 + 4 + 28 + 100, 14 + 28 + 60)]
        got_tagged = [p for p in udp if struct.unpack_from("!H", p.data, 12)[0] == 0x8100]
        got_untagged = [p for p in udp if struct.unpack_from("!H", p.data, 12)[0] == 0x0800]
        # tcpdump recorded exactly the same frames: tag re-inserted, both lengths counting it
        assert Counter(p.key() for p in ours) == Counter(p.key() for p in theirs[side].packets), (side, expr)
        assert (len(got_tagged), len(got_untagged)) == (4 * want_tagged, 3 * want_untagged), (side, expr)
        for packet in got_tagged:
            assert struct.unpack_from("!HH", packet.data, 12) == (0x8100, VLAN_ID)
            assert packet.wirelen == packet.caplen == 14 + 4 + 20 + 8 + 100


@pytest.mark.parametrize(("side", "expr"), [("a", "outbound and udp"), ("b", "inbound and udp"),
                                            ("a", "inbound and udp")])
def test_packet_type_filters_select_what_live_tcpdump_selects(quiet_hosts, tmp_path, side, expr):
    """Both directions captured; `inbound`/`outbound` pick one, as libpcap's [type] load does on a packet
    socket (egress packets are PACKET_OUTGOING there, though the skb at the TC hook does not say so)."""
    a, b = quiet_hosts
    host = a if side == "a" else b
    live = LiveTcpdump(host, tmp_path / "tcpdump.pcap", expr, 300)
    expect = None
    try:
        # libpcap re-filters the ring block that was filling when the filter was set in user space, where
        # [type] always fails: warm-up datagrams (before our capture starts) get tcpdump past that block.
        send_udp(a, b.ip, WARM_UP_PORT, [b"warm-up"])
        send_udp(b, a.ip, WARM_UP_PORT, [b"warm-up"])
        time.sleep(0.3)  # the block is retired after a timeout of a few ms
        with PacketCapture("pkttype", filter=expr, snaplen=300, dump=tmp_path / "ours.pcap") as cap:
            cap.attach("eth0", netns=host.netns)
            send_udp(a, b.ip, UNTAGGED_PORT, udp_payloads(3, b"a-to-b", 60))
            send_udp(b, a.ip, UNTAGGED_PORT, udp_payloads(2, b"b-to-a", 70))
        expect = cap.stats()["delivered"]
    finally:
        theirs = live.stop(expect)
    ours = read_pcap(tmp_path / "ours.pcap").packets
    theirs_after_warm_up = [p for p in theirs.packets if b"warm-up" not in p.data]
    assert Counter(p.key() for p in ours) == Counter(p.key() for p in theirs_after_warm_up)
    sent_by_host = 3 if side == "a" else 2
    assert len(ours) == (sent_by_host if "outbound" in expr else 5 - sent_by_host)

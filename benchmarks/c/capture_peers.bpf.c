// SPDX-License-Identifier: GPL-2.0
/* The programs the capture benchmark (benchmarks/bench_capture.py) measures the capture against:
 * - udp_sink, the receiving end of its sink scenario: XDP on the receiving host's interface drops
 *   iperf3's data datagrams (IPv4 UDP to port 5201 with an 18-byte payload) and passes everything else,
 *   iperf3's TCP control connection and its 4-byte UDP handshake included. With no receiving process,
 *   the sender's rate depends on the sending host's path alone (the capture's program on it), not on how
 *   often the sender has to wake a receiver on another CPU;
 * - tc_empty, its "empty tc" mode: a tcx egress program that does nothing, the floor of every capture
 *   that runs at the TC hook (the hook's dispatch and a program call, per packet). */
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/udp.h>
#include <linux/pkt_cls.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#define SINK_PORT 5201
#define SINK_PAYLOAD 18

SEC("xdp")
int udp_sink(struct xdp_md *ctx)
{
    void *data = (void *)(long)ctx->data, *data_end = (void *)(long)ctx->data_end;
    struct ethhdr *eth = data;
    struct iphdr *ip = data + sizeof(*eth);
    struct udphdr *udp = (void *)(ip + 1);

    if ((void *)(udp + 1) > data_end || eth->h_proto != bpf_htons(ETH_P_IP) || ip->ihl != 5 ||
        ip->protocol != IPPROTO_UDP)
        return XDP_PASS;
    if (udp->dest == bpf_htons(SINK_PORT) && udp->len == bpf_htons(sizeof(*udp) + SINK_PAYLOAD))
        return XDP_DROP;
    return XDP_PASS;
}

SEC("tc")
int tc_empty(struct __sk_buff *skb)
{
    return TC_ACT_UNSPEC;
}

char LICENSE[] SEC("license") = "GPL";

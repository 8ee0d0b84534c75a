/* XDP SYN cookies for the ddos guard (option syncookies): a SYN is answered in XDP with a SYN-ACK whose
 * sequence number is the kernel's own SYN cookie for the packet (bpf_tcp_raw_gen_syncookie_ipv4/6,
 * linux 6.0: the same secret and encoding as the TCP stack's cookies), sent back out of the interface
 * with XDP_TX. Nothing is stored. The client's ACK then reaches the listener, which checks the cookie
 * itself (cookie_v4_check/cookie_v6_check) and creates the connection — as it does for the cookies it
 * sends itself. User space sets net.ipv4.tcp_syncookies=2 in the interface's namespace for that.
 *
 * The SYN-ACK carries one option, MSS (ddos_syncookie_mss4/6, from the interface's MTU): no window
 * scaling, SACK or timestamps, which the kernel's cookie check then assumes absent (it recovers them
 * only from a timestamp it issued itself). Answered are SYNs straight after an untagged Ethernet header
 * with no IPv4 options and no IPv6 extension headers; the caller passes the others to the listener,
 * which (with tcp_syncookies=2) answers them with a cookie too.
 *
 * The checksums of the SYN are not verified: on veth a frame from the peer's stack still has a partial
 * checksum. A corrupted SYN only earns a cookie for a tuple nobody will complete.
 *
 * ACKs to a protected port (pnm_ack_ok): a segment of a connection the host has a socket for passes; one
 * that only the listener would see must carry a valid cookie (bpf_tcp_raw_check_syncookie_ipv4/6), else it
 * is dropped here instead of costing the listener a cookie check and a RST — an ACK flood ends in XDP.
 * The socket lookup (bpf_skc_lookup_tcp) stands in for the selftest's conntrack lookup: no netfilter
 * is needed. */
#ifndef PYNETMON_MONITORS_SYNCOOKIE_BPF_H
#define PYNETMON_MONITORS_SYNCOOKIE_BPF_H

#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <linux/tcp.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#define PNM_SC_TCP_LEN 24	/* TCP header with the MSS option */
#define PNM_SC_LEN4 (ETH_HLEN + 20 + PNM_SC_TCP_LEN)
#define PNM_SC_LEN6 (ETH_HLEN + 40 + PNM_SC_TCP_LEN)

/* what pnm_synack() did: sent (XDP_TX the frame), not answerable (frame untouched), or failed after the
 * frame was already resized (it must be dropped) */
#define PNM_SC_SENT 0
#define PNM_SC_UNANSWERABLE 1
#define PNM_SC_BROKEN 2

const volatile __u16 ddos_syncookie_mss4 = 1460;
const volatile __u16 ddos_syncookie_mss6 = 1440;

struct pnm_pseudo4 {
	__be32 saddr;
	__be32 daddr;
	__u8 zero;
	__u8 proto;
	__be16 len;
};

struct pnm_pseudo6 {
	__u8 saddr[16];
	__u8 daddr[16];
	__be32 len;
	__u8 zero[3];
	__u8 next;
};

static __always_inline __u16 pnm_csum_fold(__s64 sum)
{
	__u64 s = (__u64)sum;

	s = (s & 0xffffffff) + (s >> 32);
	s = (s & 0xffff) + (s >> 16);
	s = (s & 0xffff) + (s >> 16);
	s = (s & 0xffff) + (s >> 16);
	return (__u16)~s;
}

/* The cookie of a SYN (low 32 bits; the MSS it encodes in the next 16), or < 0; l3 is its IPv4 or IPv6
 * header. The helper wants the TCP header's exact length as a size the verifier can bound, hence one call
 * per possible doff. */
static __always_inline __s64 pnm_cookie(void *l3, struct tcphdr *th, void *data_end, int v4)
{
	__u32 doff = th->doff;
	__s64 v = -1;
	int i;

#pragma unroll
	for (i = 5; i <= 15; i++) {
		if (doff == i) {
			if ((void *)th + i * 4 > data_end)
				return -1;
			v = v4 ? bpf_tcp_raw_gen_syncookie_ipv4(l3, th, i * 4) :
				 bpf_tcp_raw_gen_syncookie_ipv6(l3, th, i * 4);
		}
	}
	return v;
}

/* The SYN-ACK's TCP header over the SYN's: ports swapped, seq = cookie, ack = the SYN's seq + 1, one MSS
 * option. The window is four of the client's segments: what the listener will assume it advertised is
 * larger, so the client never sends beyond it. */
static __always_inline void pnm_synack_tcp(struct tcphdr *th, __be16 sport, __be16 dport, __be32 seq,
					   __s64 cookie, __u16 mss)
{
	__u8 *b = (__u8 *)th;
	__u32 client_mss = (cookie >> 32) & 0xffff;

	th->source = dport;
	th->dest = sport;
	th->seq = bpf_htonl((__u32)cookie);
	th->ack_seq = bpf_htonl(bpf_ntohl(seq) + 1);
	b[12] = (PNM_SC_TCP_LEN / 4) << 4;
	b[13] = 0x12;	/* SYN | ACK */
	th->window = bpf_htons(client_mss * 4 > 65535 ? 65535 : client_mss * 4);
	th->check = 0;
	th->urg_ptr = 0;
	b[20] = 2;	/* MSS */
	b[21] = 4;
	b[22] = mss >> 8;
	b[23] = mss & 0xff;
}

static __always_inline void pnm_swap_mac(struct ethhdr *eth)
{
	__u8 mac[ETH_ALEN];

	__builtin_memcpy(mac, eth->h_source, ETH_ALEN);
	__builtin_memcpy(eth->h_source, eth->h_dest, ETH_ALEN);
	__builtin_memcpy(eth->h_dest, mac, ETH_ALEN);
}

static __always_inline int pnm_synack4(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data, *data_end = (void *)(long)ctx->data_end;
	struct iphdr *iph = data + ETH_HLEN;
	struct pnm_pseudo4 ph = {};
	struct tcphdr *th;
	__be32 saddr, daddr, seq;
	__be16 sport, dport;
	__s64 cookie, sum;

	if ((void *)(iph + 1) > data_end || iph->ihl != 5)
		return PNM_SC_UNANSWERABLE;
	th = (void *)(iph + 1);
	if ((void *)(th + 1) > data_end)
		return PNM_SC_UNANSWERABLE;
	cookie = pnm_cookie(iph, th, data_end, 1);
	if (cookie < 0)
		return PNM_SC_UNANSWERABLE;
	saddr = iph->saddr;
	daddr = iph->daddr;
	sport = th->source;
	dport = th->dest;
	seq = th->seq;
	if (bpf_xdp_adjust_tail(ctx, PNM_SC_LEN4 - (int)(data_end - data)))
		return PNM_SC_UNANSWERABLE;
	data = (void *)(long)ctx->data;
	data_end = (void *)(long)ctx->data_end;
	if (data + PNM_SC_LEN4 > data_end)
		return PNM_SC_BROKEN;
	pnm_swap_mac(data);
	iph = data + ETH_HLEN;
	th = (void *)(iph + 1);
	iph->version = 4;
	iph->ihl = 5;
	iph->tos = 0;
	iph->tot_len = bpf_htons(20 + PNM_SC_TCP_LEN);
	iph->id = 0;
	iph->frag_off = bpf_htons(0x4000);	/* DF */
	iph->ttl = 64;
	iph->protocol = IPPROTO_TCP;
	iph->check = 0;
	iph->saddr = daddr;
	iph->daddr = saddr;
	pnm_synack_tcp(th, sport, dport, seq, cookie, ddos_syncookie_mss4);
	ph.saddr = daddr;
	ph.daddr = saddr;
	ph.proto = IPPROTO_TCP;
	ph.len = bpf_htons(PNM_SC_TCP_LEN);
	sum = bpf_csum_diff(0, 0, (__be32 *)th, PNM_SC_TCP_LEN, 0);
	sum = bpf_csum_diff(0, 0, (__be32 *)&ph, sizeof(ph), (__wsum)sum);
	th->check = pnm_csum_fold(sum);
	iph->check = pnm_csum_fold(bpf_csum_diff(0, 0, (__be32 *)iph, 20, 0));
	return PNM_SC_SENT;
}

static __always_inline int pnm_synack6(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data, *data_end = (void *)(long)ctx->data_end;
	struct ipv6hdr *ip6 = data + ETH_HLEN;
	struct pnm_pseudo6 ph = {};
	struct tcphdr *th;
	__be32 seq;
	__be16 sport, dport;
	__s64 cookie, sum;

	if ((void *)(ip6 + 1) > data_end || ip6->nexthdr != IPPROTO_TCP)
		return PNM_SC_UNANSWERABLE;
	th = (void *)(ip6 + 1);
	if ((void *)(th + 1) > data_end)
		return PNM_SC_UNANSWERABLE;
	cookie = pnm_cookie(ip6, th, data_end, 0);
	if (cookie < 0)
		return PNM_SC_UNANSWERABLE;
	__builtin_memcpy(ph.saddr, &ip6->daddr, 16);	/* the SYN-ACK's source: the SYN's destination */
	__builtin_memcpy(ph.daddr, &ip6->saddr, 16);
	sport = th->source;
	dport = th->dest;
	seq = th->seq;
	if (bpf_xdp_adjust_tail(ctx, PNM_SC_LEN6 - (int)(data_end - data)))
		return PNM_SC_UNANSWERABLE;
	data = (void *)(long)ctx->data;
	data_end = (void *)(long)ctx->data_end;
	if (data + PNM_SC_LEN6 > data_end)
		return PNM_SC_BROKEN;
	pnm_swap_mac(data);
	ip6 = data + ETH_HLEN;
	th = (void *)(ip6 + 1);
	*(__be32 *)ip6 = bpf_htonl(0x60000000);	/* version 6, no traffic class, no flow label */
	ip6->payload_len = bpf_htons(PNM_SC_TCP_LEN);
	ip6->nexthdr = IPPROTO_TCP;
	ip6->hop_limit = 64;
	__builtin_memcpy(&ip6->saddr, ph.saddr, 16);
	__builtin_memcpy(&ip6->daddr, ph.daddr, 16);
	pnm_synack_tcp(th, sport, dport, seq, cookie, ddos_syncookie_mss6);
	ph.len = bpf_htonl(PNM_SC_TCP_LEN);
	ph.next = IPPROTO_TCP;
	sum = bpf_csum_diff(0, 0, (__be32 *)th, PNM_SC_TCP_LEN, 0);
	sum = bpf_csum_diff(0, 0, (__be32 *)&ph, sizeof(ph), (__wsum)sum);
	th->check = pnm_csum_fold(sum);
	return PNM_SC_SENT;
}

/* 1 when a non-SYN TCP segment to a protected port may pass, 0 when it is an ACK for the listener that
 * carries no valid cookie. Segments it cannot judge (VLAN, IPv4 options, IPv6 extension headers, RST,
 * FIN, no ACK) pass. */
static __always_inline int pnm_ack_ok(struct xdp_md *ctx, int v4, __u16 l3_offset)
{
	void *data = (void *)(long)ctx->data, *data_end = (void *)(long)ctx->data_end;
	void *l3 = data + ETH_HLEN;
	struct bpf_sock_tuple tuple = {};
	struct bpf_sock *sk;
	struct tcphdr *th;
	__u32 state, tuple_len;

	if (l3_offset != ETH_HLEN)
		return 1;
	if (v4) {
		struct iphdr *iph = l3;

		if ((void *)(iph + 1) > data_end || iph->ihl != 5)
			return 1;
		th = (void *)(iph + 1);
		if ((void *)(th + 1) > data_end)
			return 1;
		tuple.ipv4.saddr = iph->saddr;
		tuple.ipv4.daddr = iph->daddr;
		tuple.ipv4.sport = th->source;
		tuple.ipv4.dport = th->dest;
		tuple_len = sizeof(tuple.ipv4);
	} else {
		struct ipv6hdr *ip6 = l3;

		if ((void *)(ip6 + 1) > data_end || ip6->nexthdr != IPPROTO_TCP)
			return 1;
		th = (void *)(ip6 + 1);
		if ((void *)(th + 1) > data_end)
			return 1;
		__builtin_memcpy(tuple.ipv6.saddr, &ip6->saddr, 16);
		__builtin_memcpy(tuple.ipv6.daddr, &ip6->daddr, 16);
		tuple.ipv6.sport = th->source;
		tuple.ipv6.dport = th->dest;
		tuple_len = sizeof(tuple.ipv6);
	}
	if ((((__u8 *)th)[13] & 0x17) != 0x10)	/* ACK without SYN, RST or FIN */
		return 1;
	sk = bpf_skc_lookup_tcp(ctx, &tuple, tuple_len, BPF_F_CURRENT_NETNS, 0);
	if (!sk)
		return 1;	/* nobody listens: the stack answers with a RST */
	state = sk->state;
	bpf_sk_release(sk);
	if (state != BPF_TCP_LISTEN)
		return 1;	/* a connection (or request) of its own */
	return (v4 ? bpf_tcp_raw_check_syncookie_ipv4(l3, th) : bpf_tcp_raw_check_syncookie_ipv6(l3, th)) == 0;
}

/* Answer the SYN in ctx (l3_offset: where its IP header starts). */
static __always_inline int pnm_synack(struct xdp_md *ctx, int v4, __u16 l3_offset)
{
	if (l3_offset != ETH_HLEN)
		return PNM_SC_UNANSWERABLE;	/* VLAN-tagged */
	return v4 ? pnm_synack4(ctx) : pnm_synack6(ctx);
}

#endif

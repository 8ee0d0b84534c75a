/* Packet parsing every packet monitor shares (TC and XDP): Ethernet with up to two VLAN tags, IPv4 or
 * IPv6 (with up to PNM_IPV6_EXT_MAX extension headers), then TCP, UDP, ICMP or ICMPv6, filling a
 * `struct pnm_flow_key` (flow.h) and telling where the transport header and the payload start, so a
 * monitor that reads further (DNS, TCP options) never parses the lower layers again.
 *
 * Works on [data, data_end) as both program types see it: with VLAN offload TC sees the frame without
 * its outer tag (the kernel keeps it in skb metadata), XDP sees it on the wire; either parses.
 * Fragments: only the first fragment carries ports; later fragments are keyed with ports 0. */
#ifndef PYNETMON_MONITORS_PACKET_BPF_H
#define PYNETMON_MONITORS_PACKET_BPF_H

#include <linux/types.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/in6.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <linux/tcp.h>
#include <linux/udp.h>
#include <linux/icmp.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>
#include "flow.h"

#define PNM_IPV6_EXT_MAX 4

#ifndef ETH_P_8021AD
#define ETH_P_8021AD 0x88A8
#endif

/* What the parser found. Offsets count from the start of the frame (data). */
struct pnm_packet {
	struct pnm_flow_key key;
	__u16 l3_offset;	/* IP header */
	__u16 l4_offset;	/* transport header; 0 when there is none (non-first fragment, unknown proto) */
	__u16 payload_offset;	/* first byte after the transport header; 0 when unknown */
	__u8 tcp_flags;		/* the byte with FIN..CWR of a TCP header, 0 otherwise */
	__u8 fragment;		/* 1: a non-first IP fragment (no transport header) */
};

struct pnm_vlan_hdr {
	__be16 tci;
	__be16 proto;
};

/* IPv4 address as IPv4-mapped IPv6 (::ffff:a.b.c.d). */
static __always_inline void pnm_map_v4(__u8 *dst, __be32 addr)
{
	__builtin_memset(dst, 0, 10);
	dst[10] = 0xff;
	dst[11] = 0xff;
	__builtin_memcpy(dst + 12, &addr, 4);
}

/* The transport layer at `off`: ports (or ICMP type/code), TCP flags and where the payload starts.
 * A truncated transport header leaves the key without ports and l4_offset 0 (the packet still counts). */
static __always_inline int pnm_parse_l4(void *data, void *data_end, __u32 off, struct pnm_packet *pkt)
{
	void *l4 = data + off;

	switch (pkt->key.proto) {
	case IPPROTO_TCP: {
		struct tcphdr *th = l4;
		__u32 doff;

		if ((void *)(th + 1) > data_end)
			return 0;
		pkt->l4_offset = off;
		pkt->key.sport = th->source;
		pkt->key.dport = th->dest;
		pkt->tcp_flags = ((__u8 *)th)[13];
		doff = th->doff * 4;
		pkt->payload_offset = off + (doff < sizeof(*th) ? sizeof(*th) : doff);
		return 0;
	}
	case IPPROTO_UDP: {
		struct udphdr *uh = l4;

		if ((void *)(uh + 1) > data_end)
			return 0;
		pkt->l4_offset = off;
		pkt->key.sport = uh->source;
		pkt->key.dport = uh->dest;
		pkt->payload_offset = off + sizeof(*uh);
		return 0;
	}
	case IPPROTO_ICMP:
	case IPPROTO_ICMPV6: {
		__u8 *ih = l4;

		if ((void *)(ih + 2) > data_end)
			return 0;
		/* type and code in the port fields, in network order like real ports */
		pkt->l4_offset = off;
		pkt->key.sport = bpf_htons(ih[0]);
		pkt->key.dport = bpf_htons(ih[1]);
		pkt->payload_offset = off + 8;
		return 0;
	}
	default:
		return 0;
	}
}

static __always_inline int pnm_parse_ipv4(void *data, void *data_end, __u32 off, struct pnm_packet *pkt)
{
	struct iphdr *iph = data + off;
	__u32 ihl;

	if ((void *)(iph + 1) > data_end)
		return -1;
	ihl = iph->ihl * 4;
	if (ihl < sizeof(*iph))
		return -1;
	pkt->key.family = PNM_FAMILY_IPV4;
	pkt->key.proto = iph->protocol;
	pnm_map_v4(pkt->key.saddr, iph->saddr);
	pnm_map_v4(pkt->key.daddr, iph->daddr);
	/* a later fragment has no transport header: keep the addresses, no ports */
	if (iph->frag_off & bpf_htons(0x1FFF)) {
		pkt->fragment = 1;
		return 0;
	}
	return pnm_parse_l4(data, data_end, off + ihl, pkt);
}

static __always_inline int pnm_parse_ipv6(void *data, void *data_end, __u32 off, struct pnm_packet *pkt)
{
	struct ipv6hdr *ip6 = data + off;
	__u8 next;
	int i;

	if ((void *)(ip6 + 1) > data_end)
		return -1;
	pkt->key.family = PNM_FAMILY_IPV6;
	__builtin_memcpy(pkt->key.saddr, &ip6->saddr, 16);
	__builtin_memcpy(pkt->key.daddr, &ip6->daddr, 16);
	next = ip6->nexthdr;
	off += sizeof(*ip6);
	/* A bounded walk over extension headers (hop-by-hop, routing, destination options, fragment). */
#pragma unroll
	for (i = 0; i < PNM_IPV6_EXT_MAX; i++) {
		__u8 *ext = data + off;

		if (next != IPPROTO_HOPOPTS && next != IPPROTO_ROUTING && next != IPPROTO_DSTOPTS &&
		    next != IPPROTO_FRAGMENT)
			break;
		if ((void *)(ext + 8) > data_end) {
			pkt->key.proto = next;	/* truncated: addresses and the header we stopped at */
			return 0;
		}
		if (next == IPPROTO_FRAGMENT) {
			/* fragment offset != 0: a later fragment, no transport header */
			if ((ext[2] << 8 | ext[3]) & 0xFFF8) {
				pkt->key.proto = ext[0];
				pkt->fragment = 1;
				return 0;
			}
			next = ext[0];
			off += 8;
		} else {
			next = ext[0];
			off += (ext[1] + 1) * 8;
		}
	}
	pkt->key.proto = next;
	return pnm_parse_l4(data, data_end, off, pkt);
}

/* Bytes of transport payload as the IP header states them (Ethernet padding excluded; all of a GSO
 * packet's payload, which may lie beyond data_end), 0 when unknown. For monitors that read the
 * payload (HTTP, DNS) or follow TCP sequence numbers. */
static __always_inline __u32 pnm_payload_len(void *data, void *data_end, const struct pnm_packet *pkt)
{
	__u32 l3 = pkt->l3_offset & 0xff, end;

	if (!pkt->payload_offset)
		return 0;
	if (pkt->key.family == PNM_FAMILY_IPV4) {
		struct iphdr *iph = data + l3;

		if ((void *)(iph + 1) > data_end)
			return 0;
		end = l3 + bpf_ntohs(iph->tot_len);
	} else {
		struct ipv6hdr *ip6 = data + l3;

		if ((void *)(ip6 + 1) > data_end)
			return 0;
		end = l3 + sizeof(*ip6) + bpf_ntohs(ip6->payload_len);
	}
	return end > pkt->payload_offset ? end - pkt->payload_offset : 0;
}

/* Parse the frame at [data, data_end) into `pkt` (zeroed here). Returns 0 for an IPv4/IPv6 packet (the
 * key is valid; l4_offset is 0 if its transport header could not be reached), -1 otherwise. */
static __always_inline int pnm_parse(void *data, void *data_end, struct pnm_packet *pkt)
{
	struct ethhdr *eth = data;
	__u32 off = sizeof(*eth);
	__be16 proto;
	int i;

	__builtin_memset(pkt, 0, sizeof(*pkt));
	if ((void *)(eth + 1) > data_end)
		return -1;
	proto = eth->h_proto;
#pragma unroll
	for (i = 0; i < 2; i++) {
		struct pnm_vlan_hdr *vh = data + off;

		if (proto != bpf_htons(ETH_P_8021Q) && proto != bpf_htons(ETH_P_8021AD))
			break;
		if ((void *)(vh + 1) > data_end)
			return -1;
		proto = vh->proto;
		off += sizeof(*vh);
	}
	pkt->l3_offset = off;
	if (proto == bpf_htons(ETH_P_IP))
		return pnm_parse_ipv4(data, data_end, off, pkt) < 0 ? -1 : 0;
	if (proto == bpf_htons(ETH_P_IPV6))
		return pnm_parse_ipv6(data, data_end, off, pkt) < 0 ? -1 : 0;
	return -1;
}

#endif

// SPDX-License-Identifier: GPL-2.0
/* rtt: passive TCP round-trip times in the style of pping (Kathie Nichols; xdp-project's ePPing), at tcx
 * ingress and egress of one interface. No endpoint socket is touched, so it measures traffic the host
 * only forwards as well as its own.
 *
 * A packet carrying data (or SYN/FIN) with TCP timestamp TSval=v remembers "flow F sent v at t" in an LRU
 * map (the first packet with a given TSval wins: TSval ticks every millisecond, several segments share
 * one). A packet of the reverse flow with TSecr=v closes it: t_now - t is one RTT sample of F, from this
 * interface to the far end and back. Pure ACKs are not remembered: nothing makes the peer answer them
 * soon, so an echo of their TSval can come seconds later (pping's rule too). Each remembered TSval
 * matches at most once (deleted on match).
 *
 * Per flow: count/min/max/sum and a log-linear histogram (latstats.h) in a plain hash, whose overflow
 * is counted (an LRU would lose samples silently); user space removes idle flows. */
#include <linux/bpf.h>
#include <linux/pkt_cls.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>
#define PNM_LAT_KERNEL
#include "packet.bpf.h"
#include "rtt.h"

char LICENSE[] SEC("license") = "GPL";

const volatile struct pnm_hist_config rtt_hist_config = {};

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 16384);	/* option max_timestamps */
	__type(key, struct rtt_ts_key);
	__type(value, __u64);
} rtt_timestamps SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 4096);	/* option max_entries */
	__type(key, struct pnm_flow_key);
	__type(value, struct pnm_lat_stats);
} rtt_flows SEC(".maps");

PNM_HIST_MAP(rtt_hist);
PNM_LAT_ZERO_MAP(rtt_zero);

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, RTT_NR_CTR);
	__type(key, __u32);
	__type(value, __u64);
} rtt_counters SEC(".maps");

static __always_inline void count(__u32 which, __u64 n)
{
	__u64 *c = bpf_map_lookup_elem(&rtt_counters, &which);

	if (c)
		*c += n;
}

#define TCPOPT_EOL 0
#define TCPOPT_NOP 1
#define TCPOPT_TIMESTAMP 8
#define TCPOLEN_TIMESTAMP 10
#define RTT_MAX_OPTIONS 12	/* Linux sends NOP,NOP,TS (3 steps); a SYN MSS,SACK_PERM,TS (3) */

/* TSval and TSecr (host order) of the TCP header at `th`; -1 when there is no timestamp option. */
static __always_inline int tcp_timestamps(__u8 *th, void *data_end, __u32 *tsval, __u32 *tsecr)
{
	__u32 doff, off = 20;
	int i;

	if ((void *)(th + 20) > data_end)
		return -1;
	doff = (th[12] >> 4) * 4;
	for (i = 0; i < RTT_MAX_OPTIONS; i++) {
		__u8 *opt;
		__u8 kind, len;

		if (off + 2 > doff || off > 60)
			return -1;
		opt = th + off;
		if ((void *)(opt + 2) > data_end)
			return -1;
		kind = opt[0];
		if (kind == TCPOPT_EOL)
			return -1;
		if (kind == TCPOPT_NOP) {
			off++;
			continue;
		}
		len = opt[1];
		if (kind == TCPOPT_TIMESTAMP) {
			if (len != TCPOLEN_TIMESTAMP || off + TCPOLEN_TIMESTAMP > doff ||
			    (void *)(opt + TCPOLEN_TIMESTAMP) > data_end)
				return -1;
			*tsval = bpf_ntohl(*(__u32 *)(opt + 2));
			*tsecr = bpf_ntohl(*(__u32 *)(opt + 6));
			return 0;
		}
		if (len < 2)
			return -1;
		off += len;
	}
	return -1;
}

static __always_inline void reverse(struct pnm_flow_key *dst, const struct pnm_flow_key *src)
{
	__builtin_memcpy(dst->saddr, src->daddr, 16);
	__builtin_memcpy(dst->daddr, src->saddr, 16);
	dst->sport = src->dport;
	dst->dport = src->sport;
	dst->proto = src->proto;
	dst->family = src->family;
	dst->direction = 0;
	dst->pad = 0;
}

static __always_inline void handle(struct __sk_buff *skb)
{
	void *data = (void *)(long)skb->data, *data_end = (void *)(long)skb->data_end;
	struct rtt_ts_key tk = {};
	struct pnm_lat_stats *s;
	struct pnm_packet pkt;
	__u32 tsval, tsecr;
	__u64 now, *sent;
	int full;

	if (pnm_parse(data, data_end, &pkt) < 0 || pkt.key.proto != IPPROTO_TCP || !pkt.l4_offset)
		return;
	/* (the bound tells the verifier the offset is small; long IPv6 extension chains are not timed) */
	if (pkt.l4_offset > 1023 || tcp_timestamps(data + (pkt.l4_offset & 0x3ff), data_end, &tsval, &tsecr) < 0)
		return;
	count(RTT_CTR_TCP_TS, 1);
	now = bpf_ktime_get_ns();

	/* The echo: does the reverse flow wait for this TSecr? */
	if (tsecr && !(pkt.tcp_flags & 0x04 /* RST */)) {
		reverse(&tk.flow, &pkt.key);
		tk.tsval = tsecr;
		sent = bpf_map_lookup_elem(&rtt_timestamps, &tk);
		if (sent && now > *sent) {
			__u64 rtt = now - *sent;

			bpf_map_delete_elem(&rtt_timestamps, &tk);
			s = pnm_lat_entry(&rtt_flows, &tk.flow, &rtt_zero, &full);
			if (s)
				pnm_lat_add(s, rtt, now);
			else if (full)
				count(RTT_CTR_OVERFLOW, 1);
			pnm_hist_add(&rtt_hist, rtt / 1000, &rtt_hist_config);
			count(RTT_CTR_SAMPLES, 1);
			count(RTT_CTR_SUM_US, rtt / 1000);
		}
	}
	/* The send: remember the first packet of this TSval, if it is one the peer will answer soon. */
	if (tsval && (pnm_payload_len(data, data_end, &pkt) || (pkt.tcp_flags & 0x03 /* SYN, FIN */))) {
		__builtin_memcpy(&tk.flow, &pkt.key, sizeof(tk.flow));
		tk.flow.direction = 0;
		tk.tsval = tsval;
		/* look first: an LRU update takes a free node before it finds the key exists, and most
		 * segments repeat the TSval of the one before */
		if (!bpf_map_lookup_elem(&rtt_timestamps, &tk) &&
		    !bpf_map_update_elem(&rtt_timestamps, &tk, &now, BPF_NOEXIST))
			count(RTT_CTR_STORED, 1);
	}
}

SEC("tc")
int rtt_ingress(struct __sk_buff *skb)
{
	handle(skb);
	return TC_ACT_UNSPEC;
}

SEC("tc")
int rtt_egress(struct __sk_buff *skb)
{
	handle(skb);
	return TC_ACT_UNSPEC;
}

// SPDX-License-Identifier: GPL-2.0
/* latency: how long packets spend in this host, from bpf_ktime_get_ns() taken by our own program at tc
 * ingress (skb->tstamp is often 0, or another clock) to a later point chosen by `mode`:
 *
 * - reply: tc egress of the first packet of the reverse flow. The ingress packet waits in an LRU map
 *   under its 5-tuple (the oldest unanswered packet of a flow stays; each is matched once): the time
 *   the host takes to answer, the article's packet latency tracker.
 * - stack: the socket (tracepoints tcp_probe, where a segment reaches an established TCP socket, and
 *   sk_data_ready, right after a datagram is queued, read at the queue's tail): the time the stack
 *   takes to deliver. Keyed by the skb's address (bpf_cast_to_kern_ctx), which stays the same
 *   from tc ingress to the socket; a stamp is checked against the socket's local port and max_age, so
 *   an address reused by a later skb that never passed our hook is not mistaken for it.
 * - forward: tc egress of the same skb on another interface (a router): keyed and checked the same way
 *   (5-tuple re-parsed at egress).
 *
 * Per flow (the ingress packet's 5-tuple): count/min/max/sum and a log-linear histogram (latstats.h) in
 * a plain hash with overflow counted; the monitor-wide histogram (log2, or linear=1 for 1-µs buckets). */
#include <linux/bpf.h>
#include <linux/pkt_cls.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_tracing.h>
#define PNM_LAT_KERNEL
#include "packet.bpf.h"
#include "latency.h"

char LICENSE[] SEC("license") = "GPL";

const volatile struct latency_config latency_config = {};

extern void *bpf_cast_to_kern_ctx(void *) __ksym;

/* Only the fields read, relocated by name against the running kernel's BTF (CO-RE): no vmlinux.h. */
struct sock_common___pnm {
	unsigned short skc_family;
	__u16 skc_num;
} __attribute__((preserve_access_index));

struct sk_buff_head___pnm {
	void *prev;
} __attribute__((preserve_access_index));

struct sock___pnm {
	struct sock_common___pnm __sk_common;
	struct sk_buff_head___pnm sk_receive_queue;
	__u16 sk_protocol;
} __attribute__((preserve_access_index));

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 16384);	/* option max_pending */
	__type(key, struct pnm_flow_key);
	__type(value, __u64);
} latency_by_flow SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 16384);	/* option max_pending */
	__type(key, __u64);
	__type(value, struct latency_stamp);
} latency_by_skb SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 4096);	/* option max_entries */
	__type(key, struct pnm_flow_key);
	__type(value, struct pnm_lat_stats);
} latency_flows SEC(".maps");

PNM_HIST_MAP(latency_hist);
PNM_LAT_ZERO_MAP(latency_zero);

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, LATENCY_NR_CTR);
	__type(key, __u32);
	__type(value, __u64);
} latency_counters SEC(".maps");

static __always_inline void count(__u32 which, __u64 n)
{
	__u64 *c = bpf_map_lookup_elem(&latency_counters, &which);

	if (c)
		*c += n;
}

static __always_inline void sample(const struct pnm_flow_key *flow, __u64 then, __u64 now)
{
	struct pnm_lat_stats *s;
	__u64 ns = now - then;
	int full;

	s = pnm_lat_entry(&latency_flows, flow, &latency_zero, &full);
	if (s)
		pnm_lat_add(s, ns, now);
	else if (full)
		count(LATENCY_CTR_OVERFLOW, 1);
	pnm_hist_add(&latency_hist, ns / 1000, &latency_config.hist);
	count(LATENCY_CTR_MATCHED, 1);
	count(LATENCY_CTR_SUM_US, ns / 1000);
}

static __always_inline int parse(struct __sk_buff *skb, struct pnm_packet *pkt)
{
	if (pnm_parse((void *)(long)skb->data, (void *)(long)skb->data_end, pkt) < 0)
		return -1;
	pkt->key.direction = 0;
	return 0;
}

SEC("tc")
int latency_ingress(struct __sk_buff *skb)
{
	struct latency_stamp stamp = {};
	struct pnm_packet pkt;
	__u64 now, addr;

	if (parse(skb, &pkt) < 0)
		return TC_ACT_UNSPEC;
	now = bpf_ktime_get_ns();
	if (latency_config.mode == LATENCY_MODE_REPLY) {
		/* the oldest unanswered packet of the flow keeps its stamp (look first: an LRU update takes a
		 * free node before it finds the key exists) */
		if (!bpf_map_lookup_elem(&latency_by_flow, &pkt.key) &&
		    !bpf_map_update_elem(&latency_by_flow, &pkt.key, &now, BPF_NOEXIST))
			count(LATENCY_CTR_STAMPED, 1);
		return TC_ACT_UNSPEC;
	}
	/* stack: only what a TCP or UDP socket can receive */
	if (latency_config.mode == LATENCY_MODE_STACK && pkt.key.proto != IPPROTO_TCP && pkt.key.proto != IPPROTO_UDP)
		return TC_ACT_UNSPEC;
	addr = (__u64)(long)bpf_cast_to_kern_ctx(skb);
	stamp.ts_ns = now;
	__builtin_memcpy(&stamp.flow, &pkt.key, sizeof(stamp.flow));
	if (!bpf_map_update_elem(&latency_by_skb, &addr, &stamp, BPF_ANY))
		count(LATENCY_CTR_STAMPED, 1);
	return TC_ACT_UNSPEC;
}

static __always_inline int same_flow(const struct pnm_flow_key *a, const struct pnm_flow_key *b)
{
	const __u8 *x = (const __u8 *)a, *y = (const __u8 *)b;
	__u8 diff = 0;
	int i;

	/* BPF has no memcmp; 40 byte compares, unrolled */
#pragma unroll
	for (i = 0; i < sizeof(*a); i++)
		diff |= x[i] ^ y[i];
	return !diff;
}

SEC("tc")
int latency_egress(struct __sk_buff *skb)
{
	struct pnm_flow_key back = {};
	struct latency_stamp *stamp;
	struct pnm_packet pkt;
	__u64 now, *then, addr;

	if (latency_config.mode == LATENCY_MODE_STACK || parse(skb, &pkt) < 0)
		return TC_ACT_UNSPEC;
	now = bpf_ktime_get_ns();
	if (latency_config.mode == LATENCY_MODE_REPLY) {
		__builtin_memcpy(back.saddr, pkt.key.daddr, 16);
		__builtin_memcpy(back.daddr, pkt.key.saddr, 16);
		back.sport = pkt.key.dport;
		back.dport = pkt.key.sport;
		back.proto = pkt.key.proto;
		back.family = pkt.key.family;
		then = bpf_map_lookup_elem(&latency_by_flow, &back);
		if (then && now >= *then) {
			__u64 t = *then;

			bpf_map_delete_elem(&latency_by_flow, &back);
			sample(&back, t, now);
		}
		return TC_ACT_UNSPEC;
	}
	addr = (__u64)(long)bpf_cast_to_kern_ctx(skb);
	stamp = bpf_map_lookup_elem(&latency_by_skb, &addr);
	if (!stamp)
		return TC_ACT_UNSPEC;
	if (now < stamp->ts_ns || now - stamp->ts_ns > latency_config.max_age_ns || !same_flow(&stamp->flow, &pkt.key)) {
		count(LATENCY_CTR_STALE, 1);
	} else {
		struct latency_stamp found = *stamp;

		sample(&found.flow, found.ts_ns, now);
	}
	bpf_map_delete_elem(&latency_by_skb, &addr);
	return TC_ACT_UNSPEC;
}

/* stack: the skb reaches socket `sk`'s receive queue. */
static __always_inline void delivered(struct sock___pnm *sk, void *skb)
{
	__u64 addr = (__u64)(long)skb, now = bpf_ktime_get_ns();
	struct latency_stamp *stamp = bpf_map_lookup_elem(&latency_by_skb, &addr);
	__u16 port;

	if (!stamp)
		return;
	/* The socket must be the packet's: an inet socket of its protocol on its destination port. (A
	 * netlink socket's queue may hold an skb at the address of a freed, stamped one.) */
	port = sk->__sk_common.skc_num;	/* the local port, host order */
	if (now < stamp->ts_ns || now - stamp->ts_ns > latency_config.max_age_ns ||
	    (sk->__sk_common.skc_family != 2 /* AF_INET */ && sk->__sk_common.skc_family != 10 /* AF_INET6 */) ||
	    sk->sk_protocol != stamp->flow.proto || port != bpf_ntohs(stamp->flow.dport)) {
		count(LATENCY_CTR_STALE, 1);
	} else {
		struct latency_stamp found = *stamp;

		sample(&found.flow, found.ts_ns, now);
	}
	bpf_map_delete_elem(&latency_by_skb, &addr);
}

/* TCP: the segment reaches an established socket (tcp_rcv_established). */
SEC("tp_btf/tcp_probe")
int BPF_PROG(latency_tcp_probe, struct sock___pnm *sk, void *skb)
{
	delivered(sk, skb);
	return 0;
}

/* UDP (and any socket using the default callback): __udp_enqueue_schedule_skb queued the datagram at
 * the tail of the receive queue and wakes the reader. A BTF tracepoint rather than fentry on the
 * enqueue: it needs no trampoline, and loads where fentry is refused (as in the VM this was built
 * on: EPERM). A reader that took the datagram off the queue in between costs the sample (the tail is
 * then another skb, whose stamp does not match), never a wrong one. A TCP segment's stamp is gone by
 * then (tcp_probe took it), so nothing is counted twice. */
SEC("tp_btf/sk_data_ready")
int BPF_PROG(latency_data_ready, struct sock___pnm *sk)
{
	delivered(sk, sk->sk_receive_queue.prev);
	return 0;
}

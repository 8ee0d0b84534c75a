// SPDX-License-Identifier: GPL-2.0
/* ddos: an XDP guard that drops floods before the stack sees them.
 *
 * Per packet, in this order (first match decides):
 *   1. allow list (LPM trie, includes the `protect` CIDRs): pass, never rate-limited;
 *   2. block list (LPM trie, manual blocks with an expiry): drop;
 *   3. the source's entry (LRU hash keyed by its address masked to the prefix length; IPv4 and IPv6
 *      in separate tables): while blocked,
 *      drop; else take a token from its packet bucket (pps), byte bucket (bps) and, for a TCP SYN, its
 *      SYN bucket (syn_pps); an empty bucket blocks the source for block_seconds.
 * Every decision adds to one per-CPU counter. Frames that are not IPv4/IPv6 pass (counted). */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include "common.bpf.h"
#include "packet.bpf.h"
#include "ddos.h"
#include "syncookie.bpf.h"

char LICENSE[] SEC("license") = "GPL";

/* Set by pynetmon/monitors/ddos.py from the options before load. 0 disables a bucket. */
const volatile __u64 ddos_pps = 10000;
const volatile __u64 ddos_bytes_per_s = 0;
const volatile __u64 ddos_syn_pps = 1000;
const volatile __u64 ddos_port_syn_pps = 0;
const volatile __u64 ddos_syn_share_pps = 10;
const volatile __u64 ddos_block_ns = 60ULL * DDOS_NANO;
const volatile __u8 ddos_syncookies = 0;	/* answer SYNs to protected ports with XDP SYN cookies */
/* masks of the source key (option prefix_v4 / prefix_v6), over the 16-byte mapped address */
const volatile __u64 ddos_mask_v4[2] = {~0ULL, ~0ULL};
const volatile __u64 ddos_mask_v6[2] = {~0ULL, ~0ULL};

/* Sources in two LRU hashes of max_sources each: IPv4 keyed by its 4 bytes (hashing and comparing 4
 * bytes instead of 16 saved ~6 ns of the ~27 ns the pass path cost, measured with BPF_PROG_TEST_RUN),
 * IPv6 by its 16. Keys are masked to the prefix length. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 65536);	/* option max_sources */
	__type(key, __u32);
	__type(value, struct ddos_source);
} ddos_sources4 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 65536);	/* option max_sources */
	__type(key, __u8[16]);
	__type(value, struct ddos_source);
} ddos_sources SEC(".maps");

/* Entries in the allow and block lists, kept by user space (it alone writes them): an empty list is
 * not looked up at all, which saves the two LPM trie walks (~4 ns) a packet costs otherwise. An entry
 * is added before its count goes up and removed before it goes down, so a count is never 0 while
 * the list holds an entry that is in force. */
struct ddos_lists ddos_lists;

/* The allow and block lists: one map type, two maps. */
struct ddos_rules {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, 4096);	/* option max_rules */
	__uint(map_flags, BPF_F_NO_PREALLOC);	/* the kernel requires it of an LPM trie */
	__type(key, struct ddos_lpm_key);
	__type(value, struct ddos_rule);
};
struct ddos_rules ddos_allow SEC(".maps");
struct ddos_rules ddos_block SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 4096);	/* option max_ports */
	__type(key, __u16);
	__type(value, struct ddos_port);
} ddos_ports SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 65536);	/* 2,048 events between two reads; more are counted as lost */
} ddos_events SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, DDOS_NR_CTR);
	__type(key, __u32);
	__type(value, __u64);
} ddos_counters SEC(".maps");

/* Refill `*tokens` (nano-units) at `rate` per second over `elapsed` ns, capped at one second's worth,
 * then take `cost` units. Returns 0 when the bucket had them, -1 when it ran dry. */
static __always_inline int take(__u64 *tokens, __u64 rate, __u64 elapsed, __u64 cost)
{
	__u64 cap = rate * DDOS_NANO, t;

	if (elapsed > DDOS_NANO)
		elapsed = DDOS_NANO;	/* a full bucket anyway; keeps the product in range */
	t = *tokens + elapsed * rate;
	if (t > cap)
		t = cap;
	cost *= DDOS_NANO;
	if (t < cost) {
		*tokens = t;
		return -1;
	}
	*tokens = t - cost;
	return 0;
}

static __always_inline void emit(const void *addr, __u64 until, __u16 port, __u8 kind, __u8 reason)
{
	struct ddos_event e = {};

	if (addr)
		__builtin_memcpy(e.addr, addr, 16);
	e.until_ns = until;
	e.port = port;
	e.kind = kind;
	e.reason = reason;
	if (bpf_ringbuf_output(&ddos_events, &e, sizeof(e), 0))
		pnm_count(&ddos_counters, DDOS_CTR_LOST_EVENTS, 1);
}

/* SYN to a port: take from the port's bucket; true when the port is under protection now (*pp: its
 * entry, NULL for a port seen for the first time, which is never protected). */
static __always_inline int port_protected(__u16 port, __u64 now, struct ddos_port **pp)
{
	struct ddos_port *p, init = {};

	p = bpf_map_lookup_elem(&ddos_ports, &port);
	*pp = p;
	if (!p) {
		init.tokens = (ddos_port_syn_pps - 1) * DDOS_NANO;
		init.last_ns = now;
		init.syns = 1;
		bpf_map_update_elem(&ddos_ports, &port, &init, BPF_ANY);
		return 0;
	}
	p->syns++;
	if (take(&p->tokens, ddos_port_syn_pps, now > p->last_ns ? now - p->last_ns : 0, 1) < 0) {
		if (now >= p->protected_until_ns) {
			pnm_count(&ddos_counters, DDOS_CTR_PROTECT_EVENTS, 1);
			emit(0, now + DDOS_PROTECT_NS, port, DDOS_EVENT_PROTECT, 0);
		}
		p->protected_until_ns = now + DDOS_PROTECT_NS;
	}
	p->last_ns = now;
	if (now < p->protected_until_ns)
		return 1;
	return 0;
}

/* The port is protected now (read only: for segments that are not SYNs). */
static __always_inline int port_under_protection(__u16 port, __u64 now)
{
	struct ddos_port *p = bpf_map_lookup_elem(&ddos_ports, &port);

	return p && now < p->protected_until_ns;
}

static __always_inline void port_dropped(__u16 port)
{
	struct ddos_port *p = bpf_map_lookup_elem(&ddos_ports, &port);

	if (p)
		__sync_fetch_and_add(&p->dropped, 1);
}

static __always_inline int drop(__u32 ctr)
{
	pnm_count(&ddos_counters, ctr, 1);
	return XDP_DROP;
}

static __always_inline int pass(void)
{
	pnm_count(&ddos_counters, DDOS_CTR_PASSED, 1);
	return XDP_PASS;
}

/* A SYN to a protected port with syncookies on: answer it with a cookie SYN-ACK. The listener accepts a
 * cookie only within two minutes of sending one itself (tcp_synq_no_recent_overflow), so one SYN a
 * second per port goes on to it, which it answers with its own cookie (tcp_syncookies=2). */
static __always_inline int answer_syn(struct xdp_md *ctx, const struct pnm_packet *pkt, struct ddos_port *p,
				      __u64 now)
{
	int ret;

	if (!p || now - p->kernel_syn_ns >= DDOS_NANO) {
		if (p)
			p->kernel_syn_ns = now;
		pnm_count(&ddos_counters, DDOS_CTR_SYN_TO_KERNEL, 1);
		return pass();
	}
	ret = pnm_synack(ctx, pkt->key.family == PNM_FAMILY_IPV4, pkt->l3_offset);
	if (ret == PNM_SC_SENT) {
		pnm_count(&ddos_counters, DDOS_CTR_SYNCOOKIES, 1);
		return XDP_TX;
	}
	if (ret == PNM_SC_BROKEN)
		return drop(DDOS_CTR_DROP_SYN);
	/* not answerable here (VLAN, IP options, IPv6 extension headers): the listener's own cookie */
	pnm_count(&ddos_counters, DDOS_CTR_SYN_TO_KERNEL, 1);
	return pass();
}

SEC("xdp")
int ddos_xdp(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data, *data_end = (void *)(long)ctx->data_end;
	struct ddos_source *s;
	struct ddos_lpm_key lk;
	struct ddos_rule *rule;
	struct ddos_port *port = 0;
	struct pnm_packet pkt;
	__u64 now, len = data_end - data, key[2], elapsed;
	const volatile __u64 *mask;
	int syn, over, guarded, v4;
	__u32 key4;

	if (pnm_parse(data, data_end, &pkt) < 0) {
		pnm_count(&ddos_counters, DDOS_CTR_NON_IP, 1);
		return pass();
	}
	lk.prefixlen = 128;
	__builtin_memcpy(lk.addr, pkt.key.saddr, 16);
	rule = ddos_lists.allow ? bpf_map_lookup_elem(&ddos_allow, &lk) : 0;
	if (rule) {
		__sync_fetch_and_add(&rule->packets, 1);
		pnm_count(&ddos_counters, DDOS_CTR_ALLOWED, 1);
		return pass();
	}
	/* the coarse clock (CLOCK_MONOTONIC_COARSE, one tick behind at most) costs a few ns where the
	 * precise one took ~26 ns per packet here (measured); buckets hold a second, so a tick is noise */
	now = bpf_ktime_get_coarse_ns();
	rule = ddos_lists.block ? bpf_map_lookup_elem(&ddos_block, &lk) : 0;
	/* an expired manual block no longer applies; user space removes it */
	if (rule && (!rule->until_ns || now < rule->until_ns)) {
		__sync_fetch_and_add(&rule->packets, 1);
		return drop(DDOS_CTR_DROP_BLOCKLIST);
	}

	v4 = pkt.key.family == PNM_FAMILY_IPV4;
	mask = v4 ? ddos_mask_v4 : ddos_mask_v6;
	__builtin_memcpy(key, pkt.key.saddr, 16);
	key[0] &= mask[0];
	key[1] &= mask[1];
	key4 = key[1] >> 32;	/* bytes 12..15: the IPv4 address, in memory order */
	syn = pkt.key.proto == IPPROTO_TCP && (pkt.tcp_flags & 0x12) == 0x02;	/* SYN without ACK */
	if (ddos_syncookies && !syn && pkt.key.proto == IPPROTO_TCP && port_under_protection(pkt.key.dport, now) &&
	    !pnm_ack_ok(ctx, v4, pkt.l3_offset)) {
		pnm_count(&ddos_counters, DDOS_CTR_BAD_COOKIE_ACKS, 1);
		port_dropped(pkt.key.dport);
		return drop(DDOS_CTR_DROP_SYN);
	}
	guarded = syn && ddos_port_syn_pps && port_protected(pkt.key.dport, now, &port);
	/* one call site per map, so the verifier can inline each lookup */
	if (v4)
		s = bpf_map_lookup_elem(&ddos_sources4, &key4);
	else
		s = bpf_map_lookup_elem(&ddos_sources, key);
	if (!s) {
		/* zeroed here, not at the top: 88 bytes of stores per packet on the pass path (~2 ns) */
		struct ddos_source init = {};

		/* a new source starts with full buckets, this packet taken */
		init.tokens = ddos_pps ? (ddos_pps - 1) * DDOS_NANO : 0;
		init.byte_tokens = ddos_bytes_per_s > len ? (ddos_bytes_per_s - len) * DDOS_NANO : 0;
		init.syn_tokens = ddos_syn_pps ? (ddos_syn_pps - syn) * DDOS_NANO : 0;
		init.last_ns = now;
		init.packets = 1;
		init.win_start_ns = now;
		init.win_packets = 1;
		init.share_tokens = ddos_syn_share_pps * DDOS_NANO - (guarded ? DDOS_NANO : 0);
		/* an LRU update cannot fail for want of room; this first packet passes in any case */
		if (v4)
			bpf_map_update_elem(&ddos_sources4, &key4, &init, BPF_ANY);
		else
			bpf_map_update_elem(&ddos_sources, key, &init, BPF_ANY);
		if (guarded && ddos_syncookies)
			return answer_syn(ctx, &pkt, port, now);
		return pass();
	}
	s->packets++;
	if (now - s->win_start_ns >= DDOS_NANO) {
		s->win_start_ns = now;
		s->win_packets = 0;
	}
	s->win_packets++;
	if (s->blocked_until_ns) {
		if (now < s->blocked_until_ns) {
			s->dropped++;
			return drop(s->reason == DDOS_REASON_SYN ? DDOS_CTR_DROP_SYN : DDOS_CTR_DROP_RATE);
		}
		/* released: it starts again with full buckets */
		s->blocked_until_ns = 0;
		s->reason = DDOS_REASON_NONE;
		s->tokens = ddos_pps * DDOS_NANO;
		s->byte_tokens = ddos_bytes_per_s * DDOS_NANO;
		s->syn_tokens = ddos_syn_pps * DDOS_NANO;
		s->share_tokens = ddos_syn_share_pps * DDOS_NANO;
		s->last_ns = now;
	}
	elapsed = now > s->last_ns ? now - s->last_ns : 0;
	s->last_ns = now;
	over = DDOS_REASON_NONE;
	if (ddos_pps && take(&s->tokens, ddos_pps, elapsed, 1) < 0)
		over = DDOS_REASON_RATE;
	if (ddos_bytes_per_s && take(&s->byte_tokens, ddos_bytes_per_s, elapsed, len) < 0)
		over = DDOS_REASON_RATE;
	if (syn && ddos_syn_pps && take(&s->syn_tokens, ddos_syn_pps, elapsed, 1) < 0)
		over = DDOS_REASON_SYN;
	if (over == DDOS_REASON_NONE) {
		/* a port under SYN protection: this source's SYNs beyond its share are dropped, not blocked */
		if (guarded && ddos_syncookies)
			return answer_syn(ctx, &pkt, port, now);
		if (guarded && take(&s->share_tokens, ddos_syn_share_pps, elapsed, 1) < 0) {
			port_dropped(pkt.key.dport);
			return drop(DDOS_CTR_DROP_SYN);
		}
		return pass();
	}
	s->blocked_until_ns = now + ddos_block_ns;
	s->reason = over;
	s->dropped++;
	pnm_count(&ddos_counters, DDOS_CTR_BLOCK_EVENTS, 1);
	emit(key, s->blocked_until_ns, 0, DDOS_EVENT_BLOCK, over);
	return drop(over == DDOS_REASON_SYN ? DDOS_CTR_DROP_SYN : DDOS_CTR_DROP_RATE);
}

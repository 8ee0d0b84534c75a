// SPDX-License-Identifier: GPL-2.0
/* qos: classify every packet into a QoS class at tcx (egress, or ingress for policing), then
 *   - shape: set skb->priority to the class's HTB class id, so the HTB tree that pynetmon put on the
 *     interface queues it in that class (HTB reads skb->priority before any filter); at ingress the
 *     packet is redirected to an ifb device that carries the HTB tree;
 *   - police: take the packet's bytes from the class's token bucket, drop it when the bucket is dry;
 *   - either: a per-flow bucket inside the class (flow_rate), and the DSCP rewrite (mark_dscp) with the
 *     IPv4 header checksum fixed (IPv6 has none).
 * Classification: the first match entry of the active rule set that holds decides; none: the default
 * class. Every packet adds to its class's per-CPU counters. */
#include <linux/bpf.h>
#include <linux/pkt_cls.h>
#include <linux/stddef.h>
#include <bpf/bpf_helpers.h>
#include "common.bpf.h"
#include "packet.bpf.h"
#include "qos.h"

char LICENSE[] SEC("license") = "GPL";

/* Shape mode at ingress: the ifb device whose HTB tree queues what arrives (set before load; 0: none).
 * Packets are redirected to its egress; ifb hands them back to this interface's receive path with tc
 * classification skipped, so they pass this program once. */
const volatile __u32 qos_redirect_ifindex = 0;

/* Two rule sets: user space fills the one not in use, then switches qos_active[0] to it. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 2);
	__type(key, __u32);
	__type(value, struct qos_set);
} qos_sets SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u32);
} qos_active SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, QOS_MAX_CLASSES);
	__type(key, __u32);
	__type(value, struct qos_class_bucket);
} qos_buckets SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 65536);	/* option max_flows */
	__type(key, struct qos_flow_key);
	__type(value, struct qos_bucket);
} qos_flows SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, QOS_MAX_CLASSES);
	__type(key, __u32);
	__type(value, struct qos_stats);
} qos_stats SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, QOS_NR_CTR);
	__type(key, __u32);
	__type(value, __u64);
} qos_counters SEC(".maps");

/* What the rule walk (a bpf_loop callback: verified once, not once per rule) needs of the packet. */
struct walk {
	struct qos_set *set;
	__u64 saddr[2];
	__u64 daddr[2];
	__u16 sport;		/* host order */
	__u16 dport;
	__u8 proto;
	__u8 has_ports;		/* TCP or UDP with its header reached */
	__u8 dscp;
	__u8 pad;
	__u32 slot;		/* the result */
};

static __always_inline int in_ranges(const struct qos_range *r, __u8 n, __u16 port)
{
	int i;

#pragma unroll
	for (i = 0; i < QOS_MAX_RANGES; i++)
		if (i < n && port >= r[i].lo && port <= r[i].hi)
			return 1;
	return 0;
}

static __always_inline int in_prefixes(const struct qos_prefix *p, __u8 n, const __u64 *a)
{
	int i;

#pragma unroll
	for (i = 0; i < QOS_MAX_PREFIXES; i++)
		if (i < n && (a[0] & p[i].mask[0]) == p[i].addr[0] && (a[1] & p[i].mask[1]) == p[i].addr[1])
			return 1;
	return 0;
}

static long match_rule(__u64 i, void *arg)
{
	struct walk *w = arg;
	struct qos_rule *r;

	if (i >= QOS_MAX_RULES || i >= w->set->nrules)
		return 1;
	r = &w->set->rules[i];
	if (r->proto && r->proto != w->proto)
		return 0;
	if (r->dscp_mask && !(r->dscp_mask >> (w->dscp & 63) & 1))
		return 0;
	if (r->n_ports | r->n_sports | r->n_dports) {
		if (!w->has_ports)
			return 0;
		if (r->n_ports && !in_ranges(r->ports, r->n_ports, w->sport) &&
		    !in_ranges(r->ports, r->n_ports, w->dport))
			return 0;
		if (r->n_sports && !in_ranges(r->sports, r->n_sports, w->sport))
			return 0;
		if (r->n_dports && !in_ranges(r->dports, r->n_dports, w->dport))
			return 0;
	}
	if (r->n_src && !in_prefixes(r->src, r->n_src, w->saddr))
		return 0;
	if (r->n_dst && !in_prefixes(r->dst, r->n_dst, w->daddr))
		return 0;
	if (r->n_addr && !in_prefixes(r->addr, r->n_addr, w->saddr) && !in_prefixes(r->addr, r->n_addr, w->daddr))
		return 0;
	w->slot = r->slot;
	return 1;
}

/* Refill `b` at `rate` bytes/s (full after `fill_ns`), then take `len` bytes. 0: taken; -1: too few. */
static __always_inline int take(__u64 *tokens, __u64 *last_ns, __u64 rate, __u64 burst, __u64 fill_ns,
				__u64 len, __u64 now)
{
	__u64 elapsed = now > *last_ns ? now - *last_ns : 0, t;

	*last_ns = now;
	if (elapsed >= fill_ns)
		t = burst * QOS_NANO;
	else
		t = *tokens + elapsed * rate;	/* < burst * QOS_NANO: no overflow */
	if (t > burst * QOS_NANO)
		t = burst * QOS_NANO;
	len *= QOS_NANO;
	if (t < len) {
		*tokens = t;
		return -1;
	}
	*tokens = t - len;
	return 0;
}

static __always_inline int class_bucket(__u32 slot, const struct qos_class *c, __u64 len, __u64 now)
{
	struct qos_class_bucket *b = bpf_map_lookup_elem(&qos_buckets, &slot);
	int ret;

	if (!b)
		return 0;
	bpf_spin_lock(&b->lock);
	if (b->rate != c->rate || b->burst != c->burst) {
		/* a new or changed class starts with a full bucket */
		b->rate = c->rate;
		b->burst = c->burst;
		b->tokens = c->burst * QOS_NANO;
		b->last_ns = now;
	}
	ret = take(&b->tokens, &b->last_ns, c->rate, c->burst, c->fill_ns, len, now);
	bpf_spin_unlock(&b->lock);
	return ret;
}

static __always_inline int flow_bucket(__u32 slot, const struct qos_class *c, const struct pnm_packet *pkt,
				       __u64 len, __u64 now)
{
	struct qos_flow_key k = {};
	struct qos_bucket *b, init = {};

	__builtin_memcpy(k.saddr, pkt->key.saddr, 16);
	__builtin_memcpy(k.daddr, pkt->key.daddr, 16);
	k.sport = pkt->key.sport;
	k.dport = pkt->key.dport;
	k.proto = pkt->key.proto;
	k.slot = slot;
	b = bpf_map_lookup_elem(&qos_flows, &k);
	if (!b) {
		/* a new flow starts with a full bucket, this packet taken */
		init.last_ns = now;
		init.tokens = c->flow_burst * QOS_NANO;
		if (take(&init.tokens, &init.last_ns, c->flow_rate, c->flow_burst, c->flow_fill_ns, len, now) < 0)
			return -1;
		if (bpf_map_update_elem(&qos_flows, &k, &init, BPF_ANY))
			pnm_count(&qos_counters, QOS_CTR_FLOW_FULL, 1);
		return 0;
	}
	/* one flow is one CPU's most of the time; a race loses a refill, never a counter */
	return take(&b->tokens, &b->last_ns, c->flow_rate, c->flow_burst, c->flow_fill_ns, len, now);
}

/* Rewrite the DSCP bits, keeping ECN; IPv4's header checksum follows (RFC 1624 incremental update). */
static __always_inline int mark(struct __sk_buff *skb, const struct pnm_packet *pkt, __u8 dscp)
{
	__u32 off = pkt->l3_offset & 0xff;
	__u8 hdr[2], new[2];

	if (bpf_skb_load_bytes(skb, off, hdr, 2))
		return -1;
	if (pkt->key.family == PNM_FAMILY_IPV4) {
		new[0] = hdr[0];
		new[1] = (dscp << 2) | (hdr[1] & 3);
	} else {	/* version:4 traffic class:8 flow label:20 */
		new[0] = (hdr[0] & 0xf0) | (dscp >> 2);
		new[1] = ((dscp & 3) << 6) | (hdr[1] & 0x3f);
	}
	if (new[0] == hdr[0] && new[1] == hdr[1])
		return 0;
	if (pkt->key.family == PNM_FAMILY_IPV4 &&
	    bpf_l3_csum_replace(skb, off + offsetof(struct iphdr, check), *(__u16 *)hdr, *(__u16 *)new, 2))
		return -1;
	return bpf_skb_store_bytes(skb, off, new, 2, 0) ? -1 : 0;
}

static __always_inline __u8 packet_dscp(void *data, void *data_end, const struct pnm_packet *pkt)
{
	__u8 *h = data + (pkt->l3_offset & 0xff);

	if ((void *)(h + 2) > data_end)
		return 0;
	if (pkt->key.family == PNM_FAMILY_IPV4)
		return h[1] >> 2;
	return ((h[0] & 0x0f) << 2) | (h[1] >> 6);
}

SEC("tc")
int qos_tc(struct __sk_buff *skb)
{
	void *data = (void *)(long)skb->data, *data_end = (void *)(long)skb->data_end;
	struct pnm_packet pkt;
	struct qos_stats *st;
	struct qos_class *c;
	struct walk w = {};
	__u32 zero = 0, *active, slot = QOS_DEFAULT_SLOT;
	__u64 now, len = skb->len;
	int ip;

	active = bpf_map_lookup_elem(&qos_active, &zero);
	if (!active)
		return TC_ACT_UNSPEC;
	w.set = bpf_map_lookup_elem(&qos_sets, active);
	if (!w.set)
		return TC_ACT_UNSPEC;
	ip = pnm_parse(data, data_end, &pkt) == 0;
	if (ip) {
		__builtin_memcpy(w.saddr, pkt.key.saddr, 16);
		__builtin_memcpy(w.daddr, pkt.key.daddr, 16);
		w.proto = pkt.key.proto;
		w.has_ports = pkt.l4_offset && (pkt.key.proto == IPPROTO_TCP || pkt.key.proto == IPPROTO_UDP);
		w.sport = bpf_ntohs(pkt.key.sport);
		w.dport = bpf_ntohs(pkt.key.dport);
		w.dscp = packet_dscp(data, data_end, &pkt);
		w.slot = QOS_DEFAULT_SLOT;
		bpf_loop(QOS_MAX_RULES, match_rule, &w, 0);
		slot = w.slot;
	} else {
		pnm_count(&qos_counters, QOS_CTR_NON_IP, 1);
	}
	if (slot >= QOS_MAX_CLASSES)
		slot = QOS_DEFAULT_SLOT;
	c = &w.set->classes[slot];
	st = bpf_map_lookup_elem(&qos_stats, &slot);
	if (!st)
		return TC_ACT_UNSPEC;
	/* the coarse clock (one tick behind at most) is a few ns; buckets of a tick's worth or more of
	 * bytes are exact with it, as in ddos */
	now = bpf_ktime_get_coarse_ns();
	if (c->rate && class_bucket(slot, c, len, now) < 0) {
		st->dropped_class++;
		return TC_ACT_SHOT;
	}
	if (ip && c->flow_rate && flow_bucket(slot, c, &pkt, len, now) < 0) {
		st->dropped_flow++;
		return TC_ACT_SHOT;
	}
	if (c->priority)
		skb->priority = c->priority;
	if (ip && c->mark) {
		if (mark(skb, &pkt, c->dscp) < 0)
			pnm_count(&qos_counters, QOS_CTR_MARK_FAILED, 1);
		else
			st->marked++;
	}
	st->packets++;
	st->bytes += len;
	if (qos_redirect_ifindex)
		return bpf_redirect(qos_redirect_ifindex, 0);
	return TC_ACT_UNSPEC;
}

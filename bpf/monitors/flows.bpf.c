// SPDX-License-Identifier: GPL-2.0
/* flows: packets and bytes per 5-tuple and direction, at tcx ingress and egress (or XDP ingress).
 *
 * One hash entry per flow, its counters added with atomic instructions, so counts are exact.
 * The table is a plain hash, not an LRU: an LRU would silently evict flows and lose their counts, while
 * a full hash refuses the new flow, which we count as overflow. User space removes flows idle for
 * `idle_timeout` seconds, so the table frees itself. */
#include <linux/bpf.h>
#include <linux/pkt_cls.h>
#include <bpf/bpf_helpers.h>
#include "common.bpf.h"
#include "packet.bpf.h"
#include "flows.h"

char LICENSE[] SEC("license") = "GPL";

/* Which key fields to keep (option aggregate): FLOWS_KEEP_* bits. */
const volatile __u32 flows_keep = FLOWS_KEEP_ALL;

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 65536);	/* option max_entries */
	__type(key, struct pnm_flow_key);
	__type(value, struct flows_value);
} flows_table SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, FLOWS_NR_CTR);
	__type(key, __u32);
	__type(value, __u64);
} flows_counters SEC(".maps");

static __always_inline void account(void *data, void *data_end, __u64 len, __u8 direction)
{
	struct pnm_packet pkt;
	struct flows_value *v, init = {};
	__u64 now;
	long err;

	if (pnm_parse(data, data_end, &pkt) < 0) {
		pnm_count(&flows_counters, FLOWS_CTR_NON_IP, 1);
		return;
	}
	pkt.key.direction = direction;
	if (flows_keep != FLOWS_KEEP_ALL) {
		if (!(flows_keep & FLOWS_KEEP_SRC))
			__builtin_memset(pkt.key.saddr, 0, 16);
		if (!(flows_keep & FLOWS_KEEP_DST))
			__builtin_memset(pkt.key.daddr, 0, 16);
		if (!(flows_keep & FLOWS_KEEP_SPORT))
			pkt.key.sport = 0;
		if (!(flows_keep & FLOWS_KEEP_DPORT))
			pkt.key.dport = 0;
		if (!(flows_keep & FLOWS_KEEP_PROTO))
			pkt.key.proto = 0;
	}
	now = bpf_ktime_get_ns();
	v = bpf_map_lookup_elem(&flows_table, &pkt.key);
	if (!v) {
		init.packets = 1;
		init.bytes = len;
		init.first_seen_ns = now;
		init.last_seen_ns = now;
		init.tcp_flags = pkt.tcp_flags;
		err = bpf_map_update_elem(&flows_table, &pkt.key, &init, BPF_NOEXIST);
		if (!err)
			return;
		if (err != -17 /* EEXIST: another CPU created it meanwhile; add to it */) {
			pnm_count(&flows_counters, FLOWS_CTR_OVERFLOW, 1);
			return;
		}
		v = bpf_map_lookup_elem(&flows_table, &pkt.key);
		if (!v)
			return;
	}
	__sync_fetch_and_add(&v->packets, 1);
	__sync_fetch_and_add(&v->bytes, len);
	/* a plain store: two CPUs racing here write nearly the same time, and either is right */
	if (now > v->last_seen_ns)
		v->last_seen_ns = now;
	/* the flags rarely change: read first, so the common case takes no atomic */
	if ((v->tcp_flags & pkt.tcp_flags) != pkt.tcp_flags)
		__sync_fetch_and_or(&v->tcp_flags, (__u64)pkt.tcp_flags);
}

/* A pcap record's original length: the frame as on the wire, with a VLAN tag the kernel holds aside. */
static __always_inline __u64 wire_len(struct __sk_buff *skb)
{
	return skb->len + (skb->vlan_present ? 4 : 0);
}

SEC("tc")
int flows_ingress(struct __sk_buff *skb)
{
	account((void *)(long)skb->data, (void *)(long)skb->data_end, wire_len(skb), PNM_DIR_INGRESS);
	return TC_ACT_UNSPEC;
}

SEC("tc")
int flows_egress(struct __sk_buff *skb)
{
	account((void *)(long)skb->data, (void *)(long)skb->data_end, wire_len(skb), PNM_DIR_EGRESS);
	return TC_ACT_UNSPEC;
}

SEC("xdp")
int flows_xdp(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data, *data_end = (void *)(long)ctx->data_end;

	account(data, data_end, data_end - data, PNM_DIR_INGRESS);
	return XDP_PASS;
}

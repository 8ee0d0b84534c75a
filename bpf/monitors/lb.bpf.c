// SPDX-License-Identifier: GPL-2.0
/* lb: an L4 load balancer on tc (tcx), between clients on one side of a router and backends on others.
 *
 * Ingress of the client-facing interface (lb_ingress), before the router's routing decision:
 *   a packet to a virtual service (VIP, port, protocol in lb_services) finds its connection in lb_conns
 *   (LRU) or, for the first packet of a connection (and for every TCP SYN), gets a backend from the
 *   service's Maglev table (lb_ring, indexed by a hash of the 5-tuple, or of the client address with
 *   sticky) and an entry in lb_conns and in lb_reverse. The destination address and port are rewritten
 *   to the backend's (IP and TCP/UDP checksums fixed up incrementally); the router forwards it.
 * Egress of the same interface (lb_egress): a reply from a backend (in lb_reverse) gets the VIP and the
 *   service port back as its source, so clients only ever see the VIP.
 * Packets to no service pass untouched. A connection keeps its backend while the tables change: the
 * backend's address is in its lb_conns entry, not only in the table. */
#include <linux/bpf.h>
#include <linux/pkt_cls.h>
#include <bpf/bpf_helpers.h>
#include "common.bpf.h"
#include "packet.bpf.h"
#include "lb.h"

char LICENSE[] SEC("license") = "GPL";

/* Set by pynetmon/monitors/lb.py before load. */
const volatile __u32 lb_table_size = 4099;	/* slots of one Maglev table (a prime) */
const volatile __u64 lb_seed = 0;		/* hash seed: the table cannot be aimed at from outside */

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 32);	/* 2 * option max_services */
	__type(key, struct lb_vip);
	__type(value, struct lb_service);
} lb_services SEC(".maps");

/* Two tables of lb_table_size slots per service (the one in use and the one being written), each slot
 * a backend id. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);		/* max_services * 2 * table_size, set before load */
	__type(key, __u32);
	__type(value, __u32);
} lb_ring SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1024);	/* option max_backends */
	__type(key, __u32);
	__type(value, struct lb_backend);
} lb_backends SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 65536);	/* option max_connections */
	__type(key, struct lb_conn_key);
	__type(value, struct lb_conn);
} lb_conns SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 65536);	/* option max_connections */
	__type(key, struct lb_conn_key);
	__type(value, struct lb_reverse);
} lb_reverse SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1024);	/* option max_backends */
	__type(key, __u32);
	__type(value, struct lb_backend_stats);
} lb_stats SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, LB_NR_CTR);
	__type(key, __u32);
	__type(value, __u64);
} lb_counters SEC(".maps");

static __always_inline __u64 mix(__u64 h)
{
	/* murmur3's 64-bit finaliser */
	h ^= h >> 33;
	h *= 0xff51afd7ed558ccdULL;
	h ^= h >> 33;
	h *= 0xc4ceb9fe1a85ec53ULL;
	h ^= h >> 33;
	return h;
}

static __always_inline __u32 conn_hash(const struct lb_conn_key *k, int sticky)
{
	__u64 h = mix(((__u64)k->saddr << 32 | k->daddr) ^ lb_seed);
	__u64 rest = (__u64)k->dport << 8 | k->proto;

	if (!sticky)
		rest |= (__u64)k->sport << 24;
	return (__u32)mix(h ^ rest);
}

static __always_inline void account(__u32 id, __u64 bytes, int new_conn)
{
	struct lb_backend_stats *s = bpf_map_lookup_elem(&lb_stats, &id);

	if (!s)
		return;
	s->packets++;
	s->bytes += bytes;
	s->connections += new_conn;
}

/* Rewrite the destination (dst) or source address and port of an IPv4 TCP/UDP packet, with the IP
 * checksum and the transport checksum (pseudo header included) fixed up incrementally. The helpers
 * handle offloaded checksums (CHECKSUM_PARTIAL) and keep a UDP checksum of 0 as "none". */
static __always_inline int rewrite(struct __sk_buff *skb, __u32 l3, __u32 l4, __u8 proto, int dst,
				   __u32 old_addr, __u32 new_addr, __u16 old_port, __u16 new_port)
{
	__u32 addr_off = l3 + (dst ? 16 : 12), port_off = l4 + (dst ? 2 : 0);
	__u32 csum_off = l4 + (proto == IPPROTO_TCP ? 16 : 6);
	__u64 mangled = proto == IPPROTO_UDP ? BPF_F_MARK_MANGLED_0 : 0;

	if (bpf_l4_csum_replace(skb, csum_off, old_addr, new_addr, mangled | BPF_F_PSEUDO_HDR | 4))
		return -1;
	if (bpf_l4_csum_replace(skb, csum_off, old_port, new_port, mangled | 2))
		return -1;
	if (bpf_l3_csum_replace(skb, l3 + 10, old_addr, new_addr, 4))
		return -1;
	if (bpf_skb_store_bytes(skb, addr_off, &new_addr, 4, 0))
		return -1;
	if (bpf_skb_store_bytes(skb, port_off, &new_port, 2, 0))
		return -1;
	return 0;
}

/* Parse an IPv4 TCP/UDP packet into `k` (source → destination as on the wire); -1 for anything else. */
static __always_inline int parse(struct __sk_buff *skb, struct pnm_packet *pkt, struct lb_conn_key *k)
{
	void *data, *data_end;

	/* headers outside the linear part (rare on veth) are pulled in so the parser can read them */
	if (skb->data_end - skb->data < 14 + 20 + 20 && skb->len > skb->data_end - skb->data)
		bpf_skb_pull_data(skb, skb->len < 128 ? skb->len : 128);
	data = (void *)(long)skb->data;
	data_end = (void *)(long)skb->data_end;
	if (pnm_parse(data, data_end, pkt) < 0 || pkt->key.family != PNM_FAMILY_IPV4 || !pkt->l4_offset)
		return -1;
	if (pkt->key.proto != IPPROTO_TCP && pkt->key.proto != IPPROTO_UDP)
		return -1;
	__builtin_memset(k, 0, sizeof(*k));
	__builtin_memcpy(&k->saddr, pkt->key.saddr + 12, 4);
	__builtin_memcpy(&k->daddr, pkt->key.daddr + 12, 4);
	k->sport = pkt->key.sport;
	k->dport = pkt->key.dport;
	k->proto = pkt->key.proto;
	return 0;
}

SEC("tc")
int lb_ingress(struct __sk_buff *skb)
{
	struct lb_conn_key k, rk = {};
	struct lb_vip vip = {};
	struct lb_service *svc;
	struct lb_conn *found, conn = {};
	struct lb_reverse rev = {};
	struct lb_backend *be;
	struct pnm_packet pkt;
	__u32 slot, *id, seq = 0;
	int syn, new_conn = 0;

	if (parse(skb, &pkt, &k) < 0) {
		pnm_count(&lb_counters, LB_CTR_OTHER, 1);
		return TC_ACT_UNSPEC;
	}
	vip.addr = k.daddr;
	vip.port = k.dport;
	vip.proto = k.proto;
	svc = bpf_map_lookup_elem(&lb_services, &vip);
	if (!svc) {
		pnm_count(&lb_counters, LB_CTR_OTHER, 1);
		return TC_ACT_UNSPEC;
	}
	syn = k.proto == IPPROTO_TCP && (pkt.tcp_flags & 0x12) == 0x02;	/* SYN without ACK */
	if (syn)
		bpf_skb_load_bytes(skb, pkt.l4_offset + 4, &seq, 4);
	found = bpf_map_lookup_elem(&lb_conns, &k);
	if (found)
		conn = *found;
	/* a SYN starts a connection: it is balanced afresh (a reused 5-tuple must not stick to a backend
	 * that has since failed); a retransmitted SYN finds the same backend while the table is unchanged */
	if (!found || syn) {
		if (svc->flags & LB_F_EMPTY) {
			pnm_count(&lb_counters, LB_CTR_NO_BACKEND, 1);
			return TC_ACT_SHOT;
		}
		slot = svc->ring_base + conn_hash(&k, svc->flags & LB_F_STICKY) % lb_table_size;
		id = bpf_map_lookup_elem(&lb_ring, &slot);
		if (!id)
			return TC_ACT_SHOT;	/* cannot happen: ring_base + slot < the ring's size */
		be = bpf_map_lookup_elem(&lb_backends, id);
		if (!be)
			return TC_ACT_SHOT;
		new_conn = !found || conn.backend_id != *id || conn.backend_addr != be->addr ||
			   conn.backend_port != be->port || conn.syn_seq != seq;
		if (new_conn) {
			conn.backend_addr = be->addr;
			conn.backend_port = be->port;
			conn.backend_id = *id;
			conn.syn_seq = seq;
			bpf_map_update_elem(&lb_conns, &k, &conn, BPF_ANY);
			rk.saddr = conn.backend_addr;
			rk.daddr = k.saddr;
			rk.sport = conn.backend_port;
			rk.dport = k.sport;
			rk.proto = k.proto;
			rev.vip_addr = k.daddr;
			rev.vip_port = k.dport;
			rev.backend_id = conn.backend_id;
			bpf_map_update_elem(&lb_reverse, &rk, &rev, BPF_ANY);
			pnm_count(&lb_counters, LB_CTR_NEW, 1);
		}
	}
	account(conn.backend_id, skb->len, new_conn && (syn || k.proto == IPPROTO_UDP));
	if (rewrite(skb, pkt.l3_offset, pkt.l4_offset, k.proto, 1, k.daddr, conn.backend_addr, k.dport,
		    conn.backend_port) < 0) {
		pnm_count(&lb_counters, LB_CTR_REWRITE_FAILED, 1);
		return TC_ACT_SHOT;
	}
	pnm_count(&lb_counters, LB_CTR_FORWARDED, 1);
	return TC_ACT_UNSPEC;
}

SEC("tc")
int lb_egress(struct __sk_buff *skb)
{
	struct lb_conn_key k;
	struct lb_reverse *found, rev;
	struct pnm_packet pkt;

	if (parse(skb, &pkt, &k) < 0)
		return TC_ACT_UNSPEC;
	found = bpf_map_lookup_elem(&lb_reverse, &k);
	if (!found)
		return TC_ACT_UNSPEC;
	rev = *found;
	account(rev.backend_id, skb->len, 0);
	if (rewrite(skb, pkt.l3_offset, pkt.l4_offset, k.proto, 0, k.saddr, rev.vip_addr, k.sport,
		    rev.vip_port) < 0) {
		pnm_count(&lb_counters, LB_CTR_REWRITE_FAILED, 1);
		return TC_ACT_SHOT;
	}
	pnm_count(&lb_counters, LB_CTR_REPLIES, 1);
	return TC_ACT_UNSPEC;
}

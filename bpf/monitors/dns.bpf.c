// SPDX-License-Identifier: GPL-2.0
/* dns: DNS queries and responses over UDP and TCP on the configured server ports (53), at tcx ingress
 * and egress of one interface (a client, a server or a router in between all see both directions).
 *
 * A query (QR=0, to a server port) waits in an LRU map under (client address, client port, DNS id); the
 * response (QR=1, from a server port, to that client) takes it out: one latency sample. Counted per qname
 * (lower-cased: 0x20 randomisation must not split a name), per (qtype) for queries and per (rcode, qtype)
 * for responses. The qname is copied with a bounded loop from a fixed window read with
 * bpf_skb_load_bytes (also from non-linear data); user space decodes it. Over TCP only a message at the
 * start of a segment is seen (the common case: one query per segment). Every table is bounded and what
 * does not fit is counted. */
#include <linux/bpf.h>
#include <linux/pkt_cls.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>
#define PNM_LAT_KERNEL
#include "packet.bpf.h"
#include "dns.h"

char LICENSE[] SEC("license") = "GPL";

const volatile struct dns_config dns_config = {};

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 16384);	/* option max_pending */
	__type(key, struct dns_pending_key);
	__type(value, struct dns_pending);
} dns_pending SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1024);	/* option max_names */
	__type(key, struct dns_name_key);
	__type(value, struct dns_name_value);
} dns_names SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1024);
	__type(key, struct dns_count_key);
	__type(value, __u64);
} dns_counts SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, DNS_NR_CTR);
	__type(key, __u32);
	__type(value, __u64);
} dns_counters SEC(".maps");

PNM_HIST_MAP(dns_hist);

/* Too large for the stack: the message window, the name key, a zeroed name value to create from. */
struct dns_scratch {
	__u8 msg[DNS_READ_MAX];
	struct dns_name_key name;
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct dns_scratch);
} dns_scratch SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct dns_name_value);
} dns_zero SEC(".maps");

static __always_inline void count(__u32 which, __u64 n)
{
	__u64 *c = bpf_map_lookup_elem(&dns_counters, &which);

	if (c)
		*c += n;
}

static __always_inline int server_port(__u16 port)
{
	int i;

#pragma unroll
	for (i = 0; i < DNS_MAX_PORTS; i++)
		if (dns_config.ports[i] && dns_config.ports[i] == port)
			return 1;
	return 0;
}

static __always_inline void count_kind(__u8 kind, __u8 rcode, __u16 qtype)
{
	struct dns_count_key key = {.qtype = qtype, .kind = kind, .rcode = rcode};
	__u64 one = 1, *c = bpf_map_lookup_elem(&dns_counts, &key);

	if (c) {
		__sync_fetch_and_add(c, 1);
		return;
	}
	if (bpf_map_update_elem(&dns_counts, &key, &one, BPF_NOEXIST)) {
		c = bpf_map_lookup_elem(&dns_counts, &key);	/* another CPU created it meanwhile? */
		if (c)
			__sync_fetch_and_add(c, 1);
		else
			count(DNS_CTR_COUNT_OVERFLOW, 1);
	}
}

static __always_inline struct dns_name_value *name_entry(struct dns_name_key *key)
{
	struct dns_name_value *v = bpf_map_lookup_elem(&dns_names, key), *zero;
	__u32 index = 0;

	if (v)
		return v;
	zero = bpf_map_lookup_elem(&dns_zero, &index);
	if (!zero)
		return 0;
	/* EEXIST (another CPU created it meanwhile) is fine: look it up either way */
	bpf_map_update_elem(&dns_names, key, zero, BPF_NOEXIST);
	v = bpf_map_lookup_elem(&dns_names, key);
	if (v)
		return v;
	count(DNS_CTR_NAME_OVERFLOW, 1);
	return 0;
}

/* Copy the question's name (lower-cased) into s->name and return its qtype (0 when the name did not
 * end inside the window). */
static __always_inline __u16 copy_qname(struct dns_scratch *s, __u32 len)
{
	__u32 i, end = 0;
	__u8 c;

	__builtin_memset(s->name.name, 0, DNS_NAME_MAX);
	for (i = 0; i < DNS_NAME_MAX; i++) {
		if (DNS_HDR_LEN + i >= len)
			return 0;
		c = s->msg[DNS_HDR_LEN + i];
		/* label lengths are ≤ 63, below 'A': only letters change */
		s->name.name[i] = (c >= 'A' && c <= 'Z') ? c + 32 : c;
		if (c == 0) {
			end = i + 1;
			break;
		}
	}
	if (!end || DNS_HDR_LEN + end + 2 > len || DNS_HDR_LEN + end + 2 > DNS_READ_MAX)
		return 0;
	return (__u16)s->msg[DNS_HDR_LEN + end] << 8 | s->msg[DNS_HDR_LEN + end + 1];
}

static __always_inline void handle(struct __sk_buff *skb)
{
	void *data = (void *)(long)skb->data, *data_end = (void *)(long)skb->data_end;
	struct dns_pending_key pk = {};
	struct dns_pending pending = {}, *sent;
	struct dns_name_value *nv;
	struct dns_scratch *s;
	struct pnm_packet pkt;
	__u32 zero = 0, off, len;
	__u16 sport, dport, qtype;
	__u8 qr, rcode;
	int query;
	__u64 now;

	if (pnm_parse(data, data_end, &pkt) < 0 || !pkt.l4_offset || !pkt.payload_offset)
		return;
	if (pkt.key.proto != IPPROTO_UDP && pkt.key.proto != IPPROTO_TCP)
		return;
	sport = bpf_ntohs(pkt.key.sport);
	dport = bpf_ntohs(pkt.key.dport);
	if (server_port(dport))
		query = 1;
	else if (server_port(sport))
		query = 0;
	else
		return;
	/* the payload as the IP header states it: Ethernet padding of a short frame is no DNS data */
	len = pnm_payload_len(data, data_end, &pkt);
	off = pkt.payload_offset;
	if (pkt.key.proto == IPPROTO_TCP) {
		if (len <= 2)
			return;	/* a segment without a message (handshake, ACK) */
		off += 2;	/* TCP: a 2-byte length before the message */
		len -= 2;
	}
	s = bpf_map_lookup_elem(&dns_scratch, &zero);
	if (!s)
		return;
	if (len > DNS_READ_MAX)
		len = DNS_READ_MAX;
	if (len < DNS_HDR_LEN + 5) {
		count(DNS_CTR_MALFORMED, 1);
		return;
	}
	/* the same value with bounds the verifier can see on the register passed (144 - 17 < 128) */
	len = ((len - (DNS_HDR_LEN + 5)) & 0x7f) + DNS_HDR_LEN + 5;
	if (bpf_skb_load_bytes(skb, off, s->msg, len) < 0) {
		count(DNS_CTR_MALFORMED, 1);
		return;
	}
	qr = s->msg[2] >> 7;
	rcode = s->msg[3] & 0x0f;
	/* a query to a server port, or a response from one; a question count of 1 (what resolvers send) */
	if (qr == query || s->msg[4] != 0 || s->msg[5] != 1) {
		count(DNS_CTR_MALFORMED, 1);
		return;
	}
	qtype = copy_qname(s, len);
	now = bpf_ktime_get_ns();
	pk.proto = pkt.key.proto;
	__builtin_memcpy(&pk.id, s->msg, 2);
	if (query) {
		__builtin_memcpy(pk.client, pkt.key.saddr, 16);
		pk.client_port = pkt.key.sport;
		pending.sent_ns = now;
		pending.qtype = qtype;
		bpf_map_update_elem(&dns_pending, &pk, &pending, BPF_ANY);
		count(DNS_CTR_QUERIES, 1);
		count_kind(DNS_KIND_QUERY, 0, qtype);
		nv = name_entry(&s->name);
		if (nv) {
			__sync_fetch_and_add(&nv->queries, 1);
			nv->latency.last_ns = now;	/* a name in use, answered or not (idle eviction) */
		}
		return;
	}
	__builtin_memcpy(pk.client, pkt.key.daddr, 16);
	pk.client_port = pkt.key.dport;
	count(DNS_CTR_RESPONSES, 1);
	count_kind(DNS_KIND_RESPONSE, rcode, qtype);
	nv = name_entry(&s->name);
	if (nv) {
		__sync_fetch_and_add(&nv->responses, 1);
		__sync_fetch_and_add(&nv->rcodes[rcode & 15], 1);
		nv->latency.last_ns = now;
	}
	sent = bpf_map_lookup_elem(&dns_pending, &pk);
	if (sent && now > sent->sent_ns) {
		__u64 ns = now - sent->sent_ns;

		bpf_map_delete_elem(&dns_pending, &pk);
		count(DNS_CTR_MATCHED, 1);
		count(DNS_CTR_SUM_US, ns / 1000);
		pnm_hist_add(&dns_hist, ns / 1000, &dns_config.hist);
		if (nv)
			pnm_lat_add(&nv->latency, ns, now);
	}
}

SEC("tc")
int dns_ingress(struct __sk_buff *skb)
{
	handle(skb);
	return TC_ACT_UNSPEC;
}

SEC("tc")
int dns_egress(struct __sk_buff *skb)
{
	handle(skb);
	return TC_ACT_UNSPEC;
}

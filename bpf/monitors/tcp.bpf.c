// SPDX-License-Identifier: GPL-2.0
/* tcp: connection lifecycle and health from BTF tracepoints (no kprobes):
 * - sock:inet_sock_set_state: opening (role from the first state), connect latency, closing;
 * - tcp:tcp_probe (each segment received on a tracked connection, option live_stats): srtt, cwnd,
 *   ssthresh, bytes, as they were before that segment;
 * - tcp:tcp_retransmit_skb and tcp:tcp_retransmit_synack: retransmitted segments, counted as the kernel
 *   counts TcpRetransSegs (an skb carries tcp_skb_pcount segments; failed retransmits are not counted);
 * - tcp:tcp_receive_reset and tcp:tcp_send_reset: resets;
 * - a TCP socket iterator (iter/tcp), run by user space at each snapshot: the same values, current, for
 *   the open connections of the namespace it runs in.
 * Tracepoints are global: with `netns_inum` set only sockets of that network namespace count.
 * State changes, retransmits and resets also go to a ring buffer as events. */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include <bpf/bpf_core_read.h>
#include "common.bpf.h"
#include "tcp.h"

char LICENSE[] SEC("license") = "GPL";

const volatile __u32 netns_inum = 0;	/* 0: every namespace */
const volatile __u8 emit_events = 1;

#define AF_INET 2
#define AF_INET6 10
#define IPPROTO_TCP 6

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 16384);	/* option max_entries */
	__type(key, __u64);		/* struct sock * */
	__type(value, struct tcpmon_conn);
} tcp_conns SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 1024);	/* option keep_closed */
	__type(key, struct tcpmon_closed_key);
	__type(value, struct tcpmon_conn);
} tcp_closed SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, TCPMON_NR_CTR);
	__type(key, __u32);
	__type(value, __u64);
} tcp_counters SEC(".maps");

/* Slot i: connect latencies in log2 µs slot i; slot TCPMON_HIST_SLOTS: their sum. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, TCPMON_HIST_SLOTS + 1);
	__type(key, __u32);
	__type(value, __u64);
} tcp_connect_latency SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 1 << 20);	/* option ring_bytes */
} tcp_events SEC(".maps");

/* A per-CPU scratch record: the connection struct is too large for the 512-byte stack with the rest. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct tcpmon_conn);
} tcp_scratch SEC(".maps");

static __always_inline int ours(const struct sock *sk)
{
	if (BPF_CORE_READ(sk, __sk_common.skc_family) != AF_INET &&
	    BPF_CORE_READ(sk, __sk_common.skc_family) != AF_INET6)
		return 0;
	if (BPF_CORE_READ(sk, sk_protocol) != IPPROTO_TCP)
		return 0;
	return !netns_inum || BPF_CORE_READ(sk, __sk_common.skc_net.net, ns.inum) == netns_inum;
}

static __always_inline void map_v4(__u8 *dst, __u32 addr)
{
	__builtin_memset(dst, 0, 10);
	dst[10] = 0xff;
	dst[11] = 0xff;
	__builtin_memcpy(dst + 12, &addr, 4);
}

/* Addresses and ports of `sk` into the 16+16+2+2+1 bytes that start at `saddr` in both structs. */
static __always_inline void endpoints(const struct sock *sk, __u8 *saddr, __u8 *daddr, __u16 *sport,
				      __u16 *dport, __u8 *family)
{
	if (BPF_CORE_READ(sk, __sk_common.skc_family) == AF_INET) {
		map_v4(saddr, BPF_CORE_READ(sk, __sk_common.skc_rcv_saddr));
		map_v4(daddr, BPF_CORE_READ(sk, __sk_common.skc_daddr));
		*family = 4;
	} else {
		BPF_CORE_READ_INTO(saddr, sk, __sk_common.skc_v6_rcv_saddr.in6_u.u6_addr8);
		BPF_CORE_READ_INTO(daddr, sk, __sk_common.skc_v6_daddr.in6_u.u6_addr8);
		*family = 6;
	}
	*sport = BPF_CORE_READ(sk, __sk_common.skc_num);
	*dport = __builtin_bswap16(BPF_CORE_READ(sk, __sk_common.skc_dport));
}

static __always_inline void refresh(const struct sock *sk, struct tcpmon_conn *c)
{
	const struct tcp_sock *tp = (const struct tcp_sock *)sk;

	c->srtt_us = BPF_CORE_READ(tp, srtt_us) >> 3;	/* the kernel keeps 8 × srtt */
	c->cwnd = BPF_CORE_READ(tp, snd_cwnd);
	c->ssthresh = BPF_CORE_READ(tp, snd_ssthresh);
	c->bytes_acked = BPF_CORE_READ(tp, bytes_acked);
	c->bytes_received = BPF_CORE_READ(tp, bytes_received);
	c->bytes_sent = BPF_CORE_READ(tp, bytes_sent);
}

static __always_inline void event(const struct sock *sk, __u8 type, __u8 oldstate, __u8 newstate, __u32 segments)
{
	struct tcpmon_event *e;

	if (!emit_events)
		return;
	e = bpf_ringbuf_reserve(&tcp_events, sizeof(*e), 0);
	if (!e) {
		pnm_count(&tcp_counters, TCPMON_CTR_LOST_EVENTS, 1);
		return;
	}
	__builtin_memset(e, 0, sizeof(*e));
	e->ts_ns = bpf_ktime_get_ns();
	endpoints(sk, e->saddr, e->daddr, &e->sport, &e->dport, &e->family);
	e->type = type;
	e->oldstate = oldstate;
	e->newstate = newstate;
	e->segments = segments;
	bpf_ringbuf_submit(e, 0);
}

static __always_inline void opened(const struct sock *sk, __u8 role, __u8 state)
{
	__u32 zero = 0;
	__u64 key = (__u64)sk;
	struct tcpmon_conn *c = bpf_map_lookup_elem(&tcp_scratch, &zero);

	if (!c)
		return;
	__builtin_memset(c, 0, sizeof(*c));
	endpoints(sk, c->saddr, c->daddr, &c->sport, &c->dport, &c->family);
	c->role = role;
	c->state = state;
	c->opened_ns = bpf_ktime_get_ns();
	c->sk = key;
	pnm_count(&tcp_counters, TCPMON_CTR_OPENED, 1);
	if (bpf_map_update_elem(&tcp_conns, &key, c, BPF_ANY))
		pnm_count(&tcp_counters, TCPMON_CTR_OVERFLOW, 1);
}

static __always_inline void connect_latency(__u64 us)
{
	__u32 slot = pnm_hist_slot(us, 0, TCPMON_HIST_SLOTS), sum = TCPMON_HIST_SLOTS;
	__u64 *v = bpf_map_lookup_elem(&tcp_connect_latency, &slot);

	if (v)
		*v += 1;
	v = bpf_map_lookup_elem(&tcp_connect_latency, &sum);
	if (v)
		*v += us;
}

SEC("tp_btf/inet_sock_set_state")
int BPF_PROG(tcp_set_state, const struct sock *sk, const int oldstate, const int newstate)
{
	__u64 key = (__u64)sk, now;
	struct tcpmon_conn *c;

	if (!ours(sk))
		return 0;
	event(sk, TCPMON_EV_STATE, oldstate, newstate, 0);
	if (oldstate == TCP_CLOSE && newstate == TCP_SYN_SENT) {
		opened(sk, TCPMON_ROLE_CLIENT, newstate);
		return 0;
	}
	/* an accepted connection's socket is cloned from the listener: LISTEN → SYN_RECV */
	if (newstate == TCP_SYN_RECV && (oldstate == TCP_LISTEN || oldstate == TCP_CLOSE)) {
		opened(sk, TCPMON_ROLE_SERVER, newstate);
		return 0;
	}
	if (oldstate == TCP_LISTEN || newstate == TCP_LISTEN)
		return 0;	/* a listening socket is not a connection */
	c = bpf_map_lookup_elem(&tcp_conns, &key);
	if (!c)
		return 0;	/* opened before the monitor started */
	now = bpf_ktime_get_ns();
	c->state = newstate;
	/* a client's local port is chosen after SYN_SENT is set (and released before CLOSE): read the
	 * endpoints again until it is known */
	if (!c->sport)
		endpoints(sk, c->saddr, c->daddr, &c->sport, &c->dport, &c->family);
	refresh(sk, c);
	if (newstate == TCP_ESTABLISHED && !c->established_ns) {
		c->established_ns = now;
		if (oldstate == TCP_SYN_SENT)
			connect_latency((now - c->opened_ns) / 1000);
	}
	if (newstate == TCP_CLOSE) {
		struct tcpmon_closed_key ck = { .sk = key, .opened_ns = c->opened_ns };

		c->closed_ns = now;
		if (oldstate == TCP_SYN_SENT)
			pnm_count(&tcp_counters, TCPMON_CTR_FAILED, 1);
		pnm_count(&tcp_counters, TCPMON_CTR_CLOSED, 1);
		bpf_map_update_elem(&tcp_closed, &ck, c, BPF_ANY);
		bpf_map_delete_elem(&tcp_conns, &key);
	}
	return 0;
}

SEC("tp_btf/tcp_probe")
int BPF_PROG(tcp_probe, struct sock *sk, const struct sk_buff *skb)
{
	__u64 key = (__u64)sk;
	struct tcpmon_conn *c = bpf_map_lookup_elem(&tcp_conns, &key);

	/* only connections we track (and so of our namespace): no filter needed before the lookup */
	if (c)
		refresh(sk, c);
	return 0;
}

SEC("iter/tcp")
int tcp_iter(struct bpf_iter__tcp *ctx)
{
	struct sock_common *skc = ctx->sk_common;
	struct tcp_sock *tp;
	struct tcpmon_conn *c;
	__u64 key;

	if (!skc)
		return 0;
	tp = bpf_skc_to_tcp_sock(skc);
	if (!tp)
		return 0;	/* a request or time-wait socket: not a tracked connection */
	key = (__u64)tp;
	c = bpf_map_lookup_elem(&tcp_conns, &key);
	if (c)
		refresh((const struct sock *)tp, c);
	return 0;
}

static __always_inline void retransmitted(const struct sock *sk, __u32 segs)
{
	__u64 key = (__u64)sk;
	struct tcpmon_conn *c;

	pnm_count(&tcp_counters, TCPMON_CTR_RETRANS, segs);
	c = bpf_map_lookup_elem(&tcp_conns, &key);
	if (c)
		c->retransmits += segs;
	event(sk, TCPMON_EV_RETRANSMIT, 0, 0, segs);
}

SEC("tp_btf/tcp_retransmit_skb")
int BPF_PROG(tcp_retransmit, const struct sock *sk, const struct sk_buff *skb, int err)
{
	struct tcp_skb_cb *cb;
	__u32 segs;

	/* TcpRetransSegs counts only retransmits that went out */
	if (err || !ours(sk))
		return 0;
	cb = (struct tcp_skb_cb *)((void *)skb + bpf_core_field_offset(skb->cb));	/* TCP_SKB_CB(skb) */
	segs = BPF_CORE_READ(cb, tcp_gso_segs);
	retransmitted(sk, segs ? segs : 1);
	return 0;
}

SEC("tp_btf/tcp_retransmit_synack")
int BPF_PROG(tcp_retransmit_synack, const struct sock *sk, const struct request_sock *req)
{
	/* the listener's namespace is the request's */
	if (!ours(sk))
		return 0;
	pnm_count(&tcp_counters, TCPMON_CTR_RETRANS, 1);
	return 0;
}

SEC("tp_btf/tcp_receive_reset")
int BPF_PROG(tcp_receive_reset, struct sock *sk)
{
	if (!ours(sk))
		return 0;
	pnm_count(&tcp_counters, TCPMON_CTR_RESETS, 1);
	event(sk, TCPMON_EV_RESET, 0, 0, 0);
	return 0;
}

SEC("tp_btf/tcp_send_reset")
int BPF_PROG(tcp_send_reset, const struct sock *sk, const struct sk_buff *skb)
{
	/* resets sent for no socket (sk NULL) belong to no connection: counted only with a socket */
	if (!sk || !ours(sk))
		return 0;
	pnm_count(&tcp_counters, TCPMON_CTR_RESETS, 1);
	event(sk, TCPMON_EV_RESET, 0, 0, 0);
	return 0;
}

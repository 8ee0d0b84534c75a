/* ddos monitor: shared between bpf/monitors/ddos.bpf.c and pynetmon/monitors/ddos.py. */
#ifndef PYNETMON_MONITORS_DDOS_H
#define PYNETMON_MONITORS_DDOS_H

#ifndef __VMLINUX_H__
#include <linux/types.h>
#endif

/* Token buckets count in nano-units (a packet costs DDOS_NANO tokens, refill is elapsed_ns * rate), so
 * the refill needs no division; a bucket holds at most one second of its rate (the article's 1 s
 * window). With rate <= 2^27 pps (or bytes/s <= 2^33) the products stay below 2^64. */
#define DDOS_NANO 1000000000ULL

#define DDOS_REASON_NONE 0
#define DDOS_REASON_RATE 1	/* over pps or bps */
#define DDOS_REASON_SYN 2	/* over syn_pps: too many SYNs from this source */
#define DDOS_REASON_BLOCKLIST 3	/* a manual block (m.block) */

/* One source (its address masked to the prefix length), kept in an LRU hash: a flood from
 * millions of spoofed sources evicts old quiet ones instead of refusing new ones. Fields are updated
 * without atomics: two CPUs racing on one source may lose a token refill or a packet count, never a
 * decision's counter (those are per-CPU). */
struct ddos_source {
	__u64 tokens;		/* packet tokens, nano-packets */
	__u64 byte_tokens;	/* byte tokens, nano-bytes (only with bps) */
	__u64 syn_tokens;	/* SYN tokens, nano-SYNs */
	__u64 last_ns;		/* last refill (bpf_ktime_get_ns: CLOCK_MONOTONIC) */
	__u64 blocked_until_ns;	/* 0: not blocked */
	__u64 packets;		/* every packet seen from the source */
	__u64 dropped;		/* its packets dropped by its block */
	__u64 win_start_ns;	/* start of the current 1 s window */
	__u64 win_packets;	/* packets in that window (top_sources' pps) */
	__u64 share_tokens;	/* SYN tokens to ports under protection, nano-SYNs (syn_share_pps) */
	__u32 reason;		/* DDOS_REASON_* of the current block */
	__u32 pad;
};

/* LPM trie key: IPv4 as IPv4-mapped IPv6 (::ffff:a.b.c.d, prefix length + 96), as in flow.h. */
struct ddos_lpm_key {
	__u32 prefixlen;
	__u8 addr[16];
};

/* How many entries the allow and block lists hold (a global written by user space). */
struct ddos_lists {
	__u32 allow;
	__u32 block;
};

/* A manual block or allow entry. `dropped`/`passed` are added atomically (one entry, many CPUs). */
struct ddos_rule {
	__u64 until_ns;		/* block only: 0 = until unblocked; else CLOCK_MONOTONIC end */
	__u64 packets;		/* packets this rule decided (dropped for a block, passed for an allow) */
};

/* A destination port's SYN bucket (LRU hash keyed by the port in network order): over port_syn_pps the
 * port is protected for DDOS_PROTECT_NS after the bucket last ran dry; meanwhile each source's SYNs to
 * it are limited to syn_share_pps (the SYNs over it are dropped, the source is not blocked). */
#define DDOS_PROTECT_NS DDOS_NANO
struct ddos_port {
	__u64 tokens;
	__u64 last_ns;
	__u64 protected_until_ns;
	__u64 syns;		/* SYNs seen to the port */
	__u64 dropped;		/* SYNs dropped while it was protected */
	__u64 kernel_syn_ns;	/* syncookies: when a SYN last went on to the listener */
};

/* An event on the ring (ddos_events): a source blocked by the kernel, or a port switched into SYN
 * protection. Manual blocks come from user space, which logs them itself. */
#define DDOS_EVENT_BLOCK 1
#define DDOS_EVENT_PROTECT 2
struct ddos_event {
	__u8 addr[16];		/* the blocked source's key (masked); zero for a port event */
	__u64 until_ns;		/* end of the block or of the protection */
	__u16 port;		/* protected port, network order; 0 for a block */
	__u8 kind;		/* DDOS_EVENT_* */
	__u8 reason;		/* DDOS_REASON_* of a block */
	__u32 pad;
};

/* Per-CPU counters, index DDOS_CTR_*: every decision counted once. */
#define DDOS_CTR_PASSED 0	/* passed (including allowed) */
#define DDOS_CTR_DROP_RATE 1
#define DDOS_CTR_DROP_SYN 2
#define DDOS_CTR_DROP_BLOCKLIST 3
#define DDOS_CTR_ALLOWED 4	/* passed because of the allow list (also in PASSED) */
#define DDOS_CTR_BLOCK_EVENTS 5	/* a source newly blocked by the kernel (rate or syn) */
#define DDOS_CTR_NON_IP 6	/* not IPv4/IPv6: passed untouched (also in PASSED) */
#define DDOS_CTR_PROTECT_EVENTS 7	/* a port newly switched into SYN protection */
#define DDOS_CTR_LOST_EVENTS 8	/* events the full ring could not take */
#define DDOS_CTR_SYNCOOKIES 9	/* SYNs answered with an XDP SYN cookie (XDP_TX) */
#define DDOS_CTR_SYN_TO_KERNEL 10	/* SYNs to a protected port passed to the listener (also in PASSED) */
#define DDOS_CTR_BAD_COOKIE_ACKS 11	/* ACKs for the listener of a protected port without a valid cookie
					 * (also in DROP_SYN) */
#define DDOS_NR_CTR 12

#endif

/* tcp monitor: shared between bpf/monitors/tcp.bpf.c and pynetmon/monitors/tcp.py. */
#ifndef PYNETMON_MONITORS_TCP_H
#define PYNETMON_MONITORS_TCP_H

#ifndef __VMLINUX_H__
#include <linux/types.h>
#endif

#define TCPMON_ROLE_CLIENT 1	/* we connected (first state SYN_SENT) */
#define TCPMON_ROLE_SERVER 2	/* we accepted (first state SYN_RECV) */

/* One connection, from its first state change to CLOSE. Addresses as in flow.h (IPv4-mapped). */
struct tcpmon_conn {
	__u8 saddr[16];
	__u8 daddr[16];
	__u16 sport;		/* host byte order */
	__u16 dport;		/* host byte order */
	__u8 family;		/* 4 or 6 */
	__u8 role;		/* TCPMON_ROLE_* */
	__u8 state;		/* TCP_* of the kernel (1 ESTABLISHED ... 12 NEW_SYN_RECV) */
	__u8 pad;
	__u64 opened_ns;	/* bpf_ktime_get_ns() of SYN_SENT / SYN_RECV */
	__u64 established_ns;
	__u64 closed_ns;	/* 0 while open */
	__u64 bytes_acked;
	__u64 bytes_received;
	__u64 bytes_sent;
	__u32 srtt_us;
	__u32 cwnd;
	__u32 ssthresh;
	__u32 retransmits;	/* segments this monitor saw retransmitted */
	__u64 sk;		/* the socket's address: identity while open */
};

/* Closed connections are kept by (socket, opened_ns): a socket's memory may be reused by the next one. */
struct tcpmon_closed_key {
	__u64 sk;
	__u64 opened_ns;
};

#define TCPMON_EV_STATE 1
#define TCPMON_EV_RETRANSMIT 2
#define TCPMON_EV_RESET 3

struct tcpmon_event {
	__u64 ts_ns;
	__u8 saddr[16];
	__u8 daddr[16];
	__u16 sport;
	__u16 dport;
	__u8 family;
	__u8 type;		/* TCPMON_EV_* */
	__u8 oldstate;
	__u8 newstate;
	__u32 segments;		/* retransmitted segments (TCPMON_EV_RETRANSMIT) */
	__u32 pad;
};

#define TCPMON_CTR_OPENED 0
#define TCPMON_CTR_CLOSED 1
#define TCPMON_CTR_RETRANS 2
#define TCPMON_CTR_RESETS 3
#define TCPMON_CTR_FAILED 4
#define TCPMON_CTR_LOST_EVENTS 5	/* events the full ring could not take */
#define TCPMON_CTR_OVERFLOW 6		/* connections the full table could not track */
#define TCPMON_NR_CTR 7

#define TCPMON_HIST_SLOTS 64	/* connect latency in µs, log2 slots (common.bpf.h) */

#endif

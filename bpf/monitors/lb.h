/* lb monitor: shared between bpf/monitors/lb.bpf.c and pynetmon/monitors/lb.py. IPv4 only. Addresses
 * and ports are in network byte order as on the wire; every struct has explicit padding, as keys are
 * hashed as raw bytes. */
#ifndef PYNETMON_MONITORS_LB_H
#define PYNETMON_MONITORS_LB_H

#ifndef __VMLINUX_H__
#include <linux/types.h>
#endif

/* A virtual service, the key of lb_services. */
struct lb_vip {
	__u32 addr;
	__u16 port;
	__u8 proto;		/* IPPROTO_TCP or IPPROTO_UDP */
	__u8 pad;
};

#define LB_F_STICKY 1		/* hash the client address only (client-IP affinity) */
#define LB_F_EMPTY 2		/* no healthy backend: new connections are dropped (counted) */

/* A service's value. User space writes a new table into the half it does not use, then replaces this
 * value (one atomic map update), so a packet sees either the old table or the new one, never a mix. */
struct lb_service {
	__u32 ring_base;	/* first slot of the service's table in lb_ring */
	__u32 flags;		/* LB_F_* */
};

/* A backend, the value of lb_backends (an array indexed by backend id; ids are never shared by two
 * service-backend pairs at once). */
struct lb_backend {
	__u32 addr;
	__u16 port;
	__u16 pad;
};

/* A connection as the client sends it (client → VIP), the key of lb_conns. */
struct lb_conn_key {
	__u32 saddr;
	__u32 daddr;
	__u16 sport;
	__u16 dport;
	__u8 proto;
	__u8 pad[3];
};

/* Where a connection goes: kept in the entry itself, so a backend removed from the service keeps its
 * connections until they end (or until the LRU evicts them). */
struct lb_conn {
	__u32 backend_addr;
	__u16 backend_port;
	__u16 pad;
	__u32 backend_id;
	__u32 syn_seq;		/* sequence number of the SYN that opened it: a SYN with another one is a new
				 * connection on a reused 5-tuple, one with the same is a retransmission */
};

/* The reply direction (backend → client) is keyed by the same lb_conn_key layout with the backend as
 * source: lb_reverse maps it to the VIP the client talked to. */
struct lb_reverse {
	__u32 vip_addr;
	__u16 vip_port;
	__u16 pad;
	__u32 backend_id;
	__u32 pad2;
};

/* Per backend id, per CPU: both directions counted. */
struct lb_backend_stats {
	__u64 connections;	/* new connections sent to it (a TCP SYN that is no retransmission, or the first
				 * UDP datagram of a flow) */
	__u64 packets;
	__u64 bytes;
};

/* Per-CPU counters, index LB_CTR_*. */
#define LB_CTR_FORWARDED 0	/* client → backend packets rewritten */
#define LB_CTR_REPLIES 1	/* backend → client packets rewritten back to the VIP */
#define LB_CTR_NEW 2		/* connections put into lb_conns */
#define LB_CTR_NO_BACKEND 3	/* dropped: the service had no healthy backend */
#define LB_CTR_OTHER 4		/* packets to no service (passed untouched) */
#define LB_CTR_REWRITE_FAILED 5	/* a store or checksum helper failed: dropped */
#define LB_NR_CTR 6

#endif

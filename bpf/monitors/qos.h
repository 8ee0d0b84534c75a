/* qos monitor: shared between bpf/monitors/qos.bpf.c and pynetmon/monitors/qos.py. */
#ifndef PYNETMON_MONITORS_QOS_H
#define PYNETMON_MONITORS_QOS_H

#ifndef __VMLINUX_H__
#include <linux/types.h>
#endif

#define QOS_MAX_CLASSES 64	/* class slots, the default class's included (slot QOS_DEFAULT_SLOT) */
#define QOS_MAX_RULES 128	/* match entries of one rule set */
#define QOS_MAX_RANGES 4	/* port ranges per field of a match */
#define QOS_MAX_PREFIXES 4	/* prefixes per field of a match */
#define QOS_DEFAULT_SLOT 0
#define QOS_NANO 1000000000ULL

/* An address prefix over the 16-byte address (IPv4 as IPv4-mapped IPv6, mask of prefix length + 96). */
struct qos_prefix {
	__u64 addr[2];		/* already masked */
	__u64 mask[2];
};

struct qos_range {
	__u16 lo;		/* host order, inclusive */
	__u16 hi;
};

/* One match entry: every field given must hold (an empty field matches anything); a class has one or
 * more entries, and the first entry of the rule set that holds decides the packet's class. */
struct qos_rule {
	__u32 slot;		/* the class */
	__u8 proto;		/* IPPROTO_*; 0: any */
	__u8 n_ports;		/* ranges in ports (either port of the packet) */
	__u8 n_sports;
	__u8 n_dports;
	__u8 n_src;
	__u8 n_dst;
	__u8 n_addr;		/* prefixes in addr (either address of the packet) */
	__u8 pad[5];
	__u64 dscp_mask;	/* bit d: DSCP d matches; 0: any DSCP */
	struct qos_range ports[QOS_MAX_RANGES];
	struct qos_range sports[QOS_MAX_RANGES];
	struct qos_range dports[QOS_MAX_RANGES];
	struct qos_prefix src[QOS_MAX_PREFIXES];
	struct qos_prefix dst[QOS_MAX_PREFIXES];
	struct qos_prefix addr[QOS_MAX_PREFIXES];
};

/* What a class does with its packets. Rates are bytes per second; a bucket holds `burst` bytes and
 * refills at `rate`; `fill_ns` is the time an empty bucket takes to fill (computed by user space, so
 * the kernel never divides and the refill product stays below burst * QOS_NANO < 2^64). */
struct qos_class {
	__u64 rate;		/* police: the class's bucket; 0: no bucket */
	__u64 burst;
	__u64 fill_ns;
	__u64 flow_rate;	/* every flow of the class its own bucket; 0: none */
	__u64 flow_burst;
	__u64 flow_fill_ns;
	__u32 priority;		/* shape: skb->priority = the HTB class id; 0: leave it */
	__u8 mark;		/* 1: rewrite the DSCP to `dscp` */
	__u8 dscp;
	__u16 pad;
};

/* One rule set: user space writes the inactive one and then switches `qos_active`, so a packet is
 * classified either by the old rules or by the new ones, never by a mix. */
struct qos_set {
	__u32 nrules;
	__u32 pad;
	struct qos_class classes[QOS_MAX_CLASSES];
	struct qos_rule rules[QOS_MAX_RULES];
};

/* A token bucket (per class: an array entry under its spin lock; per flow: an LRU entry). */
struct qos_bucket {
	__u64 tokens;		/* nano-bytes */
	__u64 last_ns;
};

struct qos_class_bucket {
	struct bpf_spin_lock lock;
	__u32 pad;
	__u64 tokens;
	__u64 last_ns;
	__u64 rate;		/* the rate and burst the bucket was filled for: a new rate restarts it full */
	__u64 burst;
};

/* The per-flow bucket key: the class slot and the 5-tuple. */
struct qos_flow_key {
	__u8 saddr[16];
	__u8 daddr[16];
	__u16 sport;
	__u16 dport;
	__u8 proto;
	__u8 pad;
	__u16 slot;
};

/* Per-CPU counters of one class slot. */
struct qos_stats {
	__u64 packets;		/* passed (shape: classified into the class and handed to its queue) */
	__u64 bytes;
	__u64 dropped_class;	/* over the class's bucket (police) */
	__u64 dropped_flow;	/* over the flow's bucket */
	__u64 marked;		/* DSCP rewritten */
};

/* Global per-CPU counters, index QOS_CTR_*. */
#define QOS_CTR_NON_IP 0	/* not IPv4/IPv6: default class, never marked */
#define QOS_CTR_FLOW_FULL 1	/* a new flow bucket the LRU could not store (the packet passes) */
#define QOS_CTR_MARK_FAILED 2	/* a DSCP rewrite the kernel refused (the packet passes unmarked) */
#define QOS_NR_CTR 3

#endif

/* flows monitor: shared between bpf/monitors/flows.bpf.c and pynetmon/monitors/flows.py. */
#ifndef PYNETMON_MONITORS_FLOWS_H
#define PYNETMON_MONITORS_FLOWS_H

#include "flow.h"

/* Fields of the key kept by `flows_keep` (option `aggregate`); the others are zeroed before lookup, so
 * the kernel itself aggregates and the table holds one entry per coarser key. */
#define FLOWS_KEEP_SRC (1 << 0)
#define FLOWS_KEEP_DST (1 << 1)
#define FLOWS_KEEP_SPORT (1 << 2)
#define FLOWS_KEEP_DPORT (1 << 3)
#define FLOWS_KEEP_PROTO (1 << 4)
#define FLOWS_KEEP_ALL 0x1F

/* One flow. Counters are added atomically: no update is lost when two CPUs see the same flow, and the
 * table takes the same memory however many CPUs the machine has (a per-CPU hash of 65,536 flows would
 * take 3 MiB per CPU, and every read would copy and merge them all). */
struct flows_value {
	__u64 packets;
	__u64 bytes;		/* frame length, as a pcap record's original length (VLAN tag included) */
	__u64 first_seen_ns;	/* bpf_ktime_get_ns(): CLOCK_MONOTONIC */
	__u64 last_seen_ns;
	__u64 tcp_flags;	/* OR of the TCP flag bytes seen (64 bits: the atomic OR clang 14 emits) */
};

/* Per-CPU counters, index FLOWS_CTR_*. */
#define FLOWS_CTR_OVERFLOW 0	/* packets of new flows the full table could not take */
#define FLOWS_CTR_NON_IP 1	/* frames that were not IPv4/IPv6 */
#define FLOWS_NR_CTR 2

#endif

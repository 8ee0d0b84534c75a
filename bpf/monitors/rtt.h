/* rtt monitor, kernel and user side (pynetmon/monitors/rtt.py). */
#ifndef PYNETMON_MONITORS_RTT_H
#define PYNETMON_MONITORS_RTT_H

#include <linux/types.h>
#include "flow.h"
#include "latstats.h"

/* A TSval seen leaving in `flow` (direction 0: the key is the same at ingress and egress). */
struct rtt_ts_key {
	struct pnm_flow_key flow;
	__u32 tsval;
};				/* 44 bytes */

/* Counters (per-CPU array indexes). */
#define RTT_CTR_TCP_TS 0	/* TCP packets with a timestamp option */
#define RTT_CTR_STORED 1	/* TSvals remembered */
#define RTT_CTR_SAMPLES 2	/* TSecr matched: one RTT sample */
#define RTT_CTR_OVERFLOW 3	/* samples of new flows the full flow table could not hold */
#define RTT_CTR_SUM_US 4	/* sum of the samples in µs (the histogram's sum) */
#define RTT_NR_CTR 5

#endif

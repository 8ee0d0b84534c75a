/* latency monitor, kernel and user side (pynetmon/monitors/latency.py). */
#ifndef PYNETMON_MONITORS_LATENCY_H
#define PYNETMON_MONITORS_LATENCY_H

#include <linux/types.h>
#include "flow.h"
#include "latstats.h"

#define LATENCY_MODE_REPLY 0	/* ingress packet → egress packet of the reverse flow (the host's answer) */
#define LATENCY_MODE_STACK 1	/* tc ingress → the socket's receive queue (UDP, TCP) */
#define LATENCY_MODE_FORWARD 2	/* tc ingress on one interface → tc egress on another (the same skb) */

struct latency_config {
	struct pnm_hist_config hist;
	__u32 mode;
	__u32 pad;
	__u64 max_age_ns;	/* stack/forward: an older stamp is stale (its skb was freed, the address reused) */
};

/* stack/forward: what ingress stamped on an skb, keyed by the skb's address. */
struct latency_stamp {
	__u64 ts_ns;
	struct pnm_flow_key flow;
};

#define LATENCY_CTR_STAMPED 0	/* packets stamped at ingress */
#define LATENCY_CTR_MATCHED 1	/* stamps matched: one sample */
#define LATENCY_CTR_OVERFLOW 2	/* samples of new flows the full flow table could not hold */
#define LATENCY_CTR_STALE 3	/* stack/forward: stamps older than max_age or of another flow, ignored */
#define LATENCY_CTR_SUM_US 4
#define LATENCY_NR_CTR 5

#endif

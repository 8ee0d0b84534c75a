/* drops monitor: shared between bpf/monitors/drops.bpf.c and pynetmon/monitors/drops.py. */
#ifndef PYNETMON_MONITORS_DROPS_H
#define PYNETMON_MONITORS_DROPS_H

#ifndef __VMLINUX_H__
#include <linux/types.h>
#endif

#define DROPS_IFNAMSIZ 16

/* One counter per (reason, interface, protocol), and per kernel location with option stacks. */
struct drops_key {
	__u64 location;			/* return address of the freeing function; 0 unless stacks */
	__u32 reason;			/* enum skb_drop_reason of the running kernel */
	__u16 protocol;			/* skb->protocol, network byte order (ETH_P_*) */
	__u16 pad;
	char ifname[DROPS_IFNAMSIZ];	/* skb->dev->name, "" without a device */
};					/* 32 bytes */

#define DROPS_CTR_OVERFLOW 0	/* drops whose key the full table could not take */
#define DROPS_CTR_FILTERED 1	/* drops of other network namespaces, left out */
#define DROPS_NR_CTR 2

#endif

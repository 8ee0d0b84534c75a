/* The flow key every packet monitor shares, kernel and user side (pynetmon/monitors/flowkey.py decodes
 * it). Addresses are 16 bytes: IPv6 as is, IPv4 in its IPv4-mapped form ::ffff:a.b.c.d, so one key type
 * serves both families and the same 5-tuple never has two spellings. Ports are in network byte order as
 * on the wire (so the parser copies them without a swap); for ICMP/ICMPv6 `sport` holds the type and
 * `dport` the code. Explicit padding: the key is hashed as raw bytes, so no byte may be left undefined. */
#ifndef PYNETMON_MONITORS_FLOW_H
#define PYNETMON_MONITORS_FLOW_H

#ifndef __VMLINUX_H__
#include <linux/types.h>
#endif

#define PNM_FAMILY_IPV4 4
#define PNM_FAMILY_IPV6 6

#define PNM_DIR_INGRESS 0
#define PNM_DIR_EGRESS 1

struct pnm_flow_key {
	__u8 saddr[16];
	__u8 daddr[16];
	__u16 sport;		/* network byte order; ICMP type */
	__u16 dport;		/* network byte order; ICMP code */
	__u8 proto;		/* IPPROTO_* */
	__u8 family;		/* PNM_FAMILY_IPV4 or PNM_FAMILY_IPV6 */
	__u8 direction;		/* PNM_DIR_*, for monitors that key by it; 0 otherwise */
	__u8 pad;		/* always 0 */
};				/* 40 bytes */

#endif

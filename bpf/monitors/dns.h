/* dns monitor, kernel and user side (pynetmon/monitors/dns.py). */
#ifndef PYNETMON_MONITORS_DNS_H
#define PYNETMON_MONITORS_DNS_H

#include <linux/types.h>
#include "latstats.h"

#define DNS_MAX_PORTS 8
#define DNS_NAME_MAX 128	/* wire bytes of the qname kept (labels with their lengths, then 0) */
#define DNS_HDR_LEN 12
#define DNS_READ_MAX (DNS_HDR_LEN + DNS_NAME_MAX + 4)	/* header, name, qtype, qclass */

struct dns_config {
	struct pnm_hist_config hist;
	__u16 ports[DNS_MAX_PORTS];	/* server ports (host order); unused ones 0 */
};

/* A query waiting for its response: (client address, client port, DNS id). */
struct dns_pending_key {
	__u8 client[16];	/* IPv4-mapped for IPv4 */
	__u16 client_port;	/* network order */
	__u16 id;		/* network order */
	__u8 proto;		/* IPPROTO_UDP or IPPROTO_TCP */
	__u8 pad[3];
};				/* 24 bytes */

struct dns_pending {
	__u64 sent_ns;
	__u16 qtype;
	__u8 pad[6];
};

/* Per qname (lower-cased wire form, zero padded): a name with the 0 terminator missing was longer
 * than DNS_NAME_MAX (user space shows it truncated). */
struct dns_name_key {
	__u8 name[DNS_NAME_MAX];
};

struct dns_name_value {
	__u64 queries;
	__u64 responses;
	__u32 rcodes[16];
	struct pnm_lat_stats latency;
};

/* dns_counts: per (kind, rcode, qtype): queries by qtype, responses by rcode and qtype. */
#define DNS_KIND_QUERY 0
#define DNS_KIND_RESPONSE 1
struct dns_count_key {
	__u16 qtype;
	__u8 kind;
	__u8 rcode;
};

#define DNS_CTR_QUERIES 0
#define DNS_CTR_RESPONSES 1
#define DNS_CTR_MATCHED 2	/* responses whose query we saw: one latency sample */
#define DNS_CTR_MALFORMED 3	/* port matched but no DNS header and question could be read */
#define DNS_CTR_NAME_OVERFLOW 4	/* messages of new names the full name table could not hold */
#define DNS_CTR_COUNT_OVERFLOW 5	/* messages whose (kind, rcode, qtype) the full count table could not hold */
#define DNS_CTR_SUM_US 6
#define DNS_NR_CTR 7

#endif

/* SPDX-License-Identifier: GPL-2.0 */
/* Address types for map keys and values of injected (dynmon) code.
 *
 * A field declared with one of these typedefs is shown as an address string in dynmon's JSON metrics
 * and OpenMetrics labels ("192.0.2.1", "2001:db8::1", "02:00:00:00:00:01"); pynetmon finds them by
 * their BTF typedef name. The bytes are stored as they are on the wire (network order).
 */
#ifndef PYNETMON_ADDRESSES_H
#define PYNETMON_ADDRESSES_H

#include <linux/types.h>

typedef __be32 pynetmon_ipv4_t;
typedef struct { __u8 bytes[16]; } pynetmon_ipv6_t;
typedef struct { __u8 bytes[6]; } pynetmon_mac_t;

#endif /* PYNETMON_ADDRESSES_H */

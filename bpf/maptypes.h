/* Shared between bpf/maptypes.bpf.c and the core tests: one struct per shape the BTF codecs must handle.
 * Decoded in Python from the object's BTF (tests/core), never re-declared there. */
#ifndef PYNETMON_MAPTYPES_H
#define PYNETMON_MAPTYPES_H

#include <linux/types.h>

/* 16-byte key, 16-byte value: the shape of a flow table, and the benchmark's map. */
struct flow_key {
    __be32 saddr;
    __be32 daddr;
    __be16 sport;
    __be16 dport;
    __u8 proto;
    __u8 pad[3];
};

struct flow_stats {
    __u64 packets;
    __u64 bytes;
};

/* Big-endian and native fields side by side (the batch decoder unpacks them in two passes). */
struct flow_record {
    struct flow_key key;
    struct flow_stats stats;
};

enum verdict {
    VERDICT_PASS = 0,
    VERDICT_DROP = 1,
    VERDICT_NEGATIVE = -1,   /* makes the enum signed */
};

struct inner {
    __u16 a;
    __s8 b;                  /* 1 byte of padding follows: the codec must skip it */
    __u32 c[2];
};

/* Every codec at once: nested struct, int and struct arrays, a char array, a signed enum, bitfields,
 * big-endian typedefs, signed integers and a float. */
struct rich_value {
    struct inner nested;
    struct inner pairs[2];
    char name[8];
    enum verdict verdict;
    __u32 flag_a : 1;
    __u32 flag_b : 3;
    __u32 level : 12;
    __be16 port;
    __be32 addr;
    __s64 delta;
    float ratio;
};

/* LPM trie key: prefix length in bits, then the IPv4 address. */
struct lpm_v4_key {
    __u32 prefixlen;
    __u8 addr[4];
};

#endif

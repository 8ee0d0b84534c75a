/* SPDX-License-Identifier: GPL-2.0 */
/* Compatibility layer that lets Polycube/BCC-style dynmon code compile as libbpf-style C.
 *
 * pynetmon/dynmon/dialect.py rewrites what the C preprocessor cannot express (BPF_TABLE's map type is a
 * string literal; `NAME.lookup(&k)` is a method call) into the macros below, defines PYNETMON_HOOK_XDP
 * when the code runs on XDP, includes this header, and appends the SEC("tc"/"xdp") wrapper that calls
 * the user's handle_rx(). Everything else the user wrote is compiled as it is.
 */
#ifndef PYNETMON_POLYCUBE_H
#define PYNETMON_POLYCUBE_H

#include <linux/types.h>
#include <linux/bpf.h>
#include <linux/pkt_cls.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <linux/icmp.h>
#include <linux/tcp.h>
#include <linux/udp.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>
#include <pynetmon/addresses.h>

/* The context type of handle_rx(struct CTXTYPE *ctx, ...). */
#ifdef PYNETMON_HOOK_XDP
#define CTXTYPE xdp_md
#else
#define CTXTYPE __sk_buff
#endif

/* BCC's short integer names. */
typedef __u8 u8;
typedef __u16 u16;
typedef __u32 u32;
typedef __u64 u64;
typedef __s8 s8;
typedef __s16 s16;
typedef __s32 s32;
typedef __s64 s64;

/* C99 fixed-width types, declared like glibc does on 64-bit targets so that a later <stdint.h> agrees
 * (glibc's own header cannot be used for -target bpf: it wants gnu/stubs-32.h). */
#ifndef _BITS_STDINT_INTN_H
#define _BITS_STDINT_INTN_H 1
typedef signed char int8_t;
typedef short int16_t;
typedef int int32_t;
typedef long int64_t;
#endif
#ifndef _BITS_STDINT_UINTN_H
#define _BITS_STDINT_UINTN_H 1
typedef unsigned char uint8_t;
typedef unsigned short uint16_t;
typedef unsigned int uint32_t;
typedef unsigned long uint64_t;
#endif

/* Polycube's return codes of handle_rx(). The wrapper lets everything through except RX_DROP/RX_ERROR. */
enum {
    RX_OK,
    RX_REDIRECT,
    RX_DROP,
    RX_RECIRCULATE,
    RX_ERROR,
};

/* Polycube's log levels. */
enum {
    LOG_TRACE,
    LOG_DEBUG,
    LOG_INFO,
    LOG_WARN,
    LOG_ERR,
    LOG_CRITICAL,
};

/* What Polycube hands to handle_rx() besides the packet. */
struct pkt_metadata {
    __u16 cube_id;
    __u16 in_port;
    __u32 packet_len;
    __u32 traffic_class;
    __u16 reason;
    __u32 md[3];
};

/* pcn_log(ctx, level, fmt, ...): Polycube's logger. Without PYNETMON_PCN_LOG it compiles to nothing (a
 * monitor should not pay for a trace_printk per packet); with it, it goes to the trace pipe. The rewriter
 * turns Polycube's %I/%P/%M conversions into ones bpf_trace_printk knows. */
#ifdef PYNETMON_PCN_LOG
#define pcn_log(ctx, level, fmt, ...) bpf_printk(fmt, ##__VA_ARGS__)
#else
#define pcn_log(ctx, level, fmt, ...) ((void)0)
#endif

#ifndef htons
#define htons(x) bpf_htons(x)
#define ntohs(x) bpf_ntohs(x)
#define htonl(x) bpf_htonl(x)
#define ntohl(x) bpf_ntohl(x)
#endif

#define lock_xadd(ptr, val) ((void)__sync_fetch_and_add(ptr, val))

/* Map declarations. The rewriter turns BPF_TABLE("hash", K, V, NAME, N) and friends into these. */
#define PYNETMON_MAP(_type, _key, _value, _name, _max, _flags)                                          \
    struct {                                                                                           \
        __uint(type, _type);                                                                           \
        __uint(max_entries, _max);                                                                     \
        __uint(map_flags, _flags);                                                                     \
        __type(key, _key);                                                                             \
        __type(value, _value);                                                                         \
    } _name SEC(".maps")

#define PYNETMON_KEYLESS_MAP(_type, _value, _name, _max)                                                \
    struct {                                                                                           \
        __uint(type, _type);                                                                           \
        __uint(max_entries, _max);                                                                     \
        __type(value, _value);                                                                         \
    } _name SEC(".maps")

/* Map methods. The rewriter turns NAME.method(args) into pynetmon_method(NAME, args). The key and value
 * types come from the map definition (`__type(key, K)` declares a `K *key` member). */
#define pynetmon_lookup(_m, _k) ((__typeof__((_m).value))bpf_map_lookup_elem(&(_m), _k))
#define pynetmon_update(_m, _k, _v) bpf_map_update_elem(&(_m), _k, _v, BPF_ANY)
#define pynetmon_insert(_m, _k, _v) bpf_map_update_elem(&(_m), _k, _v, BPF_NOEXIST)
#define pynetmon_delete(_m, _k) bpf_map_delete_elem(&(_m), _k)
#define pynetmon_push(_m, _v, _flags) bpf_map_push_elem(&(_m), _v, _flags)
#define pynetmon_pop(_m, _v) bpf_map_pop_elem(&(_m), _v)
#define pynetmon_peek(_m, _v) bpf_map_peek_elem(&(_m), _v)

/* lookup_or_try_init: the entry, created from *_init when absent (NULL only when the map is full). */
#define pynetmon_lookup_or_try_init(_m, _k, _init)                                                     \
    ({                                                                                                 \
        __typeof__((_m).value) __pnm_v = bpf_map_lookup_elem(&(_m), _k);                              \
        if (!__pnm_v) {                                                                                \
            bpf_map_update_elem(&(_m), _k, _init, BPF_NOEXIST);                                        \
            __pnm_v = bpf_map_lookup_elem(&(_m), _k);                                                  \
        }                                                                                              \
        __pnm_v;                                                                                       \
    })
#define pynetmon_lookup_or_init pynetmon_lookup_or_try_init

/* increment(key[, amount]): the key is passed by value, as in BCC; atomic, so per-CPU races lose nothing. */
#define __pynetmon_second(_a, _b, ...) _b
#define pynetmon_increment(_m, _k, ...)                                                                \
    ({                                                                                                 \
        __typeof__(*(_m).key) __pnm_k = (_k);                                                          \
        __typeof__(*(_m).value) __pnm_inc = __pynetmon_second(_, ##__VA_ARGS__, 1);                    \
        __typeof__((_m).value) __pnm_p = bpf_map_lookup_elem(&(_m), &__pnm_k);                         \
        if (__pnm_p)                                                                                   \
            __sync_fetch_and_add(__pnm_p, __pnm_inc);                                                  \
        else                                                                                           \
            bpf_map_update_elem(&(_m), &__pnm_k, &__pnm_inc, BPF_NOEXIST);                             \
    })
#define pynetmon_atomic_increment pynetmon_increment

#endif /* PYNETMON_POLYCUBE_H */

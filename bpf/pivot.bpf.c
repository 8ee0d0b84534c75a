// SPDX-License-Identifier: GPL-2.0
/* The pivot of swap-on-read (pynetmon/swap/dataplane.py): the program that is attached instead of the user's
 * code. It reads which instance is active and tail-calls into it, so user space can redirect every new
 * packet to the other instance with one 4-byte map write, without touching the attachment.
 *
 * One object is loaded per attach point with exactly one of the two programs enabled (a program array
 * belongs to the program type that first uses it, so TC and XDP cannot share one). */
#include <linux/bpf.h>
#include <linux/pkt_cls.h>
#include <bpf/bpf_helpers.h>
#include "pivot.h"

/* Which slot of pivot_slots receives new packets: 0 or 1. Written only by user space (a flip). */
struct {
    __uint(type, BPF_MAP_TYPE_ARRAY);
    __uint(max_entries, 1);
    __type(key, __u32);
    __type(value, __u32);
} pivot_active SEC(".maps");

/* Slot 0: instance A of the user's program, slot 1: instance B. */
struct {
    __uint(type, BPF_MAP_TYPE_PROG_ARRAY);
    __uint(max_entries, PIVOT_SLOTS);
    __type(key, __u32);
    __type(value, __u32);
} pivot_slots SEC(".maps");

/* Invocations whose tail call failed (empty slot, tail-call limit): their packets reached no instance.
 * Per CPU so that counting costs no atomic operation; user space checks it stays zero. */
struct {
    __uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
    __uint(max_entries, 1);
    __type(key, __u32);
    __type(value, __u64);
} pivot_missed SEC(".maps");

static __always_inline __u32 active_slot(void)
{
    __u32 zero = 0;
    __u32 *slot = bpf_map_lookup_elem(&pivot_active, &zero);

    /* One load per invocation: the slot this invocation uses is decided here and nowhere else, which
     * is what lets the reader reason about "invocations that saw the old index". */
    return slot ? (*(volatile __u32 *)slot & 1) : 0;
}

static __always_inline void count_missed(void)
{
    __u32 zero = 0;
    __u64 *missed = bpf_map_lookup_elem(&pivot_missed, &zero);

    if (missed)
        *missed += 1;
}

SEC("tc")
int pivot_tc(struct __sk_buff *skb)
{
    bpf_tail_call(skb, &pivot_slots, active_slot());
    count_missed();
    return TC_ACT_UNSPEC;
}

SEC("xdp")
int pivot_xdp(struct xdp_md *ctx)
{
    bpf_tail_call(ctx, &pivot_slots, active_slot());
    count_missed();
    return XDP_PASS;
}

char LICENSE[] SEC("license") = "GPL";

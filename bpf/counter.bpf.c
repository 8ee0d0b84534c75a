// SPDX-License-Identifier: GPL-2.0
/* The smallest useful monitor: packets and bytes per direction, per CPU. Used by `make run`, the core
 * tests (TC and XDP attach), and as the baseline program of the overhead benchmarks. */
#include <linux/bpf.h>
#include <linux/pkt_cls.h>
#include <bpf/bpf_helpers.h>
#include "counter.h"

struct {
    __uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
    __uint(max_entries, 2);
    __type(key, __u32);
    __type(value, struct counter_value);
} counters SEC(".maps");

static __always_inline void count(__u32 direction, __u64 len)
{
    struct counter_value *v = bpf_map_lookup_elem(&counters, &direction);
    if (v) {
        v->packets++;
        v->bytes += len;
    }
}

SEC("tc")
int count_ingress(struct __sk_buff *skb)
{
    count(COUNTER_INGRESS, skb->len);
    return TC_ACT_UNSPEC;
}

SEC("tc")
int count_egress(struct __sk_buff *skb)
{
    count(COUNTER_EGRESS, skb->len);
    return TC_ACT_UNSPEC;
}

SEC("xdp")
int count_xdp(struct xdp_md *ctx)
{
    count(COUNTER_INGRESS, ctx->data_end - ctx->data);
    return XDP_PASS;
}

char LICENSE[] SEC("license") = "GPL";

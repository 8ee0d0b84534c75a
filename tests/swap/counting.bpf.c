// SPDX-License-Identifier: GPL-2.0
/* The exactness tests' user code: every packet is counted once in each of three maps. `by_len` (hash,
 * several keys) and `by_slot` (array) are swap-on-read; `truth` is shared by both instances, so it counts
 * every packet the dataplane ever saw, whichever instance handled it. Atomic adds, because both CPUs
 * write the same entries. IPv6 and ARP packets are not counted at all: the kernel sends them on its own
 * (router solicitations, MLD reports) at moments no test controls. */
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/pkt_cls.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>

/* Time each invocation spends between finding its counters and adding to them (0: none). A long dwell
 * makes an invocation that saw the old index very likely to be in flight at every flip, so a reader
 * that does not wait for it loses or misattributes increments (the tests' control case). */
const volatile __u64 dwell_ns = 0;

struct {
    __uint(type, BPF_MAP_TYPE_HASH);
    __uint(max_entries, 64);
    __type(key, __u32);
    __type(value, __u64);
} by_len SEC(".maps");

struct {
    __uint(type, BPF_MAP_TYPE_ARRAY);
    __uint(max_entries, 4);
    __type(key, __u32);
    __type(value, __u64);
} by_slot SEC(".maps");

struct {
    __uint(type, BPF_MAP_TYPE_ARRAY);
    __uint(max_entries, 1);
    __type(key, __u32);
    __type(value, __u64);
} truth SEC(".maps");

static __always_inline void dwell(void)
{
    __u64 start = bpf_ktime_get_ns();

    for (int i = 0; i < 4000; i++)
        if (bpf_ktime_get_ns() - start >= dwell_ns)
            break;
}

static __always_inline int uninvited(__u16 ethertype)
{
    return ethertype == bpf_htons(ETH_P_IPV6) || ethertype == bpf_htons(ETH_P_ARP);
}

static __always_inline void count(__u32 len)
{
    __u32 zero = 0, slot = len & 3, key = len % 7;
    __u64 one = 1, *total, *per_slot, *per_len;

    total = bpf_map_lookup_elem(&truth, &zero);
    if (total)
        __sync_fetch_and_add(total, 1);
    per_slot = bpf_map_lookup_elem(&by_slot, &slot);
    per_len = bpf_map_lookup_elem(&by_len, &key);
    if (!per_len) {
        /* First packet of this key in this period: insert, or add if another CPU just inserted it. */
        if (bpf_map_update_elem(&by_len, &key, &one, BPF_NOEXIST) != 0) {
            per_len = bpf_map_lookup_elem(&by_len, &key);
            if (per_len)
                __sync_fetch_and_add(per_len, 1);
        }
        per_len = 0;
    }
    if (dwell_ns)
        dwell();
    if (per_len)
        __sync_fetch_and_add(per_len, 1);
    if (per_slot)
        __sync_fetch_and_add(per_slot, 1);
}

SEC("tc")
int count_tc(struct __sk_buff *skb)
{
    if (uninvited(skb->protocol))
        return TC_ACT_OK;
    count(skb->len);
    return TC_ACT_OK;
}

SEC("xdp")
int count_xdp(struct xdp_md *ctx)
{
    void *data = (void *)(long)ctx->data, *data_end = (void *)(long)ctx->data_end;
    struct ethhdr *eth = data;

    if ((void *)(eth + 1) > data_end || uninvited(eth->h_proto))
        return XDP_PASS;
    count(data_end - data);
    return XDP_PASS;
}

char LICENSE[] SEC("license") = "GPL";

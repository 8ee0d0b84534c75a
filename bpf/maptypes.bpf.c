// SPDX-License-Identifier: GPL-2.0
/* One map of every type pynetmon's Map supports, with int and struct keys/values: the object the core
 * tests (property tests against a Python model) and the map benchmark load. Sizes are small on purpose;
 * tests and benchmarks resize maps with MapSpec.set_max_entries before load. */
#include <linux/bpf.h>
#include <linux/pkt_cls.h>
#include <bpf/bpf_helpers.h>
#include "maptypes.h"

#define SMALL 64

struct {
    __uint(type, BPF_MAP_TYPE_HASH);
    __uint(max_entries, SMALL);
    __type(key, __u32);
    __type(value, __u64);
} hash_int SEC(".maps");

struct {
    __uint(type, BPF_MAP_TYPE_HASH);
    __uint(max_entries, SMALL);
    __type(key, struct flow_key);
    __type(value, struct flow_stats);
} hash_flows SEC(".maps");

struct {
    __uint(type, BPF_MAP_TYPE_HASH);
    __uint(max_entries, SMALL);
    __type(key, __u32);
    __type(value, struct rich_value);
} hash_rich SEC(".maps");

struct {
    __uint(type, BPF_MAP_TYPE_HASH);
    __uint(max_entries, SMALL);
    __type(key, __u32);
    __type(value, struct flow_record);
} hash_records SEC(".maps");

struct {
    __uint(type, BPF_MAP_TYPE_ARRAY);
    __uint(max_entries, 16);
    __type(key, __u32);
    __type(value, __u64);
} array_int SEC(".maps");

struct {
    __uint(type, BPF_MAP_TYPE_ARRAY);
    __uint(max_entries, 16);
    __type(key, __u32);
    __type(value, struct flow_stats);
} array_struct SEC(".maps");

struct {
    __uint(type, BPF_MAP_TYPE_PERCPU_HASH);
    __uint(max_entries, SMALL);
    __type(key, __u32);
    __type(value, __u32);   /* 4 bytes: per-CPU slots are 8 apart, the codec must honour the stride */
} percpu_hash_int SEC(".maps");

struct {
    __uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
    __uint(max_entries, 8);
    __type(key, __u32);
    __type(value, struct flow_stats);
} percpu_array_struct SEC(".maps");

struct {
    __uint(type, BPF_MAP_TYPE_LRU_HASH);
    __uint(max_entries, 128);
    __type(key, __u32);
    __type(value, __u64);
} lru_int SEC(".maps");

struct {
    __uint(type, BPF_MAP_TYPE_LRU_PERCPU_HASH);
    __uint(max_entries, 128);
    __type(key, struct flow_key);
    __type(value, __u64);
} lru_percpu_flows SEC(".maps");

struct {
    __uint(type, BPF_MAP_TYPE_QUEUE);
    __uint(max_entries, 16);
    __type(value, __u32);
} queue_int SEC(".maps");

struct {
    __uint(type, BPF_MAP_TYPE_STACK);
    __uint(max_entries, 16);
    __type(value, struct flow_stats);
} stack_struct SEC(".maps");

struct {
    __uint(type, BPF_MAP_TYPE_LPM_TRIE);
    __uint(max_entries, SMALL);
    __uint(map_flags, BPF_F_NO_PREALLOC);
    __type(key, struct lpm_v4_key);
    __type(value, __u32);
} lpm_v4 SEC(".maps");

/* Kernel-side writer for the tests: each run counts the packet length under the first 4 bytes of the
 * packet in hash_int, in this CPU's slot of percpu_hash_int, and pushes the length onto queue_int, so
 * tests can check that what a program wrote decodes correctly in Python. */
SEC("tc")
int record(struct __sk_buff *skb)
{
    void *data = (void *)(long)skb->data;
    void *data_end = (void *)(long)skb->data_end;
    __u32 key, len = skb->len;
    __u64 one = 1, *count;
    __u32 *slot;

    if (data + sizeof(key) > data_end)
        return TC_ACT_OK;
    key = *(__u32 *)data;
    count = bpf_map_lookup_elem(&hash_int, &key);
    if (count)
        __sync_fetch_and_add(count, 1);
    else
        bpf_map_update_elem(&hash_int, &key, &one, BPF_NOEXIST);
    slot = bpf_map_lookup_elem(&percpu_hash_int, &key);
    if (slot)
        *slot += len;
    else
        bpf_map_update_elem(&percpu_hash_int, &key, &len, BPF_NOEXIST);
    bpf_map_push_elem(&queue_int, &len, BPF_EXIST);
    return TC_ACT_OK;
}

char LICENSE[] SEC("license") = "GPL";

// SPDX-License-Identifier: GPL-2.0
/* drops: every packet the kernel frees as dropped (tracepoint skb:kfree_skb, as a BTF tracepoint: typed
 * arguments, no copying of the event record), counted by drop reason, interface and protocol.
 *
 * Reasons are the values of the running kernel's enum skb_drop_reason; user space names them from the
 * kernel's BTF, so a new kernel's new reasons need no new code here. Tracepoints see every namespace:
 * with `netns_inum` set only drops of that namespace count (the device's namespace, else the socket's). */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include <bpf/bpf_core_read.h>
#include "common.bpf.h"
#include "drops.h"

char LICENSE[] SEC("license") = "GPL";

/* Inode of the network namespace to watch; 0: all. */
const volatile __u32 netns_inum = 0;
/* Key by kernel location too (option stacks). */
const volatile __u8 with_location = 0;

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_HASH);
	__uint(max_entries, 4096);	/* option max_entries */
	__type(key, struct drops_key);
	__type(value, __u64);
} drops_table SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, DROPS_NR_CTR);
	__type(key, __u32);
	__type(value, __u64);
} drops_counters SEC(".maps");

static __always_inline __u32 skb_netns(struct sk_buff *skb)
{
	struct net_device *dev = BPF_CORE_READ(skb, dev);
	struct sock *sk;

	if (dev)
		return BPF_CORE_READ(dev, nd_net.net, ns.inum);
	sk = BPF_CORE_READ(skb, sk);
	if (sk)
		return BPF_CORE_READ(sk, __sk_common.skc_net.net, ns.inum);
	return 0;
}

SEC("tp_btf/kfree_skb")
int BPF_PROG(drops_kfree_skb, struct sk_buff *skb, void *location, enum skb_drop_reason reason)
{
	struct drops_key key = {};
	struct net_device *dev;
	__u64 *v, one = 1;
	long err;

	/* a consumed packet is not a drop (newer kernels trace those as consume_skb anyway) */
	if (reason == bpf_core_enum_value(enum skb_drop_reason, SKB_CONSUMED) ||
	    reason == bpf_core_enum_value(enum skb_drop_reason, SKB_NOT_DROPPED_YET))
		return 0;
	if (netns_inum && skb_netns(skb) != netns_inum) {
		pnm_count(&drops_counters, DROPS_CTR_FILTERED, 1);
		return 0;
	}
	key.reason = reason;
	key.protocol = BPF_CORE_READ(skb, protocol);
	if (with_location)
		key.location = (__u64)location;
	dev = BPF_CORE_READ(skb, dev);
	if (dev)
		bpf_probe_read_kernel_str(key.ifname, sizeof(key.ifname), &dev->name);
	v = bpf_map_lookup_elem(&drops_table, &key);
	if (v) {
		*v += 1;	/* our CPU's copy: tracing programs do not nest on one CPU for one tracepoint */
		return 0;
	}
	err = bpf_map_update_elem(&drops_table, &key, &one, BPF_NOEXIST);
	if (!err)
		return 0;
	if (err != -17 /* EEXIST: another CPU created it meanwhile; add to our copy */) {
		pnm_count(&drops_counters, DROPS_CTR_OVERFLOW, 1);
		return 0;
	}
	v = bpf_map_lookup_elem(&drops_table, &key);
	if (v)
		*v += 1;
	return 0;
}

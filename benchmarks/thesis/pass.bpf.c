// SPDX-License-Identifier: GPL-2.0
/* The thesis' "pass" row: a TC program that does nothing but hand the packet on (tcx: next program). */
#include <linux/bpf.h>
#include <linux/pkt_cls.h>
#include <bpf/bpf_helpers.h>

SEC("tc")
int pass(struct __sk_buff *skb)
{
	return TC_ACT_UNSPEC;
}

char LICENSE[] SEC("license") = "GPL";

// SPDX-License-Identifier: GPL-2.0
/* Packet capture dataplane: filter in the kernel, copy only what matched, hand it to user space through
 * one ring buffer as ready-made pcap records.
 *
 * Per packet: copy the first CAPTURE_FILTER_WINDOW bytes of the frame (as tcpdump sees it: VLAN tag
 * re-inserted when the kernel moved it into skb metadata, non-linear data included) into a per-CPU
 * scratch buffer, run the filter on them, and if it matches, copy the rest up to
 * min(snaplen, filter verdict, packet length) and put header + bytes in the ring buffer.
 *
 * This file is compiled twice:
 * - by the Makefile into pynetmon/data/capture.bpf.o, with a constant filter verdict set before load
 *   (0: capture nothing, the default; 0xffffffff: capture everything), so those need no clang at run time;
 * - at run time by pynetmon.capture.dataplane, after a translated filter (pynetmon.filter.cbpf_to_c)
 *   that defines CAPTURE_FILTER and CAPTURE_FILTER_WINDOW (the bytes the filter may read).
 */
#include <linux/bpf.h>
#include <linux/pkt_cls.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>
#include "capture.h"

#ifndef CAPTURE_FILTER
#define CAPTURE_FILTER capture_constant_filter
#define CAPTURE_FILTER_WINDOW 0

/* The verdict of the built-in filter, set from user space before load. */
const volatile __u32 capture_verdict = 0;

static __always_inline __u32 capture_constant_filter(const __u8 *pkt, const __u8 *end, __u32 wirelen)
{
    return capture_verdict;
}
#endif

/* Keeps clang from dropping a bound check the verifier needs (it may prove it redundant in C terms). */
#define CAPTURE_BARRIER(var) asm volatile("" : "+r"(var))

struct {
    __uint(type, BPF_MAP_TYPE_RINGBUF);
    __uint(max_entries, 1 << 23);  /* user space sets the size it was asked for */
} capture_ring SEC(".maps");

struct {
    __uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
    __uint(max_entries, 2);
    __type(key, __u32);
    __type(value, struct capture_counters);
} capture_counters SEC(".maps");

struct {
    __uint(type, BPF_MAP_TYPE_ARRAY);
    __uint(max_entries, 1);
    __type(key, __u32);
    __type(value, struct capture_config);
} capture_config SEC(".maps");

/* One entry per possible CPU (user space sets max_entries): a plain array because per-CPU values are
 * limited to 32 KiB. TC programs do not nest on a CPU, so each CPU's entry has one user at a time. */
struct {
    __uint(type, BPF_MAP_TYPE_ARRAY);
    __uint(max_entries, 1);
    __type(key, __u32);
    __type(value, struct capture_scratch);
} capture_scratch SEC(".maps");

/* Copy frame bytes [from, to) to s->data[from, to). With the VLAN tag in skb metadata, the frame is
 * skb[0, 12) + 802.1Q tag + skb[12, len), as libpcap writes it. Returns < 0 when the skb is shorter. */
static __always_inline int copy_frame(struct __sk_buff *skb, struct capture_scratch *s, __u32 from, __u32 to,
                                      __u32 tag_bytes)
{
    if (tag_bytes && from < 16) {
        __u16 tpid = skb->vlan_proto; /* already in network byte order */
        __u16 tci = bpf_htons(skb->vlan_tci);

        if (bpf_skb_load_bytes(skb, 0, s->data, 12) < 0)
            return -1;
        __builtin_memcpy(s->data + 12, &tpid, 2);
        __builtin_memcpy(s->data + 14, &tci, 2);
        from = 16;
    }
    if (to <= from)
        return 0;
    /* 64-bit, so that the register that is checked is the one passed to the helper. */
    __u64 start = from, len = (__u64)to - from;
    CAPTURE_BARRIER(len);
    CAPTURE_BARRIER(start);
    if (start > CAPTURE_MAX_WINDOW || len > CAPTURE_MAX_CAPLEN || len < 1)
        return -1;
    return bpf_skb_load_bytes(skb, from - tag_bytes, s->data + start, len);
}

static __always_inline void capture(struct __sk_buff *skb, __u32 direction)
{
    __u32 zero = 0, cpu = bpf_get_smp_processor_id();
    struct capture_counters *count = bpf_map_lookup_elem(&capture_counters, &direction);
    struct capture_config *config = bpf_map_lookup_elem(&capture_config, &zero);
    struct capture_scratch *s = bpf_map_lookup_elem(&capture_scratch, &cpu);

    if (!count || !config || !s)
        return;
    count->seen++;

    __u32 tag_bytes = skb->vlan_present ? 4 : 0;
    __u32 wirelen = skb->len + tag_bytes;
    __u32 have = 0;

    if (CAPTURE_FILTER_WINDOW > 0) {
        have = wirelen < CAPTURE_FILTER_WINDOW ? wirelen : CAPTURE_FILTER_WINDOW;
        if (copy_frame(skb, s, 0, have, tag_bytes) < 0) {
            count->errors++;
            return;
        }
    }
    __u32 verdict = CAPTURE_FILTER(s->data, s->data + have, wirelen);
    if (!verdict)
        return;
    count->matched++;

    __u32 caplen = config->snaplen;
    if (verdict < caplen)
        caplen = verdict;
    if (wirelen < caplen)
        caplen = wirelen;
    if (caplen > CAPTURE_MAX_CAPLEN)
        caplen = CAPTURE_MAX_CAPLEN;
    if (caplen > have && copy_frame(skb, s, have, caplen, tag_bytes) < 0) {
        count->errors++;
        return;
    }

    /* TAI follows CLOCK_REALTIME's adjustments (it differs by the TAI offset only), so one offset
     * measured by user space turns it into wall-clock time. */
    __u64 now = bpf_ktime_get_tai_ns() + config->clock_offset_ns;
    s->record.ts_sec = now / 1000000000ULL;
    s->record.ts_nsec = now % 1000000000ULL;
    s->record.caplen = caplen;
    s->record.wirelen = wirelen;

    __u64 size = sizeof(struct capture_record) + caplen;
    CAPTURE_BARRIER(size);
    if (size > sizeof(struct capture_record) + CAPTURE_MAX_CAPLEN)
        return;
    /* Waking the reader per record costs more than the record; with wakeup_bytes set, it is woken once
     * that much waits and otherwise finds the records at its next timed poll. */
    __u64 flags = 0;
    __u32 wakeup = config->wakeup_bytes;
    if (wakeup)
        flags = bpf_ringbuf_query(&capture_ring, BPF_RB_AVAIL_DATA) + size >= wakeup ? BPF_RB_FORCE_WAKEUP
                                                                                      : BPF_RB_NO_WAKEUP;
    if (bpf_ringbuf_output(&capture_ring, &s->record, size, flags) == 0) {
        count->captured++;
        count->captured_bytes += caplen;
    } else {
        count->dropped++;
    }
}

SEC("tc")
int capture_ingress(struct __sk_buff *skb)
{
    capture(skb, CAPTURE_INGRESS);
    return TC_ACT_UNSPEC;
}

SEC("tc")
int capture_egress(struct __sk_buff *skb)
{
    capture(skb, CAPTURE_EGRESS);
    return TC_ACT_UNSPEC;
}

char LICENSE[] SEC("license") = "GPL";

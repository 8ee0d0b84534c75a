// SPDX-License-Identifier: GPL-2.0
/* Packet capture dataplane: filter in the kernel, copy only what matched, hand it to user space through
 * one ring buffer as ready-made pcap records.
 *
 * Per packet, as a live tcpdump on Linux does it: the filter runs on the frame as the kernel's packet
 * socket shows it to a socket filter - without the 802.1Q tag the kernel keeps in skb metadata, which
 * the filter reads through Linux's ancillary loads (parameters of the translated filter) - and the file
 * gets the frame as libpcap writes it, with that tag re-inserted. So: copy the first
 * CAPTURE_FILTER_WINDOW bytes of the frame (non-linear data included) into a per-CPU scratch buffer, run
 * the filter on them, and if it matches, put the tag in front and copy the rest up to
 * min(snaplen, filter verdict + tag, packet length), then put header + bytes in the ring buffer.
 *
 * This file is compiled twice:
 * - by the Makefile into pynetmon/data/capture.bpf.o, with a constant filter verdict set before load
 *   (0: capture nothing, the default; 0xffffffff: capture everything), so those need no clang at run time;
 * - at run time by pynetmon.capture.dataplane, after a translated filter (pynetmon.filter.cbpf_to_c with
 *   ancillary=True) that defines CAPTURE_FILTER and CAPTURE_FILTER_WINDOW (the bytes the filter may read).
 */
#include <linux/bpf.h>
#include <linux/if_packet.h>
#include <linux/pkt_cls.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>
#include "capture.h"

#ifndef CAPTURE_FILTER
#define CAPTURE_FILTER capture_constant_filter
#define CAPTURE_FILTER_WINDOW 0

/* The verdict of the built-in filter, set from user space before load. */
const volatile __u32 capture_verdict = 0;

static __always_inline __u32 capture_constant_filter(const __u8 *pkt, const __u8 *end, __u32 wirelen,
                                                     __u32 protocol, __u32 pkt_type, __u32 ifindex,
                                                     __u32 vlan_tci, __u32 vlan_present, __u32 vlan_tpid)
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

/* Copy frame bytes [from, to) to s->data[from, to), in the coordinates of the frame as written to the
 * file: with the VLAN tag in skb metadata that frame is skb[0, 12) + 802.1Q tag + skb[12, len), so frame
 * byte i >= 16 is skb byte i - 4. Returns < 0 when the skb is shorter. */
static __always_inline int copy_frame(struct __sk_buff *skb, struct capture_scratch *s, __u32 from, __u32 to,
                                      __u32 tag_bytes)
{
    if (to <= from)
        return 0;
    /* 64-bit, so that the register that is checked is the one passed to the helper. */
    __u64 start = from, len = (__u64)to - from;
    CAPTURE_BARRIER(len);
    CAPTURE_BARRIER(start);
    if (start > CAPTURE_MAX_WINDOW + CAPTURE_VLAN_TAG_BYTES || len > CAPTURE_MAX_CAPLEN || len < 1)
        return -1;
    return bpf_skb_load_bytes(skb, from - tag_bytes, s->data + start, len);
}

/* The first 16 bytes of the frame as libpcap writes it when the tag is in skb metadata: the MAC
 * addresses, then the tag (TPID, TCI) where the frame's EtherType was. */
static __always_inline int put_vlan_header(struct __sk_buff *skb, struct capture_scratch *s)
{
    __u16 tpid = skb->vlan_proto; /* already in network byte order */
    __u16 tci = bpf_htons(skb->vlan_tci);

    if (bpf_skb_load_bytes(skb, 0, s->data, 12) < 0)
        return -1;
    __builtin_memcpy(s->data + 12, &tpid, 2);
    __builtin_memcpy(s->data + 14, &tci, 2);
    return 0;
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

    /* The filter sees the frame without a metadata tag (`len` is skb->len), the file gets it with one. */
    __u32 tag_bytes = skb->vlan_present ? CAPTURE_VLAN_TAG_BYTES : 0;
    __u32 len = skb->len;
    __u32 wirelen = len + tag_bytes;
    __u32 have = 0;

    if (CAPTURE_FILTER_WINDOW > 0) {
        have = len < CAPTURE_FILTER_WINDOW ? len : CAPTURE_FILTER_WINDOW;
        if (copy_frame(skb, s, tag_bytes, tag_bytes + have, tag_bytes) < 0) {
            count->errors++;
            return;
        }
    }
    /* A packet socket's filter sees egress packets as PACKET_OUTGOING (dev_queue_xmit_nit); at the TC
     * egress hook the skb does not say so yet. */
    __u32 pkt_type = direction == CAPTURE_EGRESS ? PACKET_OUTGOING : skb->pkt_type;
    const __u8 *frame = s->data + tag_bytes;
    __u32 verdict = CAPTURE_FILTER(frame, frame + have, len, bpf_ntohs(skb->protocol), pkt_type, skb->ifindex,
                                   skb->vlan_tci, skb->vlan_present, bpf_ntohs(skb->vlan_proto));
    if (!verdict)
        return;
    count->matched++;

    /* The kernel cuts the untagged frame at the verdict, libpcap adds the tag and cuts at the snaplen. */
    __u64 caplen = (__u64)verdict + tag_bytes;
    if (config->snaplen < caplen)
        caplen = config->snaplen;
    if (wirelen < caplen)
        caplen = wirelen;
    if (caplen > CAPTURE_MAX_CAPLEN)
        caplen = CAPTURE_MAX_CAPLEN;
    __u32 done = tag_bytes + have;
    if (tag_bytes) {
        if (put_vlan_header(skb, s) < 0) {
            count->errors++;
            return;
        }
        if (done < 16)
            done = 16;
    }
    if (caplen > done && copy_frame(skb, s, done, caplen, tag_bytes) < 0) {
        count->errors++;
        return;
    }

    /* TAI follows CLOCK_REALTIME's adjustments (it differs by the TAI offset only), so one offset
     * measured by user space turns it into wall-clock time. */
    __u64 now = bpf_ktime_get_tai_ns() + config->clock_offset_ns;
    if (now - s->second_start_ns >= 1000000000ULL) { /* another second (or the first, or a clock step back) */
        s->second = now / 1000000000ULL;
        s->second_start_ns = s->second * 1000000000ULL;
    }
    s->record.ts_sec = s->second;
    s->record.ts_nsec = now - s->second_start_ns;
    s->record.caplen = caplen;
    s->record.wirelen = wirelen;

    __u64 size = sizeof(struct capture_record) + caplen;
    CAPTURE_BARRIER(size);
    if (size > sizeof(struct capture_record) + CAPTURE_MAX_CAPLEN)
        return;
    /* Waking the reader per record costs more than the record. With no flag the kernel wakes it only
     * for a record that is the first unread one (the reader had caught up: race-free, decided at commit
     * against the reader's published position); the reader then lets a batch collect for up to its
     * delay bound before it reads. A forced wakeup is sent only by the record that makes the waiting
     * data cross a multiple of wakeup_bytes (a power of two): once per full batch, not once per record
     * until the reader has drained - every forced wakeup is an irq_work, an interrupt to this CPU (a VM
     * exit here: 7 us, 100 times the rest of the program). Two CPUs crossing at once may both miss it;
     * the next multiple, or the reader's delay bound, then wakes the reader. */
    __u64 flags = 0;
    __u64 wakeup = config->wakeup_bytes;
    if (wakeup) {
        __u64 avail = bpf_ringbuf_query(&capture_ring, BPF_RB_AVAIL_DATA);
        if ((avail & ~(wakeup - 1)) != ((avail + size) & ~(wakeup - 1)))
            flags = BPF_RB_FORCE_WAKEUP;
    }
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

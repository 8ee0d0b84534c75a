/* SPDX-License-Identifier: GPL-2.0 */
/* Shared between bpf/capture.bpf.c and pynetmon/capture/ (decoded from BTF, never re-declared in Python). */
#ifndef PYNETMON_CAPTURE_H
#define PYNETMON_CAPTURE_H

#include <linux/types.h>

/* The most bytes of one packet that cross to user space: libpcap's largest snaplen, which also covers
 * a whole 64 KiB GSO packet (tcpdump records those whole). */
#define CAPTURE_MAX_CAPLEN 262144

/* The widest window of leading bytes a filter looks at (the translated filter's loads are bounded by
 * the same number, MAX_PACKET_OFF of the verifier). */
#define CAPTURE_MAX_WINDOW 65535

/* An 802.1Q tag: what the frame in the file has more than the skb when the kernel keeps the tag in
 * metadata (the filter's window then starts this far into the scratch buffer). */
#define CAPTURE_VLAN_TAG_BYTES 4

/* The per-CPU scratch buffer: the rest of a packet is copied after the filter window (which may follow
 * a tag), so the verifier has to see room for a window's end plus a whole capture. */
#define CAPTURE_SCRATCH_BYTES (CAPTURE_VLAN_TAG_BYTES + CAPTURE_MAX_WINDOW + 1 + CAPTURE_MAX_CAPLEN)

enum capture_direction {
    CAPTURE_INGRESS = 0,
    CAPTURE_EGRESS = 1,
};

/* A ring buffer record is this header followed by `caplen` bytes of the frame. The header is laid out
 * as a pcap record header (nanosecond-resolution pcap, host byte order), with the wall-clock time
 * already computed in the kernel, so user space appends whole batches of records to a pcap file or
 * stream without looking at each packet. */
struct capture_record {
    __u32 ts_sec;
    __u32 ts_nsec;
    __u32 caplen;
    __u32 wirelen;
};

/* Per CPU, per direction (key: enum capture_direction). */
struct capture_counters {
    __u64 seen;           /* packets the filter ran on */
    __u64 matched;        /* packets the filter accepted */
    __u64 captured;       /* records put in the ring buffer */
    __u64 dropped;        /* matched packets lost because the ring buffer was full */
    __u64 errors;         /* matched packets whose bytes could not be read from the skb */
    __u64 captured_bytes; /* frame bytes put in the ring buffer */
};

/* One entry, written by user space; read on every packet, so a change takes effect at once. */
struct capture_config {
    __s64 clock_offset_ns;  /* CLOCK_REALTIME - CLOCK_TAI, measured by user space */
    __u32 snaplen;          /* bytes to keep of each packet (before the filter's own limit) */
    __u32 wakeup_bytes;     /* a power of two: wake the reader at once each time the waiting data crosses a
                             * multiple of it (0: never forced) */
};

struct capture_scratch {
    /* The wall-clock second this CPU stamped last, and its start (ns, an exact multiple of 10^9): a
     * timestamp in that second needs no division (a 64-bit division by a constant is a real `div` in
     * BPF - about a third of the program's run time at 64-byte packets). */
    __u64 second_start_ns;
    __u64 second;
    struct capture_record record;
    __u8 data[CAPTURE_SCRATCH_BYTES];
};

#endif

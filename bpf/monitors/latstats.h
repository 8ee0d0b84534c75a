/* Latency statistics the delay monitors (rtt, dns, latency) share, kernel and user side
 * (pynetmon/monitors/latstats.py decodes them):
 * - `struct pnm_lat_stats`: one key's count, sum, min, max, last sighting and a log-linear histogram of
 *   microseconds, from which user space reads p50/p99. Log-linear (8 sub-slots per power of two, values
 *   below 16 µs exact) because a plain log2 slot is a factor of two wide: a p50 of 20 ms would be
 *   anywhere in [16, 32) ms, while 8 sub-slots bound it to 12.5% and interpolation does better still.
 * - the monitor-wide HISTOGRAM (log2 or linear slots, common.bpf.h) and its sum.
 * Counters are updated with atomic adds: one key may be updated from two CPUs at once (the two
 * directions of a flow, or two queues). min/max are plain stores: a concurrent update may lose one
 * extreme, never corrupt a count. */
#ifndef PYNETMON_MONITORS_LATSTATS_H
#define PYNETMON_MONITORS_LATSTATS_H

#ifndef __VMLINUX_H__
#include <linux/types.h>
#endif

#define PNM_LAT_DIRECT 16	/* 0..15 µs: one slot each */
#define PNM_LAT_SUB_BITS 3	/* 8 sub-slots per power of two above */
#define PNM_LAT_SLOTS 192	/* up to 2^25 µs (33 s); the last slot takes everything above */

struct pnm_lat_stats {
	__u64 count;
	__u64 sum_ns;
	__u64 min_ns;
	__u64 max_ns;
	__u64 last_ns;		/* bpf_ktime_get_ns() of the latest sample (idle eviction) */
	__u32 slots[PNM_LAT_SLOTS];
};				/* 808 bytes */

/* Load-time knobs of the monitor-wide histogram: log2 slots when `width` is 0, else linear slots of
 * `width` µs; `nslots` is the histogram map's max_entries. */
struct pnm_hist_config {
	__u64 width;
	__u32 nslots;
	__u32 pad;
};

#ifdef PNM_LAT_KERNEL
#include "common.bpf.h"

static __always_inline __u32 pnm_lat_slot(__u64 us)
{
	__u32 e, slot;

	if (us < PNM_LAT_DIRECT)
		return us;
	e = pnm_log2_slot(us) - 1;	/* floor(log2(us)) ≥ 4 */
	slot = PNM_LAT_DIRECT + ((e - 4) << PNM_LAT_SUB_BITS) + ((us >> (e - PNM_LAT_SUB_BITS)) & 7);
	return slot < PNM_LAT_SLOTS ? slot : PNM_LAT_SLOTS - 1;
}

/* Add one sample of `ns` nanoseconds taken at `now`. */
static __always_inline void pnm_lat_add(struct pnm_lat_stats *s, __u64 ns, __u64 now)
{
	__u32 slot = pnm_lat_slot(ns / 1000);

	__sync_fetch_and_add(&s->count, 1);
	__sync_fetch_and_add(&s->sum_ns, ns);
	if (ns < s->min_ns || !s->min_ns)	/* 0: no sample yet (entries start zeroed) */
		s->min_ns = ns;
	if (ns > s->max_ns)
		s->max_ns = ns;
	s->last_ns = now;
	/* clang knows slot < PNM_LAT_SLOTS and drops the check; the verifier does not know it */
	asm volatile("" : "+r"(slot));
	if (slot < PNM_LAT_SLOTS)
		__sync_fetch_and_add(&s->slots[slot], 1);
}

/* A zeroed `struct pnm_lat_stats` to create entries from: the struct is too large for the 512-byte
 * stack. One per object: `PNM_LAT_ZERO_MAP(name);`. */
#define PNM_LAT_ZERO_MAP(name)							\
	struct {								\
		__uint(type, BPF_MAP_TYPE_ARRAY);				\
		__uint(max_entries, 1);						\
		__type(key, __u32);						\
		__type(value, struct pnm_lat_stats);				\
	} name SEC(".maps")

/* The entry of `key` in `map` (a hash of struct pnm_lat_stats), created from `zero_map` when missing.
 * NULL with *full set when the table is full: the caller counts that as overflow. */
static __always_inline struct pnm_lat_stats *pnm_lat_entry(void *map, const void *key, void *zero_map, int *full)
{
	struct pnm_lat_stats *s = bpf_map_lookup_elem(map, key), *zero;
	__u32 index = 0;
	long err;

	*full = 0;
	if (s)
		return s;
	zero = bpf_map_lookup_elem(zero_map, &index);
	if (!zero)
		return 0;
	err = bpf_map_update_elem(map, key, zero, BPF_NOEXIST);
	if (err && err != -17 /* EEXIST: another CPU created it meanwhile */) {
		*full = 1;
		return 0;
	}
	return bpf_map_lookup_elem(map, key);
}

/* The monitor-wide histogram: a per-CPU array of slot counts (max_entries = cfg->nslots). */
#define PNM_HIST_MAP(name)							\
	struct {								\
		__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);			\
		__uint(max_entries, PNM_LOG2_SLOTS);				\
		__type(key, __u32);						\
		__type(value, __u64);						\
	} name SEC(".maps")

static __always_inline void pnm_hist_add(void *map, __u64 us, const volatile struct pnm_hist_config *cfg)
{
	__u32 slot = pnm_hist_slot(us, cfg->width, cfg->nslots);
	__u64 *c = bpf_map_lookup_elem(map, &slot);

	if (c)
		*c += 1;
}
#endif /* PNM_LAT_KERNEL */

#endif

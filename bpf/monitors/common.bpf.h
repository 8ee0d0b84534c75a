/* Helpers every ready monitor shares (kernel side). The user side of the histogram convention is
 * pynetmon/monitors/histogram.py: slot 0 holds 0, slot i holds [2^(i-1), 2^i - 1]; linear slots hold
 * [i*w, (i+1)*w - 1]; the last slot takes everything above. */
#ifndef PYNETMON_MONITORS_COMMON_BPF_H
#define PYNETMON_MONITORS_COMMON_BPF_H

#ifndef __VMLINUX_H__	/* tracing monitors include vmlinux.h, which has these types already */
#include <linux/types.h>
#endif
#include <bpf/bpf_helpers.h>

#define PNM_LOG2_SLOTS 64

/* floor(log2(v)) + 1 for v > 0, 0 for v == 0: a branch-free bit search the verifier accepts. */
static __always_inline __u32 pnm_log2_slot(__u64 v)
{
	__u32 r = 0, shift;

	if (!v)
		return 0;
	shift = (v > 0xFFFFFFFFULL) << 5; v >>= shift; r |= shift;
	shift = (v > 0xFFFF) << 4; v >>= shift; r |= shift;
	shift = (v > 0xFF) << 3; v >>= shift; r |= shift;
	shift = (v > 0xF) << 2; v >>= shift; r |= shift;
	shift = (v > 0x3) << 1; v >>= shift; r |= shift;
	r |= (v >> 1);
	return r + 1;
}

/* Slot of `v` in a histogram of `nslots` slots: log2 when `width` is 0, else linear of that width. */
static __always_inline __u32 pnm_hist_slot(__u64 v, __u64 width, __u32 nslots)
{
	__u64 slot = width ? v / width : pnm_log2_slot(v);

	return slot < nslots ? (__u32)slot : nslots - 1;
}

/* Add `n` to slot `which` of a monitor's per-CPU counter array (each CPU its own copy: no atomic needed,
 * and programs of one kind do not nest on a CPU). */
static __always_inline void pnm_count(void *counters, __u32 which, __u64 n)
{
	__u64 *c = bpf_map_lookup_elem(counters, &which);

	if (c)
		*c += n;
}

#endif

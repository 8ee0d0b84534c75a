/* Raw system calls libbpf 1.1 has no wrapper for (declared to cffi in syscall.py): bpf() itself (tcx links,
 * BPF_PROG_QUERY on tcx hooks) and membarrier() (the RCU grace-period fallback of swap-on-read). */
#ifndef PYNETMON_SYSCALL_H
#define PYNETMON_SYSCALL_H

#include <linux/bpf.h>
#include <linux/types.h>

/* enum bpf_attach_type in linux 6.6+: BPF_TCX_INGRESS = 46, BPF_TCX_EGRESS = 47. Debian 12's headers stop
 * before them, so they are spelled here once; everything else comes from the installed headers. */
#define PYNETMON_BPF_TCX_INGRESS 46
#define PYNETMON_BPF_TCX_EGRESS 47
/* mprog placement flags of BPF_LINK_CREATE (linux 6.6+ uapi: BPF_F_BEFORE, BPF_F_AFTER, BPF_F_ID). */
#define PYNETMON_BPF_F_BEFORE (1U << 3)
#define PYNETMON_BPF_F_AFTER (1U << 4)
#define PYNETMON_BPF_F_ID (1U << 5)

/* The members of union bpf_attr that pynetmon fills itself, laid out as in linux 6.6+'s
 * include/uapi/linux/bpf.h: Debian 12's 6.1 headers lack tcx's members. syscall.c checks every member the
 * installed header has against it. Python fills them by name (pynetmon/link/syscall.py). */
struct pynetmon_link_create_attr {
    __u32 prog_fd;
    __u32 target_ifindex;
    __u32 attach_type;
    __u32 flags;
    __u32 relative_fd;          /* tcx: place relative to this program or link (0: none) */
    __u32 pad;
    __u64 expected_revision;    /* tcx: fail unless the hook is at this revision (0: any) */
};

struct pynetmon_query_attr {
    __u32 target_ifindex;
    __u32 attach_type;
    __u32 query_flags;
    __u32 attach_flags;         /* out */
    __u64 prog_ids;             /* a user pointer to __u32[count] */
    __u32 count;                /* in: room in prog_ids; out: programs attached (prog_cnt) */
    __u32 pad;
    __u64 prog_attach_flags;
    __u64 link_ids;
    __u64 link_attach_flags;
    __u64 revision;             /* out (tcx) */
};

union pynetmon_bpf_attr {
    struct pynetmon_link_create_attr link_create;
    struct pynetmon_query_attr query;
    __u8 bytes[128];            /* the size the kernel is told; what is not filled stays zero */
};

/* bpf(cmd, attr, sizeof(*attr)): the new fd or 0, or -errno. */
int pynetmon_bpf_syscall(int cmd, union pynetmon_bpf_attr *attr);
/* membarrier(cmd, flags, 0): its result, or -errno. */
int pynetmon_membarrier(int cmd, unsigned int flags);

#endif

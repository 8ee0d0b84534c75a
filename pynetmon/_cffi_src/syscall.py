"""cffi declarations of syscall.h: raw system calls libbpf 1.1 has no wrapper for: bpf() itself (tcx links,
BPF_PROG_QUERY on tcx hooks), setns() (Python 3.11 has no os.setns) and membarrier() (the RCU grace-period
fallback of swap-on-read), and sched_getcpu() (glibc; a vDSO read of the CPU number)."""

INCLUDES = """
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <sched.h>
#include <linux/membarrier.h>
#include "syscall.h"
"""

TYPES = """
#define CLONE_NEWNET ...
#define MEMBARRIER_CMD_GLOBAL ...
#define MEMBARRIER_CMD_QUERY ...
#define PYNETMON_BPF_TCX_INGRESS ...
#define PYNETMON_BPF_TCX_EGRESS ...
#define PYNETMON_BPF_F_BEFORE ...
#define PYNETMON_BPF_F_AFTER ...
#define PYNETMON_BPF_F_ID ...
#define BPF_LINK_CREATE ...
#define BPF_PROG_QUERY ...

struct pynetmon_link_create_attr {
    __u32 prog_fd;
    __u32 target_ifindex;
    __u32 attach_type;
    __u32 flags;
    __u32 relative_fd;
    __u32 pad;
    __u64 expected_revision;
};
struct pynetmon_query_attr {
    __u32 target_ifindex;
    __u32 attach_type;
    __u32 query_flags;
    __u32 attach_flags;
    __u64 prog_ids;
    __u32 count;
    __u32 pad;
    __u64 prog_attach_flags;
    __u64 link_ids;
    __u64 link_attach_flags;
    __u64 revision;
};
union pynetmon_bpf_attr {
    struct pynetmon_link_create_attr link_create;
    struct pynetmon_query_attr query;
    __u8 bytes[128];
};
"""

FUNCTIONS = """
int pynetmon_bpf_syscall(int cmd, union pynetmon_bpf_attr *attr);
int sched_getcpu(void);
int pynetmon_membarrier(int cmd, unsigned int flags);
int setns(int fd, int nstype);
"""

CUSTOMIZATIONS = ""
SOURCES = ["syscall.c"]

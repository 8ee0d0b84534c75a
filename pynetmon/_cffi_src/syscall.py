"""Raw system calls libbpf 1.1 has no wrapper for: bpf() itself (tcx links, BPF_PROG_QUERY on tcx
hooks), setns() (Python 3.11 has no os.setns) and membarrier() (the RCU grace-period fallback of swap-on-read)."""

INCLUDES = """
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <sched.h>
#include <errno.h>
#include <unistd.h>
#include <sys/syscall.h>
#include <linux/membarrier.h>
"""

TYPES = """
#define CLONE_NEWNET ...
#define MEMBARRIER_CMD_GLOBAL ...
#define MEMBARRIER_CMD_QUERY ...
/* Attach types newer than Debian 12's UAPI headers (6.1); values from the kernel's include/uapi/linux/bpf.h. */
static const int PYNETMON_BPF_TCX_INGRESS;
static const int PYNETMON_BPF_TCX_EGRESS;
static const int PYNETMON_BPF_LINK_CREATE;
static const int PYNETMON_BPF_PROG_QUERY;
"""

FUNCTIONS = """
int pynetmon_bpf_syscall(int cmd, void *attr, unsigned int size);
int pynetmon_membarrier(int cmd, unsigned int flags);
int setns(int fd, int nstype);
"""

CUSTOMIZATIONS = """
#ifdef BPF_TCX_INGRESS_IS_DEFINED_AS_MACRO
#error unexpected
#endif
/* enum bpf_attach_type in linux 6.6+: BPF_TCX_INGRESS = 46, BPF_TCX_EGRESS = 47. Debian 12's headers stop
 * before them, so they are spelled here once; everything else comes from the installed headers. */
static const int PYNETMON_BPF_TCX_INGRESS = 46;
static const int PYNETMON_BPF_TCX_EGRESS = 47;
static const int PYNETMON_BPF_LINK_CREATE = BPF_LINK_CREATE;
static const int PYNETMON_BPF_PROG_QUERY = BPF_PROG_QUERY;

static int pynetmon_bpf_syscall(int cmd, void *attr, unsigned int size)
{
    long ret = syscall(__NR_bpf, cmd, attr, size);
    return ret < 0 ? -errno : (int)ret;
}

static int pynetmon_membarrier(int cmd, unsigned int flags)
{
    long ret = syscall(__NR_membarrier, cmd, flags, 0);
    return ret < 0 ? -errno : (int)ret;
}
"""

"""cffi declarations of syscall.h: raw system calls libbpf 1.1 has no wrapper for: bpf() itself (tcx links,
BPF_PROG_QUERY on tcx hooks), setns() (Python 3.11 has no os.setns) and membarrier() (the RCU grace-period
fallback of swap-on-read)."""

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
#define BPF_LINK_CREATE ...
#define BPF_PROG_QUERY ...
"""

FUNCTIONS = """
int pynetmon_bpf_syscall(int cmd, void *attr, unsigned int size);
int pynetmon_membarrier(int cmd, unsigned int flags);
int setns(int fd, int nstype);
"""

CUSTOMIZATIONS = ""
SOURCES = ["syscall.c"]

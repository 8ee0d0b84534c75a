/* Raw system calls libbpf 1.1 has no wrapper for (declared to cffi in syscall.py): bpf() itself (tcx links,
 * BPF_PROG_QUERY on tcx hooks) and membarrier() (the RCU grace-period fallback of swap-on-read). */
#ifndef PYNETMON_SYSCALL_H
#define PYNETMON_SYSCALL_H

#include <linux/bpf.h>

/* enum bpf_attach_type in linux 6.6+: BPF_TCX_INGRESS = 46, BPF_TCX_EGRESS = 47. Debian 12's headers stop
 * before them, so they are spelled here once; everything else comes from the installed headers. */
#define PYNETMON_BPF_TCX_INGRESS 46
#define PYNETMON_BPF_TCX_EGRESS 47

/* bpf(cmd, attr, size): the new fd or 0, or -errno. */
int pynetmon_bpf_syscall(int cmd, void *attr, unsigned int size);
/* membarrier(cmd, flags, 0): its result, or -errno. */
int pynetmon_membarrier(int cmd, unsigned int flags);

#endif

/* Raw system calls: see syscall.h. */
#include <errno.h>
#include <stddef.h>
#include <unistd.h>
#include <sys/syscall.h>

#include "syscall.h"

/* Every member the installed header also has must sit where the kernel reads it. */
#define SAME_OFFSET(outer, ours, theirs) \
    _Static_assert(offsetof(union pynetmon_bpf_attr, outer.ours) == offsetof(union bpf_attr, outer.theirs), \
                   #outer "." #ours " is not where <linux/bpf.h> puts " #theirs)
SAME_OFFSET(link_create, prog_fd, prog_fd);
SAME_OFFSET(link_create, target_ifindex, target_ifindex);
SAME_OFFSET(link_create, attach_type, attach_type);
SAME_OFFSET(link_create, flags, flags);
SAME_OFFSET(query, target_ifindex, target_fd);
SAME_OFFSET(query, attach_type, attach_type);
SAME_OFFSET(query, query_flags, query_flags);
SAME_OFFSET(query, attach_flags, attach_flags);
SAME_OFFSET(query, prog_ids, prog_ids);
SAME_OFFSET(query, count, prog_cnt);
SAME_OFFSET(query, prog_attach_flags, prog_attach_flags);

int pynetmon_bpf_syscall(int cmd, union pynetmon_bpf_attr *attr)
{
    long ret = syscall(__NR_bpf, cmd, attr, sizeof(*attr));
    return ret < 0 ? -errno : (int)ret;
}

int pynetmon_membarrier(int cmd, unsigned int flags)
{
    long ret = syscall(__NR_membarrier, cmd, flags, 0);
    return ret < 0 ? -errno : (int)ret;
}

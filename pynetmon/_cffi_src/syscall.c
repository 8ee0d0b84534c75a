/* Raw system calls: see syscall.h. */
#include <errno.h>
#include <unistd.h>
#include <sys/syscall.h>

#include "syscall.h"

int pynetmon_bpf_syscall(int cmd, void *attr, unsigned int size)
{
    long ret = syscall(__NR_bpf, cmd, attr, size);
    return ret < 0 ? -errno : (int)ret;
}

int pynetmon_membarrier(int cmd, unsigned int flags)
{
    long ret = syscall(__NR_membarrier, cmd, flags, 0);
    return ret < 0 ? -errno : (int)ret;
}

/* Shared between bpf/counter.bpf.c and user space (decoded from BTF, never re-declared in Python). */
#ifndef PYNETMON_COUNTER_H
#define PYNETMON_COUNTER_H

#include <linux/types.h>

enum counter_direction {
    COUNTER_INGRESS = 0,
    COUNTER_EGRESS = 1,
};

struct counter_value {
    __u64 packets;
    __u64 bytes;
};

#endif

/* Helper threads for the cpu-hop wait of swap-on-read (pynetmon/swap/quiesce.py); declared to cffi in cpuhop.py.
 *
 * One native thread pinned to each online CPU, sleeping on a futex. pynetmon_hop_run() wakes every helper
 * except the one of the caller's own CPU and spins until each has answered from user mode on its CPU. */
#ifndef PYNETMON_CPUHOP_H
#define PYNETMON_CPUHOP_H

typedef struct pynetmon_hop pynetmon_hop;

/* Helpers pinned to `cpus`, SCHED_FIFO at `fifo_priority` when > 0 and permitted (otherwise normal threads:
 * correct, only slower to answer on a busy CPU). NULL with *error set when a helper cannot be started. */
pynetmon_hop *pynetmon_hop_new(const int *cpus, int count, int fifo_priority, int *error);
/* 0: every online CPU is proven to have left any BPF program run that started before the call;
 * -ETIMEDOUT or -EXDEV: it could not be proven (wait some other way). */
int pynetmon_hop_run(pynetmon_hop *hop, long long timeout_ns);
/* 1 when the helpers run SCHED_FIFO. */
int pynetmon_hop_realtime(pynetmon_hop *hop);
void pynetmon_hop_free(pynetmon_hop *hop);

#endif

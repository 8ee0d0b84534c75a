/* A ring buffer consumer of our own for batch readers (declared to cffi in libbpf.py; used by
 * pynetmon/ringbuf.py's BatchRing): the ring is mapped as libbpf maps it, and one drain copies every
 * committed record into a pynetmon_sink and publishes the new consumer position ONCE per batch.
 *
 * libbpf's ring_buffer__consume stores the consumer position after every record; the producers (BPF
 * programs on the other CPUs) read that cache line on every reserve, so at a few hundred thousand
 * records a second each store is a cache-line transfer on the packet path as well as in the reader. */
#ifndef PYNETMON_RINGDRAIN_H
#define PYNETMON_RINGDRAIN_H

#include <stddef.h>
#include <stdint.h>
#include "sink.h"

struct pynetmon_ring {
    int map_fd;
    int epoll_fd;
    int event_fd;                /* pynetmon_ring_notify() ends a wait from another thread */
    size_t page_size;
    size_t size;                 /* data bytes (the map's max_entries, a power of two) */
    unsigned long *consumer_pos; /* its own page, read-write */
    unsigned long *producer_pos; /* the producer page, read-only, followed by the data mapped twice */
    uint8_t *data;
    uint64_t drains;             /* drain calls that took records (batches) */
};

/* Map the ring buffer map `map_fd` of `size` data bytes; NULL with errno set on failure. */
struct pynetmon_ring *pynetmon_ring_open(int map_fd, size_t size);
/* Wait for records, for up to timeout_ms (-1: forever) while none wait: the ring's descriptor is
 * edge-triggered, so only a new wakeup from the kernel ends that sleep (a commit finding the reader
 * caught up, or a forced one). Once records wait, wait up to delay_ms more for a batch to collect unless
 * batch_bytes already wait (or a forced wakeup says they do). Returns 1 (records may wait), 0 (timeout),
 * 2 (pynetmon_ring_notify) or -errno. A quiet ring costs no wakeup at all. */
int pynetmon_ring_wait(struct pynetmon_ring *r, int timeout_ms, int delay_ms, size_t batch_bytes);
/* End a pynetmon_ring_wait in progress (or the next one), from any thread. */
void pynetmon_ring_notify(struct pynetmon_ring *r);
/* Append every committed record (in commit order, discarded ones skipped) to `sink`; stops once the
 * sink's limit is reached. Returns the records taken. */
int pynetmon_ring_drain(struct pynetmon_ring *r, struct pynetmon_sink *sink);
/* Write the sample bytes of every committed record (not the ring's 8-byte record headers and padding)
 * to the file descriptor `fd`, straight from the mapped ring with writev (up to PYNETMON_RING_IOV records
 * per call), at most `max_records` of them (0: no limit); the ring space is given back after each writev.
 * For records that are complete on their own, such as pcap records: no copy in user space at all.
 * Returns 0 or -errno of a failed write; `out` says what was written and, after a failure, how many
 * records were taken from the ring but not (wholly) written (the file may end inside the first of them).
 * Between two writev calls it yields the CPU (sched_yield) while the ring is less than half full: a batch
 * of a megabyte takes about a millisecond to write, longer than a local UDP receiver's socket buffer
 * lasts at small packets (~0.5 ms at 600k 64-byte datagrams/s), so a reader that shares that receiver's
 * CPU and kept it for a whole batch made it drop datagrams; a chunk takes ~50 us. With more than half
 * the ring waiting it writes on without yielding: losing captured packets would cost more. */
struct pynetmon_ring_written {
    uint64_t records;
    uint64_t bytes;
    uint64_t failed;
};
#define PYNETMON_RING_IOV 1024
int pynetmon_ring_write(struct pynetmon_ring *r, int fd, uint64_t max_records, struct pynetmon_ring_written *out);
void pynetmon_ring_close(struct pynetmon_ring *r);

#endif

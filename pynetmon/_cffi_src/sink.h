/* The byte sink that libbpf's ring and perf buffer callbacks append records to (declared to cffi in libbpf.py),
 * so that Python handles a whole batch per poll instead of one callback per sample (pynetmon/ringbuf.py). */
#ifndef PYNETMON_SINK_H
#define PYNETMON_SINK_H

#include <errno.h>
#include <stddef.h>
#include <stdint.h>
#include <bpf/libbpf.h>

/* Each record is a native-endian u32 length followed by the sample bytes, padded to 8 bytes; with the flag
 * PYNETMON_SINK_CONCAT the samples are appended back to back instead (for records that carry their own
 * length, such as pcap records). A ring buffer poll stops once `used` reaches `limit` (0: no limit) so
 * that a batch stays bounded while producers keep writing; `stopped` tells it happened. */
struct pynetmon_sink {
    uint8_t *buf;
    size_t cap;
    size_t used;
    uint64_t records;
    uint64_t lost;
    int oom;
    uint32_t flags;
    size_t limit;
    int stopped;
};
#define PYNETMON_SINK_CONCAT 1
/* What the ring callback returns to make libbpf stop a poll early (the sample is consumed first). */
#define PYNETMON_SINK_STOP (-ENOBUFS)

struct ring_buffer *pynetmon_ring_buffer_new(int map_fd, struct pynetmon_sink *sink);
int pynetmon_ring_buffer_add(struct ring_buffer *rb, int map_fd, struct pynetmon_sink *sink);
struct perf_buffer *pynetmon_perf_buffer_new(int map_fd, size_t page_cnt, struct pynetmon_sink *sink);
void pynetmon_sink_free(struct pynetmon_sink *sink);
/* Append one sample to the sink (grown as needed; a sample that does not fit in memory is counted in oom). */
int pynetmon_sink_append(struct pynetmon_sink *sink, const void *data, uint32_t size);

#endif

/* The ring/perf buffer sink: see sink.h. */
#include <stdlib.h>
#include <string.h>

#include "sink.h"

int pynetmon_sink_append(struct pynetmon_sink *sink, const void *data, uint32_t size)
{
    int concat = sink->flags & PYNETMON_SINK_CONCAT;
    size_t need = concat ? (size_t)size : (4 + (size_t)size + 7) & ~(size_t)7;
    if (sink->used + need > sink->cap) {
        size_t cap = sink->cap ? sink->cap : 1 << 16;
        while (cap < sink->used + need)
            cap *= 2;
        uint8_t *grown = realloc(sink->buf, cap);
        if (!grown) {
            sink->oom++;
            return 0;   /* drop this record rather than stop the ring: counted in oom */
        }
        sink->buf = grown;
        sink->cap = cap;
    }
    if (concat) {
        memcpy(sink->buf + sink->used, data, size);
    } else {
        memcpy(sink->buf + sink->used, &size, 4);
        memcpy(sink->buf + sink->used + 4, data, size);
        memset(sink->buf + sink->used + 4 + size, 0, need - 4 - size);
    }
    sink->used += need;
    sink->records++;
    return 0;
}

static int pynetmon_ring_sample(void *ctx, void *data, size_t size)
{
    struct pynetmon_sink *sink = (struct pynetmon_sink *)ctx;
    pynetmon_sink_append(sink, data, (uint32_t)size);
    if (sink->limit && sink->used >= sink->limit) {
        sink->stopped = 1;
        return PYNETMON_SINK_STOP;
    }
    return 0;
}

struct ring_buffer *pynetmon_ring_buffer_new(int map_fd, struct pynetmon_sink *sink)
{
    return ring_buffer__new(map_fd, pynetmon_ring_sample, sink, NULL);
}

int pynetmon_ring_buffer_add(struct ring_buffer *rb, int map_fd, struct pynetmon_sink *sink)
{
    return ring_buffer__add(rb, map_fd, pynetmon_ring_sample, sink);
}

static void pynetmon_perf_sample(void *ctx, int cpu, void *data, __u32 size)
{
    (void)cpu;
    pynetmon_sink_append((struct pynetmon_sink *)ctx, data, size);
}

static void pynetmon_perf_lost(void *ctx, int cpu, __u64 cnt)
{
    (void)cpu;
    ((struct pynetmon_sink *)ctx)->lost += cnt;
}

struct perf_buffer *pynetmon_perf_buffer_new(int map_fd, size_t page_cnt, struct pynetmon_sink *sink)
{
    return perf_buffer__new(map_fd, page_cnt, pynetmon_perf_sample, pynetmon_perf_lost, sink, NULL);
}

void pynetmon_sink_free(struct pynetmon_sink *sink)
{
    free(sink->buf);
    sink->buf = NULL;
    sink->cap = sink->used = 0;
}

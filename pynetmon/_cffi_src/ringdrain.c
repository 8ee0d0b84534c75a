/* Batch consumer of a BPF ring buffer: see ringdrain.h. The layout and the memory ordering follow the
 * kernel (kernel/bpf/ringbuf.c) and libbpf's ringbuf.c. */
#include <errno.h>
#include <poll.h>
#include <sched.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/uio.h>
#include <unistd.h>
#include <linux/bpf.h>

#include "ringdrain.h"

struct pynetmon_ring *pynetmon_ring_open(int map_fd, size_t size)
{
    struct pynetmon_ring *r = calloc(1, sizeof(*r));
    if (!r)
        return NULL;
    r->map_fd = map_fd;
    r->epoll_fd = -1;
    r->event_fd = -1;
    r->page_size = (size_t)sysconf(_SC_PAGESIZE);
    r->size = size;
    if (size == 0 || (size & (size - 1))) {
        errno = EINVAL;
        goto fail;
    }
    void *cons = mmap(NULL, r->page_size, PROT_READ | PROT_WRITE, MAP_SHARED, map_fd, 0);
    if (cons == MAP_FAILED)
        goto fail;
    r->consumer_pos = cons;
    /* The data area follows the producer page and is mapped twice in a row by the kernel, so a record
     * that wraps around the end is contiguous in memory. */
    void *prod = mmap(NULL, r->page_size + 2 * size, PROT_READ, MAP_SHARED, map_fd, (off_t)r->page_size);
    if (prod == MAP_FAILED)
        goto fail;
    r->producer_pos = prod;
    r->data = (uint8_t *)prod + r->page_size;
    r->epoll_fd = epoll_create1(EPOLL_CLOEXEC);
    if (r->epoll_fd < 0)
        goto fail;
    struct epoll_event ev = {.events = EPOLLIN | EPOLLET, .data.u32 = 0};
    if (epoll_ctl(r->epoll_fd, EPOLL_CTL_ADD, map_fd, &ev) < 0)
        goto fail;
    r->event_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (r->event_fd < 0)
        goto fail;
    struct epoll_event notify = {.events = EPOLLIN, .data.u32 = 1};
    if (epoll_ctl(r->epoll_fd, EPOLL_CTL_ADD, r->event_fd, &notify) < 0)
        goto fail;
    return r;
fail: {
        int err = errno;
        pynetmon_ring_close(r);
        errno = err;
        return NULL;
    }
}

static int64_t avail_bytes(struct pynetmon_ring *r)
{
    return (int64_t)(__atomic_load_n(r->producer_pos, __ATOMIC_ACQUIRE) -
                     __atomic_load_n(r->consumer_pos, __ATOMIC_RELAXED));
}

/* One epoll wait: 1 for a wakeup from the kernel, 2 for a notification, 0 on timeout, -errno. */
static int wait_once(struct pynetmon_ring *r, int timeout_ms)
{
    for (;;) {
        struct epoll_event ev[2];
        int n = epoll_wait(r->epoll_fd, ev, 2, timeout_ms);
        if (n < 0 && errno == EINTR)
            continue; /* a signal for another thread: keep waiting (the timeout restarts, rare) */
        if (n < 0)
            return -errno;
        for (int i = 0; i < n; i++) {
            if (ev[i].data.u32 == 1) {
                uint64_t value;
                ssize_t got = read(r->event_fd, &value, sizeof(value));
                (void)got; /* EAGAIN: another wait took it; either way this one ends */
                return 2;
            }
        }
        return n > 0 ? 1 : 0;
    }
}

int pynetmon_ring_wait(struct pynetmon_ring *r, int timeout_ms, int delay_ms, size_t batch_bytes)
{
    /* Until records wait: sleep until the kernel wakes us (edge-triggered: only a new wakeup counts). */
    if (avail_bytes(r) <= 0) {
        int ret = wait_once(r, timeout_ms);
        if (ret != 1)
            return ret;
    }
    /* Records wait: let a batch collect for up to delay_ms unless a full one is there, or comes (the
     * kernel forces a wakeup at batch_bytes). */
    if (delay_ms > 0 && avail_bytes(r) < (int64_t)batch_bytes) {
        int ret = wait_once(r, delay_ms);
        if (ret < 0)
            return ret;
    }
    return 1;
}

void pynetmon_ring_notify(struct pynetmon_ring *r)
{
    uint64_t one = 1;
    ssize_t put = write(r->event_fd, &one, sizeof(one));
    (void)put; /* a full counter (2^64 - 2 notifications) still wakes the wait */
}

static inline uint32_t record_bytes(uint32_t len)
{
    /* Header (8 bytes) plus the sample, rounded up to 8; the two top bits of len are flags. */
    len &= ~(BPF_RINGBUF_BUSY_BIT | BPF_RINGBUF_DISCARD_BIT);
    return (len + BPF_RINGBUF_HDR_SZ + 7) & ~7u;
}

int pynetmon_ring_drain(struct pynetmon_ring *r, struct pynetmon_sink *sink)
{
    unsigned long mask = r->size - 1;
    unsigned long cons = __atomic_load_n(r->consumer_pos, __ATOMIC_ACQUIRE);
    unsigned long published = cons;
    int taken = 0;
    sink->stopped = 0;
    for (;;) {
        unsigned long prod = __atomic_load_n(r->producer_pos, __ATOMIC_ACQUIRE);
        while (cons < prod) {
            uint32_t *hdr = (uint32_t *)(r->data + (cons & mask));
            uint32_t len = __atomic_load_n(hdr, __ATOMIC_ACQUIRE);
            if (len & BPF_RINGBUF_BUSY_BIT)
                goto publish; /* reserved, not committed yet: its commit wakes us (we stop right at it) */
            cons += record_bytes(len);
            if (!(len & BPF_RINGBUF_DISCARD_BIT)) {
                pynetmon_sink_append(sink, (uint8_t *)hdr + BPF_RINGBUF_HDR_SZ,
                                     len & ~(BPF_RINGBUF_BUSY_BIT | BPF_RINGBUF_DISCARD_BIT));
                taken++;
                if (sink->limit && sink->used >= sink->limit) {
                    sink->stopped = 1;
                    goto publish;
                }
            }
        }
        if (cons == published)
            break;
        /* Give the space back, then look at the producer position once more: a record committed after
         * this store finds us caught up and wakes us (the kernel's rule for flag-less commits); one
         * reserved before it is seen by the next read. Once per batch, not per record. */
        __atomic_store_n(r->consumer_pos, cons, __ATOMIC_RELEASE);
        __atomic_thread_fence(__ATOMIC_SEQ_CST);
        published = cons;
        r->drains++;
    }
    return taken;
publish:
    if (cons != published) {
        __atomic_store_n(r->consumer_pos, cons, __ATOMIC_RELEASE);
        r->drains++;
    }
    return taken;
}

/* writev the whole of iov[0, n): retries short writes (a pipe, a signal) and waits while a non-blocking
 * descriptor is full. Returns 0, or -errno with *done_iov the number of iovecs written whole. */
static int write_all(int fd, struct iovec *iov, int n, int *done_iov, uint64_t *bytes)
{
    int i = 0;
    *done_iov = 0;
    while (i < n) {
        ssize_t w = writev(fd, iov + i, n - i);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            if (errno == EAGAIN) {
                struct pollfd p = {.fd = fd, .events = POLLOUT};
                if (poll(&p, 1, -1) >= 0 || errno == EINTR)
                    continue;
            }
            *done_iov = i;
            return -errno;
        }
        if (w == 0) {
            *done_iov = i;
            return -EIO; /* writev that takes nothing and reports no error: never retried forever */
        }
        *bytes += (uint64_t)w;
        while (i < n && (size_t)w >= iov[i].iov_len) {
            w -= (ssize_t)iov[i].iov_len;
            i++;
        }
        if (i < n) { /* a short write ended inside iov[i] */
            iov[i].iov_base = (uint8_t *)iov[i].iov_base + w;
            iov[i].iov_len -= (size_t)w;
        }
    }
    *done_iov = n;
    return 0;
}

int pynetmon_ring_write(struct pynetmon_ring *r, int fd, uint64_t max_records, struct pynetmon_ring_written *out)
{
    unsigned long mask = r->size - 1;
    unsigned long cons = __atomic_load_n(r->consumer_pos, __ATOMIC_ACQUIRE);
    struct iovec iov[PYNETMON_RING_IOV];
    unsigned long after[PYNETMON_RING_IOV]; /* the consumer position after iov[i]'s record */
    out->records = out->bytes = out->failed = 0;
    for (;;) {
        unsigned long prod = __atomic_load_n(r->producer_pos, __ATOMIC_ACQUIRE);
        unsigned long pos = cons;
        int n = 0, busy = 0;
        while (pos < prod && n < PYNETMON_RING_IOV && !(max_records && out->records + n >= max_records)) {
            uint32_t *hdr = (uint32_t *)(r->data + (pos & mask));
            uint32_t len = __atomic_load_n(hdr, __ATOMIC_ACQUIRE);
            if (len & BPF_RINGBUF_BUSY_BIT) {
                busy = 1; /* reserved, not committed yet: its commit wakes us (we stop right at it) */
                break;
            }
            pos += record_bytes(len);
            if (len & BPF_RINGBUF_DISCARD_BIT)
                continue;
            /* The data area is mapped twice in a row: a record that wraps is contiguous. */
            iov[n].iov_base = (uint8_t *)hdr + BPF_RINGBUF_HDR_SZ;
            iov[n].iov_len = len;
            after[n++] = pos;
        }
        if (pos == cons)
            return 0; /* nothing (more) committed, or the limit reached */
        int done = 0;
        int err = n ? write_all(fd, iov, n, &done, &out->bytes) : 0;
        out->records += (uint64_t)done;
        if (err) {
            /* The records of this chunk that were not written whole are given back to the ring too:
             * the caller counts them as lost and stops reading. */
            out->failed = (uint64_t)(n - done);
            __atomic_store_n(r->consumer_pos, after[n - 1], __ATOMIC_RELEASE);
            r->drains++;
            return err;
        }
        /* Give the space back, then look at the producer position again: a record committed after this
         * store finds us caught up and wakes us; one committed before it is seen by the next pass. */
        __atomic_store_n(r->consumer_pos, pos, __ATOMIC_RELEASE);
        __atomic_thread_fence(__ATOMIC_SEQ_CST);
        r->drains++;
        cons = pos;
        if (busy || (max_records && out->records >= max_records))
            return 0;
        /* More to write: give way between chunks, unless the ring is filling up (see the header). */
        if (avail_bytes(r) < (int64_t)(r->size / 2))
            sched_yield();
    }
}

void pynetmon_ring_close(struct pynetmon_ring *r)
{
    if (!r)
        return;
    if (r->epoll_fd >= 0)
        close(r->epoll_fd);
    if (r->event_fd >= 0)
        close(r->event_fd);
    if (r->consumer_pos)
        munmap(r->consumer_pos, r->page_size);
    if (r->producer_pos)
        munmap(r->producer_pos, r->page_size + 2 * r->size);
    free(r);
}

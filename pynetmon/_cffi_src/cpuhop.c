/* The cpu-hop helpers of swap-on-read: see cpuhop.h.
 *
 * Why native threads: a Python helper would need the GIL to answer, and migrating the reading thread itself
 * makes it queue on the target CPU (as a normal thread), or, boosted to SCHED_FIFO for the hop, be preempted
 * the moment it drops back to SCHED_OTHER (the scheduler reschedules a task that leaves the RT class) — which
 * inside a read cost 0.3-3 ms under load. Helpers answer in a few microseconds, in parallel on every CPU, and
 * the reader never moves or changes class. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <linux/futex.h>
#include <sys/syscall.h>

#include "cpuhop.h"

/* One helper per CPU, each on its own cache lines: the reader writes `request`, the helper `answer`. */
struct pynetmon_hop_helper {
    uint32_t request __attribute__((aligned(64)));   /* futex word: the generation asked for */
    uint32_t answer __attribute__((aligned(64)));    /* the generation answered */
    int seen_cpu;                                     /* sched_getcpu() when it answered */
    int cpu;                                          /* the CPU it is pinned to */
    int stopping;
    pthread_t thread;
    int started;
};

struct pynetmon_hop {
    int count;
    int realtime;           /* helpers run SCHED_FIFO */
    uint32_t generation;
    struct pynetmon_hop_helper *helpers;
};

static void pynetmon_hop_relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    __asm__ __volatile__("yield");
#endif
}

static void *pynetmon_hop_helper_main(void *arg)
{
    struct pynetmon_hop_helper *h = arg;
    uint32_t done = 0;

    for (;;) {
        uint32_t req = __atomic_load_n(&h->request, __ATOMIC_ACQUIRE);
        if (req == done) {
            syscall(SYS_futex, &h->request, FUTEX_WAIT_PRIVATE, done, NULL, NULL, 0);
            continue;
        }
        if (__atomic_load_n(&h->stopping, __ATOMIC_ACQUIRE))
            return NULL;
        /* Executing this in user mode on h->cpu is the proof: no bh-disabled section (no TC/XDP
         * invocation) is in progress there, and every one that started there before has finished. */
        h->seen_cpu = sched_getcpu();
        done = req;
        __atomic_store_n(&h->answer, req, __ATOMIC_RELEASE);
    }
}

void pynetmon_hop_free(pynetmon_hop *hop)
{
    if (!hop)
        return;
    for (int i = 0; i < hop->count; i++) {
        struct pynetmon_hop_helper *h = &hop->helpers[i];
        if (!h->started)
            continue;
        __atomic_store_n(&h->stopping, 1, __ATOMIC_RELEASE);
        __atomic_store_n(&h->request, h->request + 1, __ATOMIC_RELEASE);
        syscall(SYS_futex, &h->request, FUTEX_WAKE_PRIVATE, 1, NULL, NULL, 0);
        pthread_join(h->thread, NULL);
    }
    free(hop->helpers);
    free(hop);
}

static int pynetmon_hop_start(struct pynetmon_hop_helper *h, int fifo_priority)
{
    pthread_attr_t attr;
    cpu_set_t set;
    int err;

    CPU_ZERO(&set);
    CPU_SET(h->cpu, &set);
    if ((err = pthread_attr_init(&attr)))
        return err;
    pthread_attr_setstacksize(&attr, 64 * 1024);
    err = pthread_attr_setaffinity_np(&attr, sizeof(set), &set);
    if (!err && fifo_priority > 0) {
        struct sched_param param = { .sched_priority = fifo_priority };
        pthread_attr_setinheritsched(&attr, PTHREAD_EXPLICIT_SCHED);
        pthread_attr_setschedpolicy(&attr, SCHED_FIFO);
        pthread_attr_setschedparam(&attr, &param);
    }
    if (!err)
        err = pthread_create(&h->thread, &attr, pynetmon_hop_helper_main, h);
    pthread_attr_destroy(&attr);
    if (!err)
        h->started = 1;
    return err;
}

pynetmon_hop *pynetmon_hop_new(const int *cpus, int count, int fifo_priority, int *error)
{
    pynetmon_hop *hop = calloc(1, sizeof(*hop));
    void *mem = NULL;

    *error = 0;
    if (!hop || posix_memalign(&mem, 64, sizeof(struct pynetmon_hop_helper) * (count ? count : 1))) {
        free(hop);
        *error = ENOMEM;
        return NULL;
    }
    memset(mem, 0, sizeof(struct pynetmon_hop_helper) * (count ? count : 1));
    hop->helpers = mem;
    hop->realtime = fifo_priority > 0;
    for (int i = 0; i < count; i++) {
        struct pynetmon_hop_helper *h = &hop->helpers[i];
        int err;

        h->cpu = cpus[i];
        h->seen_cpu = -1;
        hop->count = i + 1;
        err = pynetmon_hop_start(h, hop->realtime ? fifo_priority : 0);
        if (err == EPERM && hop->realtime) {
            /* No CAP_SYS_NICE: every helper is a normal thread. */
            hop->realtime = 0;
            err = pynetmon_hop_start(h, 0);
            for (int j = 0; j < i && !err; j++) {
                struct sched_param param = { .sched_priority = 0 };
                pthread_setschedparam(hop->helpers[j].thread, SCHED_OTHER, &param);
            }
        }
        if (err) {
            *error = err;
            pynetmon_hop_free(hop);
            return NULL;
        }
    }
    return hop;
}

int pynetmon_hop_realtime(pynetmon_hop *hop)
{
    return hop->realtime;
}

static long long pynetmon_hop_now(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

/* Wake every helper except the caller's CPU's (the caller executing here, in user mode, after the flip
 * already proves its own CPU) and wait until each answered from its CPU. 0: every helper CPU, plus the
 * caller's, is proven; -ETIMEDOUT: a helper did not answer in time; -EXDEV: a helper answered from
 * another CPU (its affinity was changed, or its CPU went offline). Either failure: wait some other way. */
int pynetmon_hop_run(pynetmon_hop *hop, long long timeout_ns)
{
    uint32_t gen = ++hop->generation;
    int here = sched_getcpu();
    long long deadline = 0;
    int result = 0;

    if (here < 0)
        return -errno;
    for (int i = 0; i < hop->count; i++) {
        struct pynetmon_hop_helper *h = &hop->helpers[i];
        if (h->cpu == here)
            continue;
        __atomic_store_n(&h->request, gen, __ATOMIC_RELEASE);
        syscall(SYS_futex, &h->request, FUTEX_WAKE_PRIVATE, 1, NULL, NULL, 0);
    }
    for (int i = 0; i < hop->count; i++) {
        struct pynetmon_hop_helper *h = &hop->helpers[i];
        unsigned spins = 0;

        if (h->cpu == here)
            continue;
        while (__atomic_load_n(&h->answer, __ATOMIC_ACQUIRE) != gen) {
            pynetmon_hop_relax();
            if (++spins % 256)
                continue;
            long long now = pynetmon_hop_now();
            if (!deadline)
                deadline = now + timeout_ns;
            else if (now > deadline)
                return -ETIMEDOUT;
            if (spins > 256 * 64)
                sched_yield();  /* a slow helper (its CPU is busy): let others use ours meanwhile */
        }
        if (h->seen_cpu != h->cpu)
            result = -EXDEV;
    }
    return result;
}

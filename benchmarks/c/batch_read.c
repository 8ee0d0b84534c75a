// The C limit for reading a whole hash map into user memory: BPF_MAP_LOOKUP_BATCH into one preallocated
// buffer, no decoding. Built and run by benchmarks/bench_maps.py:
//     gcc -O2 -o batch_read batch_read.c -lbpf && ./batch_read MAP_ID RUNS BATCH
// prints one line per run: "<entries> <seconds>".
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <bpf/bpf.h>

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

int main(int argc, char **argv)
{
    if (argc != 4) {
        fprintf(stderr, "usage: %s MAP_ID RUNS BATCH\n", argv[0]);
        return 2;
    }
    unsigned id = strtoul(argv[1], NULL, 0);
    int runs = atoi(argv[2]);
    __u32 batch = strtoul(argv[3], NULL, 0);
    int fd = bpf_map_get_fd_by_id(id);
    if (fd < 0) {
        fprintf(stderr, "map id %u: %s\n", id, strerror(errno));
        return 1;
    }
    struct bpf_map_info info = {};
    __u32 len = sizeof(info);
    if (bpf_obj_get_info_by_fd(fd, &info, &len)) {
        perror("bpf_obj_get_info_by_fd");
        return 1;
    }
    /* Room for every entry: one contiguous buffer per side, as large as the map can be. */
    char *keys = malloc((size_t)info.max_entries * info.key_size);
    char *values = malloc((size_t)info.max_entries * info.value_size);
    if (!keys || !values) {
        perror("malloc");
        return 1;
    }
    memset(keys, 0, (size_t)info.max_entries * info.key_size);  /* fault the pages in before timing */
    memset(values, 0, (size_t)info.max_entries * info.value_size);
    LIBBPF_OPTS(bpf_map_batch_opts, opts);
    for (int r = 0; r < runs; r++) {
        double start = now();
        __u64 in = 0, out = 0;
        size_t total = 0;
        int first = 1;
        for (;;) {
            __u32 count = batch;
            if (total + count > info.max_entries)
                count = info.max_entries - total;
            if (count == 0)
                break;
            int err = bpf_map_lookup_batch(fd, first ? NULL : &in, &out, keys + total * info.key_size,
                                           values + total * info.value_size, &count, &opts);
            total += count;
            if (err && errno == ENOENT)
                break;
            if (err) {
                fprintf(stderr, "bpf_map_lookup_batch: %s\n", strerror(errno));
                return 1;
            }
            in = out;
            first = 0;
        }
        printf("%zu %.6f\n", total, now() - start);
        fflush(stdout);
    }
    return 0;
}

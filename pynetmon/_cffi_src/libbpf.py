"""<bpf/libbpf.h>: objects, programs, maps, TC/XDP attach, ring and perf buffers, and the log hook."""

INCLUDES = """
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <errno.h>
#include <bpf/libbpf.h>
#include "libbpf_log.h"
#include "sink.h"
#include "ringdrain.h"
"""

TYPES = """
struct bpf_object;
struct bpf_program;
struct bpf_map;
struct bpf_link;
struct btf;
struct ring_buffer;
struct perf_buffer;

enum libbpf_print_level { LIBBPF_WARN, LIBBPF_INFO, LIBBPF_DEBUG };

struct bpf_object_open_opts {
    size_t sz;
    const char *object_name;
    bool relaxed_maps;
    const char *pin_root_path;
    const char *kconfig;
    const char *btf_custom_path;
    char *kernel_log_buf;
    size_t kernel_log_size;
    __u32 kernel_log_level;
    ...;
};

enum bpf_tc_attach_point { BPF_TC_INGRESS, BPF_TC_EGRESS, BPF_TC_CUSTOM };
enum bpf_tc_flags { BPF_TC_F_REPLACE };

struct bpf_tc_hook {
    size_t sz;
    int ifindex;
    enum bpf_tc_attach_point attach_point;
    __u32 parent;
    ...;
};

struct bpf_tc_opts {
    size_t sz;
    int prog_fd;
    __u32 flags;
    __u32 prog_id;
    __u32 handle;
    __u32 priority;
    ...;
};

struct bpf_xdp_attach_opts {
    size_t sz;
    int old_prog_fd;
    ...;
};

struct bpf_xdp_query_opts {
    size_t sz;
    __u32 prog_id;
    __u32 drv_prog_id;
    __u32 hw_prog_id;
    __u32 skb_prog_id;
    __u8 attach_mode;
    ...;
};

/* The batch sink of ring/perf buffer callbacks: see sink.h. */
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
#define PYNETMON_SINK_STOP ...

/* Our batch consumer of ring buffers: see ringdrain.h. */
struct pynetmon_ring {
    int map_fd;
    int epoll_fd;
    uint64_t drains;
    ...;
};
struct pynetmon_ring_written {
    uint64_t records;
    uint64_t bytes;
    uint64_t failed;
};
"""

FUNCTIONS = """
int libbpf_major_version(void);
int libbpf_minor_version(void);
int libbpf_num_possible_cpus(void);
int libbpf_strerror(int err, char *buf, size_t size);
int libbpf_probe_bpf_prog_type(enum bpf_prog_type prog_type, const void *opts);
int libbpf_probe_bpf_map_type(enum bpf_map_type map_type, const void *opts);
int libbpf_probe_bpf_helper(enum bpf_prog_type prog_type, int helper_id, const void *opts);

struct bpf_object *bpf_object__open_file(const char *path, const struct bpf_object_open_opts *opts);
struct bpf_object *bpf_object__open_mem(const void *obj_buf, size_t obj_buf_sz,
                                        const struct bpf_object_open_opts *opts);
int bpf_object__load(struct bpf_object *obj);
void bpf_object__close(struct bpf_object *obj);
const char *bpf_object__name(const struct bpf_object *obj);
struct btf *bpf_object__btf(const struct bpf_object *obj);
struct bpf_map *bpf_object__next_map(const struct bpf_object *obj, const struct bpf_map *map);
struct bpf_program *bpf_object__next_program(const struct bpf_object *obj, struct bpf_program *prog);
struct bpf_map *bpf_object__find_map_by_name(const struct bpf_object *obj, const char *name);
struct bpf_program *bpf_object__find_program_by_name(const struct bpf_object *obj, const char *name);

const char *bpf_program__name(const struct bpf_program *prog);
const char *bpf_program__section_name(const struct bpf_program *prog);
int bpf_program__fd(const struct bpf_program *prog);
enum bpf_prog_type bpf_program__type(const struct bpf_program *prog);
int bpf_program__set_type(struct bpf_program *prog, enum bpf_prog_type type);
enum bpf_attach_type bpf_program__expected_attach_type(const struct bpf_program *prog);
int bpf_program__set_expected_attach_type(struct bpf_program *prog, enum bpf_attach_type type);
bool bpf_program__autoload(const struct bpf_program *prog);
int bpf_program__set_autoload(struct bpf_program *prog, bool autoload);
int bpf_program__set_log_level(struct bpf_program *prog, __u32 log_level);
int bpf_program__set_log_buf(struct bpf_program *prog, char *log_buf, size_t log_size);
struct bpf_link *bpf_program__attach(const struct bpf_program *prog);
struct bpf_link *bpf_program__attach_xdp(const struct bpf_program *prog, int ifindex);
struct bpf_link *bpf_program__attach_tracepoint(const struct bpf_program *prog,
                                                const char *tp_category, const char *tp_name);
struct bpf_link *bpf_program__attach_trace(const struct bpf_program *prog);
struct bpf_link *bpf_program__attach_iter(const struct bpf_program *prog, const void *opts);
struct bpf_link *bpf_program__attach_raw_tracepoint(const struct bpf_program *prog, const char *tp_name);

int bpf_link__fd(const struct bpf_link *link);
int bpf_link__detach(struct bpf_link *link);
int bpf_link__destroy(struct bpf_link *link);
void bpf_link__disconnect(struct bpf_link *link);

const char *bpf_map__name(const struct bpf_map *map);
enum bpf_map_type bpf_map__type(const struct bpf_map *map);
int bpf_map__set_type(struct bpf_map *map, enum bpf_map_type type);
__u32 bpf_map__key_size(const struct bpf_map *map);
__u32 bpf_map__value_size(const struct bpf_map *map);
int bpf_map__set_value_size(struct bpf_map *map, __u32 size);
__u32 bpf_map__max_entries(const struct bpf_map *map);
int bpf_map__set_max_entries(struct bpf_map *map, __u32 max_entries);
__u32 bpf_map__map_flags(const struct bpf_map *map);
int bpf_map__set_map_flags(struct bpf_map *map, __u32 flags);
int bpf_map__fd(const struct bpf_map *map);
int bpf_map__reuse_fd(struct bpf_map *map, int fd);
bool bpf_map__is_internal(const struct bpf_map *map);
__u32 bpf_map__btf_key_type_id(const struct bpf_map *map);
__u32 bpf_map__btf_value_type_id(const struct bpf_map *map);
int bpf_map__set_pin_path(struct bpf_map *map, const char *path);
int bpf_map__set_inner_map_fd(struct bpf_map *map, int fd);
const void *bpf_map__initial_value(struct bpf_map *map, size_t *psize);
int bpf_map__set_initial_value(struct bpf_map *map, const void *data, size_t size);
bool bpf_map__autocreate(const struct bpf_map *map);
int bpf_map__set_autocreate(struct bpf_map *map, bool autocreate);

int bpf_xdp_attach(int ifindex, int prog_fd, __u32 flags, const struct bpf_xdp_attach_opts *opts);
int bpf_xdp_detach(int ifindex, __u32 flags, const struct bpf_xdp_attach_opts *opts);
int bpf_xdp_query(int ifindex, int flags, struct bpf_xdp_query_opts *opts);
int bpf_tc_hook_create(struct bpf_tc_hook *hook);
int bpf_tc_hook_destroy(struct bpf_tc_hook *hook);
int bpf_tc_attach(const struct bpf_tc_hook *hook, struct bpf_tc_opts *opts);
int bpf_tc_detach(const struct bpf_tc_hook *hook, const struct bpf_tc_opts *opts);
int bpf_tc_query(const struct bpf_tc_hook *hook, struct bpf_tc_opts *opts);

void ring_buffer__free(struct ring_buffer *rb);
int ring_buffer__poll(struct ring_buffer *rb, int timeout_ms);
int ring_buffer__consume(struct ring_buffer *rb);
int ring_buffer__epoll_fd(const struct ring_buffer *rb);
void perf_buffer__free(struct perf_buffer *pb);
int perf_buffer__poll(struct perf_buffer *pb, int timeout_ms);
int perf_buffer__consume(struct perf_buffer *pb);
int perf_buffer__epoll_fd(const struct perf_buffer *pb);

/* pynetmon helpers (libbpf_log.h, sink.h) */
extern "Python+C" void _pynetmon_libbpf_log(int level, const char *msg);
void pynetmon_install_print(void);
struct ring_buffer *pynetmon_ring_buffer_new(int map_fd, struct pynetmon_sink *sink);
int pynetmon_ring_buffer_add(struct ring_buffer *rb, int map_fd, struct pynetmon_sink *sink);
struct perf_buffer *pynetmon_perf_buffer_new(int map_fd, size_t page_cnt, struct pynetmon_sink *sink);
void pynetmon_sink_free(struct pynetmon_sink *sink);
struct pynetmon_ring *pynetmon_ring_open(int map_fd, size_t size);
int pynetmon_ring_wait(struct pynetmon_ring *r, int timeout_ms, int delay_ms, size_t batch_bytes);
void pynetmon_ring_notify(struct pynetmon_ring *r);
int pynetmon_ring_drain(struct pynetmon_ring *r, struct pynetmon_sink *sink);
int pynetmon_ring_write(struct pynetmon_ring *r, int fd, uint64_t max_records, struct pynetmon_ring_written *out);
void pynetmon_ring_close(struct pynetmon_ring *r);
"""

CUSTOMIZATIONS = ""
SOURCES = ["libbpf_log.c", "sink.c", "ringdrain.c"]

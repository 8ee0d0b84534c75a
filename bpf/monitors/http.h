/* The HTTP monitor: structs and constants shared by bpf/monitors/http.bpf.c and
 * pynetmon/monitors/http.py (which decodes them from the object's BTF, never re-declares them). */
#ifndef PYNETMON_MONITORS_HTTP_H
#define PYNETMON_MONITORS_HTTP_H

#include <linux/types.h>

#define HTTP_MAX_PORTS 8
/* Method index: 0 is "no request seen" (a response whose request was not watched), then these, in the
 * order of pynetmon.monitors.http.METHODS. */
#define HTTP_METHODS 10
/* Status codes 100..599 are counted by code; anything else is not a status line. */
#define HTTP_STATUS_MIN 100
#define HTTP_STATUS_END 600
#define HTTP_CLASSES 6                 /* class index = status / 100 (1..5); 0 unused */
#define HTTP_HIST_SLOTS 32             /* log2 microseconds: slot 31 holds everything from ~18 min */
#define HTTP_STATUS_BYTES 12           /* "HTTP/1.1 200": all a status line needs to be recognised */
#define HTTP_HEADER_WINDOW 512         /* bytes of a response's first segment searched for Content-Length */
#define HTTP_MAX_RESPONSES 4           /* responses recognised in one segment (pipelining) */
#define HTTP_REQ_RING 4                /* outstanding requests remembered per connection (pipelining) */

enum http_counter {
	HTTP_C_PACKETS = 0,      /* TCP packets on a watched port */
	HTTP_C_UNPARSED,         /* data where a response had to start that was not a status line */
	HTTP_C_UNKNOWN_LENGTH,   /* responses whose end was not known (no Content-Length in their first segment) */
	HTTP_C_SPLIT,            /* status lines completed from two segments */
	HTTP_C_PIPELINED,        /* responses found inside a segment, after the end of the previous one */
	HTTP_C_NO_REQUEST,       /* responses without a watched request (no latency for them) */
	HTTP_C_REQUESTS_DROPPED, /* requests beyond HTTP_REQ_RING outstanding on one connection */
	HTTP_C_FLOWS_FULL,       /* connection state that could not be stored */
	HTTP_C_TRIGGERS,         /* responses with a status in mirror_on */
	HTTP_C_TRACED,           /* connections that started being traced (triggered or sampled) */
	HTTP_C_SAMPLED,          /* of which chosen by the sampler */
	HTTP_C_REFUSED,          /* triggers refused because the traced table was full */
	HTTP_C_MIRROR_PACKETS,   /* packets copied to the mirror */
	HTTP_C_MIRROR_BYTES,
	HTTP_C_MIRROR_ERRORS,    /* bpf_clone_redirect failures */
	HTTP_C_END_FIN,          /* tracing ended after both FINs and the last ACK */
	HTTP_C_END_RST,
	HTTP_C_END_TTL,          /* ended in the kernel by mirror_ttl (user space sweeps idle ones too) */
	HTTP_C_MAX,
};

/* Parsing state of one connection (LRU: an idle connection's state may be forgotten). */
struct http_flow {
	__u64 req_ts[HTTP_REQ_RING];     /* ktime of outstanding requests, oldest at req_head */
	__u8 req_method[HTTP_REQ_RING];
	__u8 req_head;
	__u8 req_count;
	__u8 state;                      /* enum http_resp_state */
	__u8 partial_len;                /* bytes of a status line kept from the previous segment */
	__u32 next_seq;                  /* EXPECT: where the next response starts; PARTIAL: the next byte */
	__u32 last_seq;                  /* UNKNOWN: a segment that started a response (retransmissions) */
	__u8 partial[HTTP_STATUS_BYTES];
	__u32 _pad;
};

enum http_resp_state {
	HTTP_S_UNKNOWN = 0,  /* next response's start not known: a status line is sought at segment starts */
	HTTP_S_EXPECT = 1,   /* next response starts at next_seq */
	HTTP_S_PARTIAL = 2,  /* status line started in the previous segment; partial[] holds its first bytes */
};

/* A connection being mirrored. */
struct http_traced {
	__u64 since_ns;          /* ktime of the trigger (or of the SYN for sampled connections) */
	__u64 last_trigger_ns;
	__u64 packets;           /* mirrored */
	__u64 bytes;
	__u16 status;            /* of the last trigger; 0: sampled */
	__u8 fins;               /* bit 0: FIN from the client seen, bit 1: from the server */
	__u8 _pad[5];
};

struct http_latency_sum {
	__u64 sum_us;
};

#endif

// SPDX-License-Identifier: GPL-2.0
/* HTTP/1.x monitor with triggered mirroring (tcx ingress and egress, IPv4 and IPv6).
 *
 * Per TCP packet on a watched port:
 * 1. If the connection is traced (a response status in mirror_on was seen on it, or the sampler chose
 *    it), copy the packet to the mirror interface with bpf_clone_redirect; the original goes on
 *    untouched. Tracing ends at mirror_ttl after the last trigger, at an RST, or with the last ACK after
 *    both FINs (so the mirror holds the whole close).
 * 2. Client to server data that starts with a method is a request: counted, and its time kept
 *    (a ring of HTTP_REQ_RING per connection) for the request -> response latency.
 * 3. Server to client data is searched for status lines where a response must start: at the byte after
 *    the previous response when its length is known (Content-Length, or a status without a body), else
 *    at the start of a segment (the only place the thesis looked). A status line cut between two
 *    segments is completed from the next one (the first bytes are kept per connection), and several
 *    responses in one segment (pipelining) are each recognised.
 *
 * Connection state is keyed by (server, client) so both directions find the same entry; addresses are
 * IPv4-mapped IPv6 for IPv4. IPv6 extension headers are not walked (the TCP header must follow the
 * fixed header), and IPv4 fragments are ignored. */
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <linux/pkt_cls.h>
#include <linux/tcp.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>
#include "common.bpf.h"
#include "packet.bpf.h"
#include "http.h"

/* Keeps clang from using an unmasked copy of a length the verifier must see bounded. */
#define HTTP_BARRIER(var) asm volatile("" : "+r"(var))

#define HTTP_TCP_FIN 0x01
#define HTTP_TCP_SYN 0x02
#define HTTP_TCP_RST 0x04
#define HTTP_TCP_ACK 0x10

/* Load-time knobs, set from the options before load (the verifier prunes what they switch off). */
const volatile __u16 http_ports[HTTP_MAX_PORTS] = {80, 8080, 8888};
const volatile __u32 http_nports = 3;
const volatile __u32 http_mirror_ifindex = 0;      /* 0: no mirroring */
const volatile __u32 http_sample = 0;              /* trace one in N new connections (0: none) */
const volatile __u64 http_ttl_ns = 30000000000ULL; /* tracing ends this long after the last trigger */
/* Bit s % 8 of byte s / 8 set: status s triggers mirroring. */
const volatile __u8 http_mirror_codes[HTTP_STATUS_END / 8] = {};

/* Parsing state per connection: LRU, so connections that end without FIN/RST cost nothing forever. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 65536);  /* option max_flows */
	__type(key, struct pnm_flow_key);
	__type(value, struct http_flow);
} http_flows SEC(".maps");

/* Traced connections: a plain hash of max_traced entries, so a full table refuses (and counts) new
 * triggers instead of silently evicting one being recorded. User space may make it an LRU with shared
 * or per-CPU lists (option traced_map) for the comparison the thesis asked for. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1024);  /* option max_traced */
	__type(key, struct pnm_flow_key);
	__type(value, struct http_traced);
} http_traced SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, HTTP_C_MAX);
	__type(key, __u32);
	__type(value, __u64);
} http_counters SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, HTTP_METHODS);
	__type(key, __u32);
	__type(value, __u64);
} http_requests SEC(".maps");

/* Index method * HTTP_STATUS_END + status: bounded labels for http_responses_total{status,method}. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, HTTP_METHODS * HTTP_STATUS_END);
	__type(key, __u32);
	__type(value, __u64);
} http_responses SEC(".maps");

/* Index class * HTTP_HIST_SLOTS + log2 slot of the latency in microseconds. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, HTTP_CLASSES * HTTP_HIST_SLOTS);
	__type(key, __u32);
	__type(value, __u64);
} http_latency SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, HTTP_CLASSES);
	__type(key, __u32);
	__type(value, struct http_latency_sum);
} http_latency_sum SEC(".maps");


/* What one packet is, after parsing. The key is oriented: saddr/sport the client, daddr/dport the
 * server (the side on a watched port), so both directions of a connection find the same entries. */
struct http_pkt {
	struct pnm_flow_key key;
	__u32 seq;
	__u32 payload_off;
	__u32 payload_len;
	__u8 flags;
	__u8 to_server;
};

static __always_inline void count(__u32 idx, __u64 n)
{
	__u64 *v = bpf_map_lookup_elem(&http_counters, &idx);

	if (v)
		*v += n;  /* per-CPU: TC programs do not nest on a CPU */
}

static __always_inline void count_array(void *map, __u32 idx)
{
	__u64 *v = bpf_map_lookup_elem(map, &idx);

	if (v)
		*v += 1;
}

static __always_inline int watched(__be16 port)
{
	__u16 p = bpf_ntohs(port);

#pragma unroll
	for (int i = 0; i < HTTP_MAX_PORTS; i++)
		if (i < http_nports && http_ports[i] == p)
			return 1;
	return 0;
}

/* IPv4/IPv6 TCP on a watched port (packet.bpf.h does the layers); 0 when it is one to look at. */
static __always_inline int parse(struct __sk_buff *skb, struct http_pkt *p)
{
	void *data = (void *)(long)skb->data;
	void *end = (void *)(long)skb->data_end;
	struct pnm_packet pkt;

	if (pnm_parse(data, end, &pkt) < 0 || pkt.key.proto != IPPROTO_TCP || !pkt.l4_offset)
		return -1;
	if (watched(pkt.key.dport)) {
		p->to_server = 1;
		p->key = pkt.key;
	} else if (watched(pkt.key.sport)) {
		p->to_server = 0;
		__builtin_memcpy(p->key.saddr, pkt.key.daddr, 16);
		__builtin_memcpy(p->key.daddr, pkt.key.saddr, 16);
		p->key.sport = pkt.key.dport;
		p->key.dport = pkt.key.sport;
		p->key.proto = pkt.key.proto;
		p->key.family = pkt.key.family;
	} else {
		return -1;
	}
	struct tcphdr *tcp = data + (pkt.l4_offset & 0xff);
	if ((void *)(tcp + 1) > end)
		return -1;
	p->seq = bpf_ntohl(tcp->seq);
	p->flags = pkt.tcp_flags;
	p->payload_off = pkt.payload_offset;
	p->payload_len = pnm_payload_len(data, end, &pkt);
	return 0;
}

/* Little-endian word of the first bytes of `s` (a string literal), folded by the compiler. */
#define W4(s) ((__u64)(s)[0] | (__u64)(s)[1] << 8 | (__u64)(s)[2] << 16 | (__u64)(s)[3] << 24)
#define W8(s) (W4(s) | (__u64)(s)[4] << 32 | (__u64)(s)[5] << 40 | (__u64)(s)[6] << 48 | (__u64)(s)[7] << 56)
#define MASK(n) ((n) >= 8 ? ~0ULL : ((1ULL << ((n) * 8)) - 1))
#define IS(w, lit, n) (((w) & MASK(n)) == (W8(lit "\0\0\0\0\0\0\0\0") & MASK(n)))

/* Method index of a request line's first 8 bytes (little-endian word), 0 when it is none. The order is
 * pynetmon.monitors.http.METHODS. */
static __always_inline __u32 method_of(__u64 w)
{
	if (IS(w, "GET ", 4)) return 1;
	if (IS(w, "HEAD ", 5)) return 2;
	if (IS(w, "POST ", 5)) return 3;
	if (IS(w, "PUT ", 4)) return 4;
	if (IS(w, "DELETE ", 7)) return 5;
	if (IS(w, "CONNECT ", 8)) return 6;
	if (IS(w, "OPTIONS ", 8)) return 7;
	if (IS(w, "TRACE ", 6)) return 8;
	if (IS(w, "PATCH ", 6)) return 9;
	return 0;
}

/* Whether the `n` first bytes of `b` can begin "HTTP/1.x " (x being 0 or 1). */
static __always_inline int status_prefix(const __u8 *b, __u32 n)
{
	const char lit[] = "HTTP/1.";

#pragma unroll
	for (int i = 0; i < 7; i++)
		if (i < n && b[i] != lit[i])
			return 0;
	if (n > 7 && b[7] != '0' && b[7] != '1')
		return 0;
	if (n > 8 && b[8] != ' ')
		return 0;
	return 1;
}

/* The status of a complete "HTTP/1.x DDD" (12 bytes), 0 when it is not one. */
static __always_inline __u32 status_of(const __u8 *b)
{
	if (!status_prefix(b, 9))
		return 0;
	__u8 d0 = b[9] - '0', d1 = b[10] - '0', d2 = b[11] - '0';
	if (d0 > 9 || d1 > 9 || d2 > 9)
		return 0;
	__u32 s = d0 * 100 + d1 * 10 + d2;
	return s >= HTTP_STATUS_MIN && s < HTTP_STATUS_END ? s : 0;
}

/* Search `n` header bytes for Content-Length and the blank line, with bpf_loop. The state lives in
 * the per-CPU scratch map, not on the stack: the verifier then sees its fields as unknown numbers and
 * checks the callback once, instead of once per combination of values. */
struct http_scan {
	__u32 n;
	__u32 match;       /* bytes of "\r\ncontent-length:" matched */
	__u32 crlf;        /* bytes of "\r\n\r\n" matched */
	__u32 header_end;  /* offset after the blank line, 0 while not found */
	__u32 in_value;    /* inside the Content-Length value */
	__u32 digits;
	__u64 length;
	__u8 buf[HTTP_HEADER_WINDOW];
};

/* "\r\ncontent-length:" (17 bytes) as three little-endian words: a string constant would land in a
 * merged-string section that libbpf 1.1 cannot load, and words need no memory at all. */
#define CL_LEN 17
static __always_inline __u8 cl_char(__u32 m)
{
	__u64 w = m < 8 ? W8("\r\nconten") : m < 16 ? W8("t-length") : (__u64)':';

	return (w >> ((m & 7) * 8)) & 0xff;
}

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct http_scan);
} http_scratch SEC(".maps");

struct http_scan_ctx {
	struct http_scan *s;  /* bpf_loop's context must be on the stack; the state it points to is not */
};

static long scan_byte(__u32 i, struct http_scan_ctx *ctx)
{
	struct http_scan *s = ctx->s;

	if (i >= s->n)
		return 1;
	__u8 c = s->buf[i & (HTTP_HEADER_WINDOW - 1)];

	if (s->in_value) {
		if (c >= '0' && c <= '9' && s->digits < 15) {
			s->length = s->length * 10 + (c - '0');
			s->digits++;
		} else if (c != ' ' && c != '\t') {
			s->in_value = 0;
		}
	}
	/* The blank line ending the header. */
	if (c == '\r')
		s->crlf = (s->crlf == 2) ? 3 : 1;
	else if (c == '\n' && (s->crlf == 1 || s->crlf == 3))
		s->crlf++;
	else
		s->crlf = 0;
	if (s->crlf == 4) {
		s->header_end = i + 1;
		return 1;
	}
	/* Header names are case-insensitive: compare lower-cased letters. */
	__u8 lc = (c >= 'A' && c <= 'Z') ? c | 0x20 : c;
	__u32 m = s->match & 31;
	if (m < CL_LEN && lc == cl_char(m)) {
		s->match++;
		if (s->match == CL_LEN) {
			s->in_value = 1;
			s->digits = 0;
			s->length = 0;
			s->match = 0;
		}
	} else {
		s->match = c == '\r' ? 1 : 0;
	}
	return 0;
}

/* Eight bytes at a time: a word without a CR, while no match is under way, cannot change the state
 * (matches start at a CR, the blank line is CRs and LFs), so it is skipped with one test; only words
 * with a CR go byte by byte. Headers have one CR in ~25 bytes: most words are skipped. */
static long scan_word(__u32 w_i, struct http_scan_ctx *ctx)
{
	struct http_scan *s = ctx->s;
	__u32 base = w_i * 8;

	if (base >= s->n)
		return 1;
	if (!s->match && !s->crlf && !s->in_value) {
		__u64 x = *(__u64 *)(s->buf + (base & (HTTP_HEADER_WINDOW - 8))) ^ 0x0d0d0d0d0d0d0d0dULL;

		/* a zero byte in x is a CR in the word (the classic has-zero-byte test) */
		if (!((x - 0x0101010101010101ULL) & ~x & 0x8080808080808080ULL))
			return 0;
	}
#pragma unroll
	for (int k = 0; k < 8; k++)
		if (scan_byte(base + k, ctx))
			return 1;
	return 0;
}

/* Length of the whole message (header + body) starting at packet offset `off` with `avail` bytes of it
 * in this packet, or 0 when its end cannot be known from this segment. A global function: the verifier
 * checks it once, not at every call site with every caller state. `no_body`: the message has none whatever its header says;
 * `implicit_zero`: without Content-Length its body is empty (a request), else unknown (a response,
 * chunked or ended by the close). */
__attribute__((noinline)) int http_message_length(struct __sk_buff *skb, __u32 off, __u32 avail, int no_body,
						 int implicit_zero)
{
	__u32 zero = 0;
	struct http_scan *s = bpf_map_lookup_elem(&http_scratch, &zero);

	if (!s)
		return 0;
	__u64 n = avail;  /* 64-bit: the register checked is the one passed */
	if (n > HTTP_HEADER_WINDOW)
		n = HTTP_HEADER_WINDOW;
	HTTP_BARRIER(n);
	if (!skb || n < 1 || n > HTTP_HEADER_WINDOW || bpf_skb_load_bytes(skb, off, s->buf, n) < 0)
		return 0;
	s->n = n;
	s->match = s->crlf = s->header_end = s->in_value = s->digits = 0;
	s->length = 0;
	struct http_scan_ctx ctx = { .s = s };

	bpf_loop(HTTP_HEADER_WINDOW / 8, scan_word, &ctx, 0);
	if (!s->header_end)
		return 0;
	if (no_body)
		return s->header_end;
	if (!s->digits)
		return implicit_zero ? s->header_end : 0;
	if (s->length > 0x7fffffff)
		return 0;
	return s->header_end + (__u32)s->length;
}

/* The connection's parsing state, created when missing (NULL when the table cannot take it). */
static __always_inline struct http_flow *flow_of(struct http_pkt *p)
{
	struct http_flow *f = bpf_map_lookup_elem(&http_flows, &p->key);

	if (f)
		return f;
	struct http_flow fresh = {};
	if (bpf_map_update_elem(&http_flows, &p->key, &fresh, BPF_NOEXIST) < 0 &&
	    !bpf_map_lookup_elem(&http_flows, &p->key)) {
		count(HTTP_C_FLOWS_FULL, 1);
		return 0;
	}
	return bpf_map_lookup_elem(&http_flows, &p->key);
}

/* Client -> server data: the request lines in it (several when requests are pipelined in one segment,
 * each found after the previous one's header and Content-Length body). */
static __always_inline void on_request(struct __sk_buff *skb, struct http_pkt *p, __u64 now)
{
	struct http_flow *f = 0;
	__u32 rel = 0;

#pragma clang loop unroll(disable)
	for (int r = 0; r < HTTP_MAX_RESPONSES; r++) {
		__u64 w = 0;
		__u32 left = p->payload_len - rel;

		if (rel >= p->payload_len || left < 4)
			return;
		/* Constant sizes: "GET /" needs 4 bytes, the longest method 8. */
		if (bpf_skb_load_bytes(skb, p->payload_off + (rel & 0xffff), &w, left >= 8 ? 8 : 4) < 0)
			return;
		__u32 m = method_of(w);
		if (!m)
			return;  /* body or continuation of a request */
		count_array(&http_requests, m);
		if (!f)
			f = flow_of(p);
		if (!f)
			return;
		if (f->req_count >= HTTP_REQ_RING) {
			count(HTTP_C_REQUESTS_DROPPED, 1);
		} else {
			__u32 slot = (f->req_head + f->req_count) & (HTTP_REQ_RING - 1);
			f->req_ts[slot] = now;
			f->req_method[slot] = m;
			f->req_count++;
		}
		__u32 len = http_message_length(skb, p->payload_off + rel, p->payload_len - rel, 0, 1);
		if (!len)
			return;
		rel += len;
	}
}

/* A response with `status` was recognised: count it, measure its latency, say whether it triggers. */
static __always_inline __u32 on_status(struct http_flow *f, __u32 status, __u64 now, __u32 *method)
{
	__u32 m = 0, cls = status / 100;

	if (f->req_count) {
		__u32 head = f->req_head & (HTTP_REQ_RING - 1);
		__u64 lat_us = (now - f->req_ts[head]) / 1000;

		m = f->req_method[head];
		if (m >= HTTP_METHODS)
			m = 0;
		/* A 1xx is interim: the final response to the same request follows. */
		if (status >= 200) {
			f->req_head = (f->req_head + 1) & (HTTP_REQ_RING - 1);
			f->req_count--;
		}
		count_array(&http_latency, cls * HTTP_HIST_SLOTS + pnm_hist_slot(lat_us, 0, HTTP_HIST_SLOTS));
		struct http_latency_sum *sum = bpf_map_lookup_elem(&http_latency_sum, &cls);
		if (sum)
			sum->sum_us += lat_us;
	} else {
		count(HTTP_C_NO_REQUEST, 1);
	}
	count_array(&http_responses, m * HTTP_STATUS_END + status);
	*method = m;
	__u32 byte = status >> 3;
	if (byte < sizeof(http_mirror_codes) && (http_mirror_codes[byte] >> (status & 7)) & 1) {
		count(HTTP_C_TRIGGERS, 1);
		return status;
	}
	return 0;
}

/* Recognise the responses in one server -> client segment; returns the status of the last trigger. */
static __always_inline __u32 on_response(struct __sk_buff *skb, struct http_pkt *p, __u64 now)
{
	__u8 line[16] = {};
	struct http_flow *f = bpf_map_lookup_elem(&http_flows, &p->key);
	__u32 rel = 0, trigger = 0;

	if (!f) {
		/* Only data that looks like a response gets state: other traffic on the port costs one load. */
		if (p->payload_len < 5 || bpf_skb_load_bytes(skb, p->payload_off, line, 5) < 0 ||
		    !status_prefix(line, 5))
			return 0;
		f = flow_of(p);
		if (!f)
			return 0;
	}

	if (f->state == HTTP_S_EXPECT) {
		__s32 d = (__s32)(f->next_seq - p->seq);

		if (d < 0) {  /* the boundary went by unseen (a hook missed a segment): search segment starts */
			count(HTTP_C_UNPARSED, 1);
			f->state = HTTP_S_UNKNOWN;
		} else if ((__u32)d >= p->payload_len) {
			return 0;  /* body of the current response, or a retransmission */
		} else {
			rel = d;
		}
	} else if (f->state == HTTP_S_PARTIAL) {
		if (p->seq != f->next_seq) {
			count(HTTP_C_UNPARSED, 1);
			f->state = HTTP_S_UNKNOWN;
		}
	}
	if (f->state == HTTP_S_UNKNOWN) {
		if (p->seq == f->last_seq && f->last_seq)
			return 0;  /* retransmission of a segment already parsed */
	}

#pragma clang loop unroll(disable)
	for (int r = 0; r < HTTP_MAX_RESPONSES; r++) {
		__u32 have = p->payload_len - rel, status, start_seq, plen = 0, plen_used = 0, method = 0;

		if (rel >= p->payload_len)
			break;
		__builtin_memset(line, 0, sizeof(line));
		if (f->state == HTTP_S_PARTIAL && r == 0) {
			/* The first bytes came with the previous segment: complete the line from this one. */
			__u8 more[16] = {};
			plen = f->partial_len;
			if (plen >= HTTP_STATUS_BYTES)
				plen = HTTP_STATUS_BYTES - 1;
			__u32 need = HTTP_STATUS_BYTES - plen;
			if (have < need) {  /* still short: keep what there is and wait again */
				f->state = HTTP_S_UNKNOWN;
				count(HTTP_C_UNPARSED, 1);
				break;
			}
			int bad = 0;
#pragma clang loop unroll(disable)
			for (int i = 0; i < HTTP_STATUS_BYTES; i++)
				if (i < need && bpf_skb_load_bytes(skb, p->payload_off + i, &more[i & 0xf], 1) < 0)
					bad = 1;
			if (bad)
				break;
#pragma unroll
			for (int i = 0; i < HTTP_STATUS_BYTES; i++)
				line[i] = i < plen ? f->partial[i] : more[(i - plen) & 0xf];
			start_seq = p->seq - plen;
			status = status_of(line);
			plen_used = plen;
			if (status)
				count(HTTP_C_SPLIT, 1);
		} else {
			if (have < HTTP_STATUS_BYTES) {
				/* A status line may be cut here: keep its first bytes if they can begin one. */
				__u32 n = have;
				/* Rare (a cut line): byte by byte keeps every load a constant size. */
#pragma clang loop unroll(disable)
				for (int i = 0; i < HTTP_STATUS_BYTES - 1; i++)
					if (i < n && bpf_skb_load_bytes(skb, p->payload_off + rel + i, &line[i & 0xf], 1) < 0)
						n = 0;
				if (!n)
					break;
				if (!status_prefix(line, n)) {
					if (f->state != HTTP_S_UNKNOWN)
						count(HTTP_C_UNPARSED, 1);
					f->state = HTTP_S_UNKNOWN;
					break;
				}
				__builtin_memcpy(f->partial, line, HTTP_STATUS_BYTES);
				f->partial_len = n;
				f->next_seq = p->seq + p->payload_len;
				f->state = HTTP_S_PARTIAL;
				break;
			}
			if (bpf_skb_load_bytes(skb, p->payload_off + (rel & 0xffff), line, HTTP_STATUS_BYTES) < 0)
				break;
			start_seq = p->seq + rel;
			status = status_of(line);
		}
		if (!status) {
			/* Where a response had to start there is none; at an unknown place that is just body. */
			if (f->state != HTTP_S_UNKNOWN)
				count(HTTP_C_UNPARSED, 1);
			f->state = HTTP_S_UNKNOWN;
			break;
		}
		__u32 t = on_status(f, status, now, &method);
		if (t)
			trigger = t;
		f->last_seq = p->seq;
		/* Where does the next response start? Only the part of this response in this segment can
		 * tell (its header must be in it); a completed split line started `plen` bytes earlier. */
		/* RFC 9112 6.3: 1xx, 204, 304 and answers to HEAD carry no body whatever their header says. */
		int no_body = status < 200 || status == 204 || status == 304 || method == 2 /* HEAD */;
		__u32 len = http_message_length(skb, p->payload_off + rel, p->payload_len - rel, no_body, 0);
		if (!len) {
			count(HTTP_C_UNKNOWN_LENGTH, 1);
			f->state = HTTP_S_UNKNOWN;
			break;
		}
		if (r > 0)
			count(HTTP_C_PIPELINED, 1);
		f->state = HTTP_S_EXPECT;
		f->next_seq = start_seq + plen_used + len;
		rel = f->next_seq - p->seq;
	}
	return trigger;
}

static __always_inline void mirror(struct __sk_buff *skb, struct http_pkt *p, struct http_traced *t)
{
	__sync_fetch_and_add(&t->packets, 1);
	__sync_fetch_and_add(&t->bytes, skb->len);
	/* Into the mirror interface's receive path (BPF_F_INGRESS), where packet sockets and TC ingress see
	 * the copy and IP then drops it (another host's MAC): measured cheaper than its transmit path, which
	 * on a veth also runs the peer's whole receive path (h2load at 100% errors, 1 CPU). */
	if (bpf_clone_redirect(skb, http_mirror_ifindex, BPF_F_INGRESS) < 0) {
		count(HTTP_C_MIRROR_ERRORS, 1);
	} else {
		count(HTTP_C_MIRROR_PACKETS, 1);
		count(HTTP_C_MIRROR_BYTES, skb->len);
	}
	if (p->flags & HTTP_TCP_RST) {
		bpf_map_delete_elem(&http_traced, &p->key);
		count(HTTP_C_END_RST, 1);
	} else if (t->fins == 3 && !(p->flags & HTTP_TCP_FIN)) {
		/* The ACK of the second FIN: the close is complete in the mirror. */
		bpf_map_delete_elem(&http_traced, &p->key);
		count(HTTP_C_END_FIN, 1);
	} else if (p->flags & HTTP_TCP_FIN) {
		t->fins |= p->to_server ? 1 : 2;
	}
}

static __always_inline struct http_traced *start_tracing(struct http_pkt *p, __u32 status, __u64 now)
{
	struct http_traced fresh = { .since_ns = now, .last_trigger_ns = now, .status = status };

	if (bpf_map_update_elem(&http_traced, &p->key, &fresh, BPF_NOEXIST) < 0) {
		struct http_traced *t = bpf_map_lookup_elem(&http_traced, &p->key);
		if (!t)
			count(HTTP_C_REFUSED, 1);  /* table full (E2BIG) */
		return t;
	}
	count(HTTP_C_TRACED, 1);
	if (!status)
		count(HTTP_C_SAMPLED, 1);
	return bpf_map_lookup_elem(&http_traced, &p->key);
}

static __always_inline int handle(struct __sk_buff *skb)
{
	struct http_pkt p = {};
	struct http_traced *t = 0;

	if (parse(skb, &p) < 0)
		return TC_ACT_UNSPEC;
	count(HTTP_C_PACKETS, 1);
	__u64 now = bpf_ktime_get_ns();

	if (http_mirror_ifindex) {
		t = bpf_map_lookup_elem(&http_traced, &p.key);
		if (t && now - t->last_trigger_ns > http_ttl_ns) {
			bpf_map_delete_elem(&http_traced, &p.key);
			count(HTTP_C_END_TTL, 1);
			t = 0;
		}
		/* The sampler decides at the client's SYN, so a sampled connection is recorded whole. */
		if (!t && http_sample && p.to_server && (p.flags & (HTTP_TCP_SYN | HTTP_TCP_ACK)) == HTTP_TCP_SYN &&
		    bpf_get_prandom_u32() % http_sample == 0)
			t = start_tracing(&p, 0, now);
	}
	if (p.payload_len) {
		if (p.to_server) {
			on_request(skb, &p, now);
		} else {
			__u32 status = on_response(skb, &p, now);
			if (status && http_mirror_ifindex) {
				if (t) {
					t->last_trigger_ns = now;
					t->status = status;
				} else {
					t = start_tracing(&p, status, now);
				}
			}
		}
	}
	if (t)
		mirror(skb, &p, t);
	return TC_ACT_UNSPEC;  /* tcx: let the next program decide */
}

SEC("tc")
int http_ingress(struct __sk_buff *skb)
{
	return handle(skb);
}

SEC("tc")
int http_egress(struct __sk_buff *skb)
{
	return handle(skb);
}

char LICENSE[] SEC("license") = "GPL";

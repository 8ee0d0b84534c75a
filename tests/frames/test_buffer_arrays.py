"""RingBuffer.to_numpy() and PerfBuffer.to_numpy(): fixed-size records a real program emits, as arrays."""
from __future__ import annotations

import struct

import numpy as np
import pytest

import pynetmon
from pynetmon.frames.arrays import records_to_numpy
from pynetmon.ringbuf import PerfBuffer, RingBuffer
from pynetmon.toolchain import compile_c

# Each run of a program emits one record: the packet's first 16 bytes and its length.
EMITTER = r"""
#include <linux/bpf.h>
#include <linux/pkt_cls.h>
#include <bpf/bpf_helpers.h>

struct record { __u8 head[16]; __u32 len; __u32 flags : 4; __u32 level : 12; };

struct { __uint(type, BPF_MAP_TYPE_RINGBUF); __uint(max_entries, 1 << 18); } ring SEC(".maps");
struct { __uint(type, BPF_MAP_TYPE_PERF_EVENT_ARRAY); __uint(key_size, 4); __uint(value_size, 4); } perf SEC(".maps");
struct { __uint(type, BPF_MAP_TYPE_ARRAY); __uint(max_entries, 1); __type(key, __u32);
         __type(value, struct record); } shape SEC(".maps");  /* gives the record's BTF to user space */

static __always_inline int fill(struct __sk_buff *skb, struct record *r)
{
    __builtin_memset(r, 0, sizeof(*r));
    if (bpf_skb_load_bytes(skb, 0, r->head, sizeof(r->head)) < 0)
        return -1;
    r->len = skb->len;
    r->flags = skb->len & 0xf;
    r->level = skb->len;
    return 0;
}

SEC("tc") int to_ring(struct __sk_buff *skb)
{
    struct record r;
    if (!fill(skb, &r))
        bpf_ringbuf_output(&ring, &r, sizeof(r), 0);
    return TC_ACT_OK;
}

SEC("tc") int to_perf(struct __sk_buff *skb)
{
    struct record r;
    if (!fill(skb, &r))
        bpf_perf_event_output(skb, &perf, BPF_F_CURRENT_CPU, &r, sizeof(r));
    return TC_ACT_OK;
}

char LICENSE[] SEC("license") = "GPL";
"""
RECORD = np.dtype([("head", "S16"), ("len", "<u4"), ("bits", "<u4")])


@pytest.fixture
def emitter(bpf):
    with pynetmon.BPFObject(compile_c(EMITTER, filename="records.bpf.c"), name="records") as obj:
        yield obj.load()


def packets(n: int) -> list[bytes]:
    return [struct.pack("!IIII", i, 2 * i, 3 * i, 4 * i) + bytes(i % 50) for i in range(n)]


def send(obj, program: str, data: list[bytes]) -> None:
    for packet in data:
        obj.programs[program].test_run(packet)


def check(records, sent: list[bytes]) -> None:
    assert len(records) == len(sent)
    assert [bytes(h) for h in records["head"]] == [p[:16].rstrip(b"\0") for p in sent]
    assert records["len"].tolist() == [len(p) for p in sent]


def test_ring_buffer_records_as_array_in_order(emitter):
    sent = packets(200)
    with RingBuffer(emitter.maps["ring"]) as rb:
        send(emitter, "to_ring", sent)
        records = rb.to_numpy(RECORD, max_records=500, timeout_ms=200)  # fewer than asked: waits, then returns
        check(records, sent)
        assert len(rb.to_numpy(RECORD, max_records=10, timeout_ms=0)) == 0


def test_max_records_keeps_the_rest_for_the_next_call(emitter):
    sent = packets(50)
    with RingBuffer(emitter.maps["ring"]) as rb:
        send(emitter, "to_ring", sent)
        first = rb.to_numpy(RECORD, max_records=20, timeout_ms=1000)
        rest = rb.to_numpy(RECORD, max_records=100, timeout_ms=100)
        check(np.concatenate([first, rest]), sent)
        assert len(first) == 20


def test_btf_codec_as_record_type_decodes_bitfields(emitter):
    codec = emitter.maps["shape"].value_codec
    sent = packets(30)
    with RingBuffer(emitter.maps["ring"]) as rb:
        send(emitter, "to_ring", sent)
        records = rb.to_numpy(codec, max_records=30, timeout_ms=1000)
    assert records["flags"].tolist() == [len(p) & 0xF for p in sent]
    assert records["level"].tolist() == [len(p) & 0xFFF for p in sent]


def test_perf_buffer_records_as_array(emitter):
    sent = packets(100)
    with PerfBuffer(emitter.maps["perf"], page_cnt=8) as pb:
        send(emitter, "to_perf", sent)  # test_run runs on this CPU: one per-CPU buffer, in order
        records = pb.to_numpy(RECORD, max_records=100, timeout_ms=1000)
    check(records, sent)


def test_short_record_is_an_error_naming_it():
    # framed: u32 length, record, padding to 8 bytes
    batch = struct.pack("=I", 8) + bytes(8) + bytes(4) + struct.pack("=I", 2) + bytes(2) + bytes(2)
    with pytest.raises(ValueError, match="record 1 of the batch is 2 bytes, shorter than the 8"):
        records_to_numpy(batch, 2, np.dtype("<u8"))
    mixed = struct.pack("=I", 8) + bytes(range(8)) + bytes(4) + struct.pack("=I", 12) + bytes(range(12))
    assert records_to_numpy(mixed, 2, np.dtype("<u8")).tolist() == [
        int.from_bytes(bytes(range(8)), "little")] * 2

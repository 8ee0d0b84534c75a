"""Ring and perf buffer readers against real programs: what a program emits is what poll() returns.

The emitting program copies the test packet (BPF_PROG_TEST_RUN) into a sample of the packet's own length,
so every sample is known in advance, lengths are odd as often as not, and order can be checked.
"""
from __future__ import annotations

import errno
import fcntl
import os
import signal
import struct
import threading

import pytest

import pynetmon
from pynetmon.errors import NotSupportedError
from pynetmon.ringbuf import BatchRing, PerfBuffer, RingBuffer, split_records
from pynetmon.toolchain import compile_c

F_SETPIPE_SZ = getattr(fcntl, "F_SETPIPE_SZ", 1031)

EMITTER = r"""
#include <linux/bpf.h>
#include <linux/pkt_cls.h>
#include <bpf/bpf_helpers.h>

#define MAX_SAMPLE 2048

struct { __uint(type, BPF_MAP_TYPE_RINGBUF); __uint(max_entries, 1 << 20); } ring SEC(".maps");
struct { __uint(type, BPF_MAP_TYPE_RINGBUF); __uint(max_entries, 1 << 16); } ring2 SEC(".maps");
struct { __uint(type, BPF_MAP_TYPE_PERF_EVENT_ARRAY); __uint(key_size, 4); __uint(value_size, 4); } perf SEC(".maps");
struct { __uint(type, BPF_MAP_TYPE_PERCPU_ARRAY); __uint(max_entries, 1); __type(key, __u32);
         __type(value, __u8[MAX_SAMPLE]); } scratch SEC(".maps");
struct { __uint(type, BPF_MAP_TYPE_ARRAY); __uint(max_entries, 1); __type(key, __u32);
         __type(value, __u64); } failures SEC(".maps");

static __always_inline __u8 *copy_packet(struct __sk_buff *skb, __u32 *len)
{
    __u32 zero = 0;
    __u8 *buf = bpf_map_lookup_elem(&scratch, &zero);
    __u32 n = skb->len;
    if (!buf || n < 1 || n > MAX_SAMPLE)
        return 0;
    if (bpf_skb_load_bytes(skb, 0, buf, n) < 0)
        return 0;
    *len = n;
    return buf;
}

static __always_inline void count_failure(long err)
{
    __u32 zero = 0;
    __u64 *f = bpf_map_lookup_elem(&failures, &zero);
    if (err && f)
        __sync_fetch_and_add(f, 1);
}

SEC("tc") int to_ring(struct __sk_buff *skb)
{
    __u32 len;
    __u8 *buf = copy_packet(skb, &len);
    if (buf)
        count_failure(bpf_ringbuf_output(&ring, buf, len, 0));
    return TC_ACT_OK;
}

SEC("tc") int to_ring2(struct __sk_buff *skb)
{
    __u32 len;
    __u8 *buf = copy_packet(skb, &len);
    if (buf)
        count_failure(bpf_ringbuf_output(&ring2, buf, len, 0));
    return TC_ACT_OK;
}

SEC("tc") int to_ring_quietly(struct __sk_buff *skb)
{
    __u32 len;
    __u8 *buf = copy_packet(skb, &len);
    if (buf)
        count_failure(bpf_ringbuf_output(&ring, buf, len, BPF_RB_NO_WAKEUP));
    return TC_ACT_OK;
}

SEC("tc") int to_perf(struct __sk_buff *skb)
{
    __u32 len;
    __u8 *buf = copy_packet(skb, &len);
    if (buf)
        count_failure(bpf_perf_event_output(skb, &perf, BPF_F_CURRENT_CPU, buf, len));
    return TC_ACT_OK;
}

char LICENSE[] SEC("license") = "GPL";
"""


@pytest.fixture(scope="module")
def _emitter_loaded():
    try:
        obj = pynetmon.BPFObject(compile_c(EMITTER, filename="emitter.bpf.c"), name="emitter").load()
    except Exception as exc:  # noqa: BLE001 - handed on, so that the bpf fixture decides skip or fail
        yield exc
        return
    with obj:
        yield obj


@pytest.fixture
def emitter(bpf, _emitter_loaded):
    if isinstance(_emitter_loaded, Exception):
        raise _emitter_loaded
    _emitter_loaded.maps["failures"][0] = 0
    for name in ("ring", "ring2"):  # leave nothing from an earlier test behind
        with RingBuffer(_emitter_loaded.maps[name], batch_limit=0) as rb:
            rb.consume()
    return _emitter_loaded


def packets(count: int, seed: int = 0) -> list[bytes]:
    """Distinct test packets of varied lengths (14..1500: BPF_PROG_TEST_RUN needs an Ethernet header)."""
    out = []
    for i in range(count):
        length = 14 + (i * 37 + seed) % 1487
        head = struct.pack("!II", seed, i)
        out.append((head + os.urandom(length))[:length] if length >= 8 else os.urandom(length))
    return out


def emit(obj, program: str, data: list[bytes]) -> None:
    prog = obj.programs[program]
    for packet in data:
        prog.test_run(packet)


def test_ring_buffer_returns_every_sample_in_order_byte_for_byte(emitter):
    sent = packets(300)
    with RingBuffer(emitter.maps["ring"]) as rb:
        assert rb.poll(0) == []
        emit(emitter, "to_ring", sent)
        got = []
        while len(got) < len(sent):
            batch = rb.poll(1000)
            assert batch, "samples were emitted but poll returned none"
            got.extend(batch)
        assert got == sent
        assert rb.records == len(sent)
        assert rb.lost == 0 and rb.oom == 0
    assert emitter.maps["failures"][0] == 0


def test_samples_committed_without_wakeup_come_when_the_wait_ends(emitter):
    sent = packets(20, seed=8)
    with RingBuffer(emitter.maps["ring"]) as rb:
        emit(emitter, "to_ring_quietly", sent)
        assert rb.poll(50) == sent


def test_callback_sees_each_sample_once(emitter):
    seen = []
    sent = packets(50, seed=1)
    with RingBuffer(emitter.maps["ring"], callback=seen.append) as rb:
        emit(emitter, "to_ring", sent)
        returned = rb.consume()
    assert seen == returned == sent


def test_concatenated_batch_is_the_samples_back_to_back(emitter):
    sent = packets(40, seed=2)
    with RingBuffer(emitter.maps["ring"], concatenate=True) as rb:
        emit(emitter, "to_ring", sent)
        batch, count = rb.consume_batch()
        assert (batch, count) == (b"".join(sent), len(sent))
        with pytest.raises(NotSupportedError, match="poll_batch"):
            rb.poll(0)


def test_batch_limit_bounds_one_poll_and_loses_nothing(emitter):
    sent = packets(120, seed=3)
    limit = 4096
    with RingBuffer(emitter.maps["ring"], batch_limit=limit) as rb:
        emit(emitter, "to_ring", sent)
        got, polls = [], 0
        while len(got) < len(sent):
            batch, count = rb.poll_batch(1000)
            polls += 1
            # One sample may cross the limit: that is the one that stopped the poll.
            assert len(batch) < limit + 4 + 1500 + 8
            got.extend(split_records(batch, count))
        assert got == sent
        assert polls > 1


def test_two_rings_read_through_one_reader(emitter):
    a, b = packets(20, seed=4), packets(20, seed=5)
    with RingBuffer(emitter.maps["ring"]) as rb:
        rb.add(emitter.maps["ring2"])
        emit(emitter, "to_ring", a)
        emit(emitter, "to_ring2", b)
        got = []
        while len(got) < 40:
            got.extend(rb.poll(1000))
    assert sorted(got) == sorted(a + b)


def test_iterator_yields_samples_and_ends_when_closed(emitter):
    sent = packets(30, seed=6)
    rb = RingBuffer(emitter.maps["ring"])
    got = []
    done = threading.Event()

    def read():
        for record in rb:
            got.append(record)
            if len(got) == len(sent):
                done.set()
        done.set()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        emit(emitter, "to_ring", sent)
        assert done.wait(10)
    finally:
        rb.close()
    reader.join(10)
    assert not reader.is_alive()
    assert got == sent
    with pytest.raises(ValueError, match="closed"):
        rb.poll(0)


def test_perf_buffer_returns_samples_with_kernel_padding(emitter):
    sent = packets(100, seed=7)
    with PerfBuffer(emitter.maps["perf"], page_cnt=64) as pb:
        emit(emitter, "to_perf", sent)
        got = []
        while len(got) < len(sent):
            batch = pb.poll(1000)
            assert batch
            got.extend(batch)
        assert pb.lost == 0
    for sample, packet in zip(got, sent):
        # perf pads sample + its u32 size to a multiple of 8
        assert len(sample) == ((len(packet) + 4 + 7) & ~7) - 4
        assert sample[:len(packet)] == packet


def test_perf_buffer_reports_lost_samples(emitter):
    sent = [bytes(1400)] * 200  # 280 KB into one 4 KiB buffer: most are lost
    with PerfBuffer(emitter.maps["perf"], page_cnt=1) as pb:
        emit(emitter, "to_perf", sent)
        got = pb.poll(1000)
        # The kernel reports a loss with the first sample that fits again.
        emit(emitter, "to_perf", sent[:1])
        got += pb.poll(1000)
        assert pb.lost > 0
        assert len(got) + pb.lost == len(sent) + 1


def test_reader_refuses_the_wrong_map_type(emitter):
    with pytest.raises(NotSupportedError, match="'perf' is a perf_event_array map"):
        RingBuffer(emitter.maps["perf"])
    with pytest.raises(NotSupportedError, match="'ring' is a ringbuf map"):
        PerfBuffer(emitter.maps["ring"])
    with pytest.raises(ValueError, match="power of two"):
        PerfBuffer(emitter.maps["perf"], page_cnt=3)


def test_split_records_pure():
    framed = b"".join(struct.pack("=I", len(r)) + r + bytes(-(4 + len(r)) % 8) for r in (b"a", b"", b"x" * 12))
    assert split_records(framed) == [b"a", b"", b"x" * 12]
    with pytest.raises(ValueError, match="expected 2"):
        split_records(framed, 2)


@pytest.mark.parametrize("kind", ["ring", "perf"])
def test_close_ends_a_poll_that_waits_forever(emitter, kind):
    reader = RingBuffer(emitter.maps["ring2"]) if kind == "ring" else PerfBuffer(emitter.maps["perf"], 1)
    outcome = []
    waiting = threading.Event()

    def wait_forever():
        waiting.set()
        try:
            outcome.append(reader.poll())  # no sample will come
        except ValueError as exc:
            outcome.append(exc)

    thread = threading.Thread(target=wait_forever, daemon=True)
    thread.start()
    assert waiting.wait(10)
    for _ in range(1000):  # until the poll is under way (it holds the reader's lock while it waits)
        if reader._lock.locked():
            break
        threading.Event().wait(0.01)
    closer = threading.Thread(target=reader.close, daemon=True)  # it used to wait for a sample forever
    closer.start()
    closer.join(10)
    assert not closer.is_alive(), "close() waited for a poll that never ends"
    thread.join(10)
    assert not thread.is_alive()
    assert len(outcome) == 1 and isinstance(outcome[0], ValueError) and "closed" in str(outcome[0])


# ---- BatchRing: our own consumer (one drain per batch, the ring space given back once) ---------------

def test_batch_ring_takes_every_sample_in_order_across_the_ring_end(emitter):
    """ring2 holds 64 KiB: 2,000 samples of up to 1.5 KB wrap around its end many times."""
    sent = packets(2000, seed=9)
    got = []
    with BatchRing(emitter.maps["ring2"], concatenate=False) as ring:
        assert ring.poll_batch(0) == (b"", 0)
        for i in range(0, len(sent), 30):  # never more than the ring holds between two drains
            emit(emitter, "to_ring2", sent[i:i + 30])
            batch, count = ring.consume_batch()
            got.extend(split_records(batch, count))
        assert got == sent
        assert ring.records == len(sent) and ring.oom == 0
        assert ring.batches == len(range(0, len(sent), 30))  # one consumer-position store per batch
    assert emitter.maps["failures"][0] == 0


def test_batch_ring_finds_quiet_samples_when_the_wait_ends_and_bounds_a_batch(emitter):
    sent = packets(120, seed=10)
    with BatchRing(emitter.maps["ring"], batch_limit=4096) as ring:
        emit(emitter, "to_ring_quietly", sent)  # no wakeup: found when the 50 ms wait ends
        got, polls = b"", 0
        while len(got) < len(b"".join(sent)):
            batch, count = ring.poll_batch(50)
            polls += 1
            assert count and len(batch) < 4096 + 1500
            got += batch
        assert got == b"".join(sent) and polls > 1
        ring.close()
        with pytest.raises(ValueError, match="closed"):
            ring.poll_batch(0)


def test_batch_ring_writes_records_straight_to_a_file_in_order_across_the_ring_end(emitter, tmp_path):
    sent = packets(2000, seed=11)
    path = tmp_path / "records"
    with BatchRing(emitter.maps["ring2"]) as ring, open(path, "wb", buffering=0) as f:
        for i in range(0, len(sent), 30):
            emit(emitter, "to_ring2", sent[i:i + 30])
            assert ring.write_to(f.fileno(), max_records=10) == (10, len(b"".join(sent[i:i + 10])), 0, None)
            rest = ring.write_to(f.fileno())
            assert rest.records == len(sent[i + 10:i + 30]) and rest.error is None
        assert ring.write_to(f.fileno()) == (0, 0, 0, None)
        assert ring.records == len(sent)
    assert path.read_bytes() == b"".join(sent)


def test_batch_ring_write_waits_out_short_writes_to_a_small_pipe(emitter):
    sent = packets(30, seed=12)  # about 22 KB through a 4 KiB pipe: many short writev calls
    r, w = os.pipe()
    fcntl.fcntl(w, F_SETPIPE_SZ, 4096)
    got = bytearray()
    reader = threading.Thread(target=lambda: [got.extend(chunk) for chunk in iter(lambda: os.read(r, 1000), b"")])
    reader.start()
    try:
        with BatchRing(emitter.maps["ring2"]) as ring:
            emit(emitter, "to_ring2", sent)
            assert ring.write_to(w).records == len(sent)
    finally:
        os.close(w)
        reader.join(10)
        os.close(r)
    assert bytes(got) == b"".join(sent)


def test_batch_ring_write_error_names_the_records_it_lost(emitter):
    sent = packets(5, seed=13)
    r, w = os.pipe()
    os.close(r)  # EPIPE (Python ignores SIGPIPE)
    try:
        with BatchRing(emitter.maps["ring2"]) as ring:
            emit(emitter, "to_ring2", sent)
            result = ring.write_to(w)
            assert (result.records, result.failed) == (0, len(sent))
            assert isinstance(result.error, OSError) and result.error.errno == errno.EPIPE
            assert ring.consume_batch() == (b"", 0)  # taken from the ring: the caller counts them lost
    finally:
        os.close(w)


def test_batch_ring_refuses_other_maps(emitter):
    with pytest.raises(NotSupportedError, match="ringbuf"):
        BatchRing(emitter.maps["perf"])


# ---- fork while a reader polls (issue 11 §6) ---------------------------------------------------------

@pytest.mark.parametrize("kind", ["ring", "perf", "batch"])
def test_fork_while_a_reader_polls_does_not_deadlock_the_child(emitter, kind):
    if kind == "batch":
        reader = BatchRing(emitter.maps["ring2"])
    else:
        reader = RingBuffer(emitter.maps["ring2"]) if kind == "ring" else PerfBuffer(emitter.maps["perf"], 1)
    stop = threading.Event()

    def poll_until_stopped():
        while not stop.is_set():
            try:
                reader.poll_batch(100)
            except ValueError:
                return

    thread = threading.Thread(target=poll_until_stopped, daemon=True)
    thread.start()
    try:
        for _ in range(1000):  # until a poll is under way: its lock is held in the parent at fork time
            if reader._lock.locked():
                break
            threading.Event().wait(0.01)
        pid = os.fork()
        if pid == 0:  # the child: the copy of the reader is closed, and closing or using it never blocks
            code = 3
            try:
                reader.close()
                try:
                    reader.poll_batch(0)
                except ValueError:
                    code = 0
            finally:
                os._exit(code)
        for _ in range(1000):  # at most 10 s, then the child is taken for deadlocked
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                break
            threading.Event().wait(0.01)
        else:
            os.kill(pid, signal.SIGKILL)
            _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0, "the forked child deadlocked (killed after 10 s)"
        assert not reader.closed  # the parent's reader goes on
        reader.poll_batch(0)
    finally:
        stop.set()
        thread.join(10)
        reader.close()

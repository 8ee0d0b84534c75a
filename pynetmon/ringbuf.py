"""Readers of BPF ring buffers (BPF_MAP_TYPE_RINGBUF) and perf buffers (BPF_MAP_TYPE_PERF_EVENT_ARRAY).

Both hand whole batches to Python: libbpf's sample callback is C (the `pynetmon_sink` in
_cffi_src/libbpf.py) and appends every sample to one growing buffer, so a poll costs one call into C
however many records it brings, and Python splits the batch afterwards (or not at all, see
`concatenate`). The GIL is released while a poll waits.

>>> with RingBuffer(obj.maps["events"]) as rb:
...     for record in rb.poll(timeout_ms=100):   # list of bytes, one per sample
...         handle(record)
...     for record in rb:                        # or iterate: blocks until the reader is closed
...         ...

After fork() the child's copies of every reader are closed (they are the parent's: the ring's consumer
position is shared, and a poll in progress in another thread held the reader's lock, which no thread of
the child would ever release); the child opens its own reader if it needs one.

Lost samples: a perf buffer reports samples the kernel overwrote (`lost`). A ring buffer never loses
what was committed; a program learns of a full ring from `bpf_ringbuf_output`'s error and counts it
itself. Either reader counts samples it had to drop for want of memory in `oom`.
"""
from __future__ import annotations

import errno
import os
import struct
import threading
import time
import weakref
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any, NamedTuple

from ._binding import check, ffi, lib
from .errors import NotSupportedError, error_from_errno
from .maps import Map

if TYPE_CHECKING:  # the optional `pynetmon[data]` extra, imported by to_numpy()
    import numpy

__all__ = ["BatchRing", "PerfBuffer", "RingBuffer", "RingWrite", "split_records"]

DEFAULT_BATCH_LIMIT = 4 << 20  # a ring buffer poll returns once this many bytes are collected
WAIT_SLICE_MS = 100  # the longest a close() from another thread waits for a poll in progress
_LENGTH = struct.Struct("=I")

Callback = Callable[[bytes], object]


def split_records(batch: bytes | memoryview, count: int | None = None) -> list[bytes]:
    """Split a framed batch (u32 length, sample, padding to 8 bytes; repeated) into samples."""
    view = memoryview(batch)
    records = []
    offset, end = 0, len(view)
    unpack = _LENGTH.unpack_from
    while offset + 4 <= end:
        (size,) = unpack(view, offset)
        records.append(bytes(view[offset + 4:offset + 4 + size]))
        offset += (4 + size + 7) & ~7
    if count is not None and len(records) != count:
        raise ValueError(f"batch holds {len(records)} records, expected {count}")
    return records


def _map_fd(map: Map | int, expected: str, what: str) -> tuple[int, str]:
    if isinstance(map, Map):
        if map.type != expected:
            raise NotSupportedError(f"{what} reads a {expected} map; {map.name!r} is a {map.type} map")
        return map.fd, map.name
    if isinstance(map, int):
        found = Map.from_fd(map)
        if found.type != expected:
            raise NotSupportedError(f"{what} reads a {expected} map; fd {map} is a {found.type} map")
        return map, found.name
    raise TypeError(f"{what} needs a Map or a map file descriptor, not {type(map).__name__}")


_live: weakref.WeakSet[_Closes] = weakref.WeakSet()


def _close_in_forked_child() -> None:
    """Every reader the parent had is closed in the child without touching libbpf or the ring (both are the
    parent's), with a fresh lock: a poll in another thread held the old one, and that thread is gone."""
    for reader in list(_live):
        reader._lock = threading.Lock()
        reader.closed = True


os.register_at_fork(after_in_child=_close_in_forked_child)


class _Closes:
    """`with` and garbage collection both end in `close()`; every reader is closed in a forked child."""

    _lock: threading.Lock
    closed: bool

    def _track(self) -> None:
        _live.add(self)

    def close(self) -> None:
        raise NotImplementedError

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __del__(self):
        try:
            self.close()
        except Exception:  # noqa: BLE001, S110 - interpreter shutdown
            pass


class _BufferReader(_Closes):
    """What ring and perf buffer readers share: the sink, batching, iteration and closing."""

    kind = "buffer"

    def __init__(self, callback: Callback | None, concatenate: bool, batch_limit: int):
        self.callback = callback
        self.concatenate = concatenate
        self._sink = ffi.new("struct pynetmon_sink *")
        self._sink.flags = lib.PYNETMON_SINK_CONCAT if concatenate else 0
        self._sink.limit = max(int(batch_limit), 0)
        self._handle = ffi.NULL
        # libbpf's buffer objects are not thread-safe, and close() must not free one under a poll.
        self._lock = threading.Lock()
        self.closed = False
        self._track()

    # Subclasses set these to the libbpf functions of their kind.
    _poll_fn: Callable[..., int]
    _consume_fn: Callable[..., int]
    _epoll_fd_fn: Callable[..., int]
    _free_fn: Callable[..., None]

    @property
    def lost(self) -> int:
        """Samples the kernel reported lost (perf buffers; always 0 for ring buffers)."""
        return int(self._sink.lost)

    @property
    def oom(self) -> int:
        """Samples dropped because the reader could not grow its batch buffer."""
        return int(self._sink.oom)

    @property
    def records(self) -> int:
        """Samples read since the reader was made."""
        return int(self._sink.records)

    def fileno(self) -> int:
        """The epoll descriptor: readable when samples wait (for select/poll/asyncio)."""
        self._check_open()
        return type(self)._epoll_fd_fn(self._handle)

    def _check_open(self) -> None:
        if self.closed:
            raise ValueError(f"{self.kind} reader is closed")

    def poll_batch(self, timeout_ms: int = -1) -> tuple[bytes, int]:
        """Wait up to `timeout_ms` (-1: forever, 0: not at all) for samples; return (batch, count).

        Samples committed without waking the reader (BPF_RB_NO_WAKEUP) are returned when the wait
        ends. The batch is framed (see `split_records`) or, with `concatenate=True`, the samples back to
        back. A ring buffer poll returns early once `batch_limit` bytes are collected; the rest waits.
        """
        timeout_ms = int(timeout_ms)
        if 0 <= timeout_ms <= WAIT_SLICE_MS:
            return self._collect(type(self)._poll_fn, timeout_ms)
        # A longer wait is a series of short ones, each under the lock, so that close() from another
        # thread gets the lock within one slice instead of waiting for a sample that may never come.
        deadline = None if timeout_ms < 0 else time.monotonic() + timeout_ms / 1000
        while True:
            wait_ms = WAIT_SLICE_MS
            if deadline is not None:
                wait_ms = max(1, min(WAIT_SLICE_MS, round((deadline - time.monotonic()) * 1000)))
            batch, count = self._collect(type(self)._poll_fn, wait_ms)
            if count or (deadline is not None and time.monotonic() >= deadline):
                return batch, count

    def consume_batch(self) -> tuple[bytes, int]:
        """Take whatever samples wait, without waiting; return (batch, count)."""
        return self._collect(lambda handle, _timeout: type(self)._consume_fn(handle), 0)

    def _collect(self, fn, timeout_ms: int) -> tuple[bytes, int]:
        with self._lock:
            self._check_open()
            sink = self._sink
            before = sink.records
            sink.stopped = 0
            ret = fn(self._handle, timeout_ms)
            if ret == 0 and timeout_ms != 0:
                # epoll reports a buffer only after a wakeup; samples committed without one
                # (BPF_RB_NO_WAKEUP, perf's wakeup_events) are taken once the wait is over.
                ret = type(self)._consume_fn(self._handle)
            if ret < 0 and not (sink.stopped and ret == lib.PYNETMON_SINK_STOP) and -ret != errno.EINTR:
                raise error_from_errno(-ret, f"polling {self.kind} buffer")
            count = int(sink.records - before)
            batch = ffi.buffer(sink.buf, sink.used)[:] if sink.used else b""
            sink.used = 0
        return batch, count

    def _records(self, batch: bytes, count: int) -> list[bytes]:
        if self.concatenate:
            raise NotSupportedError("a reader made with concatenate=True returns batches: use poll_batch()")
        records = split_records(batch, count) if count else []
        if self.callback is not None:
            for record in records:
                self.callback(record)
        return records

    def poll(self, timeout_ms: int = -1) -> list[bytes]:
        """Wait up to `timeout_ms` (-1: forever) for samples and return them (an empty list on timeout).

        With a `callback`, it is also called with each sample, in order, before poll returns.
        """
        return self._records(*self.poll_batch(timeout_ms))

    def consume(self) -> list[bytes]:
        """The samples that wait now, without waiting."""
        return self._records(*self.consume_batch())

    # Records a to_numpy() call read beyond its max_records: the next to_numpy() call returns them first.
    _numpy_surplus = None

    def to_numpy(self, dtype: Any, max_records: int = 65536, timeout_ms: int = 1000) -> numpy.ndarray:
        """Up to `max_records` fixed-size records as a NumPy structured array of `dtype` (a NumPy dtype,
        or a BTF codec such as `obj.maps["m"].value_codec`), waiting at most `timeout_ms` for them.

        The batch is turned into the array in C (one strided copy when every record has the same
        size); records longer than the dtype are cut to it (perf samples carry padding), a shorter one
        is an error. The `callback` is not called. Needs the `pynetmon[data]` extra.

        >>> events = rb.to_numpy(np.dtype([("ts", "u8"), ("len", "u4"), ("ifindex", "u4")]), 10_000, 500)
        """
        from .frames.arrays import collect_records
        return collect_records(self, dtype, max_records, timeout_ms)

    def __iter__(self) -> Iterator[bytes]:
        """Every sample, as it comes; ends when the reader is closed (from another thread)."""
        while not self.closed:
            try:
                records = self.poll(100)
            except ValueError:
                if self.closed:
                    return
                raise
            yield from records

    def close(self) -> None:
        """Free the libbpf reader and the batch buffer. A poll in another thread ends within
        WAIT_SLICE_MS and raises ValueError (the iterator just ends)."""
        with self._lock:
            if self.closed:
                return
            self.closed = True
            if self._handle != ffi.NULL:
                type(self)._free_fn(self._handle)
                self._handle = ffi.NULL
            lib.pynetmon_sink_free(self._sink)



class RingBuffer(_BufferReader):
    """Reader of a BPF ring buffer map (one buffer shared by all CPUs, records in commit order).

    `callback(record)` is called for each record by `poll`/`consume`; `concatenate=True` keeps records
    back to back (for records that carry their own length) and is read with `poll_batch`;
    `batch_limit` bounds the bytes one poll collects (0: unbounded).

    >>> rb = RingBuffer(obj.maps["events"])
    >>> rb.poll(100)
    [b'...', b'...']
    """

    kind = "ring"
    _poll_fn = staticmethod(lib.ring_buffer__poll)
    _consume_fn = staticmethod(lib.ring_buffer__consume)
    _epoll_fd_fn = staticmethod(lib.ring_buffer__epoll_fd)
    _free_fn = staticmethod(lib.ring_buffer__free)

    def __init__(self, map: Map | int, callback: Callback | None = None, *, concatenate: bool = False,
                 batch_limit: int = DEFAULT_BATCH_LIMIT):
        fd, self.map_name = _map_fd(map, "ringbuf", "RingBuffer")
        super().__init__(callback, concatenate, batch_limit)
        handle = lib.pynetmon_ring_buffer_new(fd, self._sink)
        if handle == ffi.NULL:
            raise error_from_errno(ffi.errno or errno.EINVAL, f"opening ring buffer {self.map_name!r}")
        self._handle = handle

    def add(self, map: Map | int) -> None:
        """Read another ring buffer map through this reader too (its samples join the same batches)."""
        fd, name = _map_fd(map, "ringbuf", "RingBuffer.add")
        with self._lock:
            self._check_open()
            check(lib.pynetmon_ring_buffer_add(self._handle, fd, self._sink), f"adding ring buffer {name!r}")

    def __repr__(self) -> str:
        return f"<RingBuffer {self.map_name!r}{' closed' if self.closed else ''}>"


class PerfBuffer(_BufferReader):
    """Reader of a perf event array map (one buffer of `page_cnt` pages per CPU).

    Samples from different CPUs are not ordered among themselves. The kernel pads each sample so that
    sample + 4-byte size is a multiple of 8: a sample may end with up to 7 bytes of padding.
    Samples overwritten before they were read are counted in `lost`.
    """

    kind = "perf"
    _poll_fn = staticmethod(lib.perf_buffer__poll)
    _consume_fn = staticmethod(lib.perf_buffer__consume)
    _epoll_fd_fn = staticmethod(lib.perf_buffer__epoll_fd)
    _free_fn = staticmethod(lib.perf_buffer__free)

    def __init__(self, map: Map | int, page_cnt: int = 64, callback: Callback | None = None, *,
                 concatenate: bool = False):
        if page_cnt <= 0 or page_cnt & (page_cnt - 1):
            raise ValueError(f"page_cnt must be a power of two, not {page_cnt}")
        fd, self.map_name = _map_fd(map, "perf_event_array", "PerfBuffer")
        super().__init__(callback, concatenate, 0)
        handle = lib.pynetmon_perf_buffer_new(fd, page_cnt, self._sink)
        if handle == ffi.NULL:
            raise error_from_errno(ffi.errno or errno.EINVAL, f"opening perf buffer {self.map_name!r}",
                                   f"{page_cnt} pages per CPU")
        self._handle = handle
        self.page_cnt = page_cnt

    def __repr__(self) -> str:
        return f"<PerfBuffer {self.map_name!r} {self.page_cnt} pages/CPU{' closed' if self.closed else ''}>"


class RingWrite(NamedTuple):
    """What `BatchRing.write_to` wrote."""

    records: int
    bytes: int
    failed: int
    error: OSError | None


class BatchRing(_Closes):
    """A ring buffer read in whole batches by our own consumer in C (`_cffi_src/ringdrain.c`): records are
    copied back to back (or framed, see `split_records`) into one buffer per poll, and the ring space is
    given back to the producers once per batch rather than once per record as libbpf's reader does
    (each such store is a cache-line transfer to the CPUs that produce). One reader thread at a time.

    >>> ring = BatchRing(obj.maps["capture_ring"], concatenate=True)
    >>> batch, count = ring.poll_batch(100)   # waits for a wakeup, at most 100 ms, then takes all that waits
    """

    kind = "ring"

    def __init__(self, map: Map, *, concatenate: bool = True, batch_limit: int = DEFAULT_BATCH_LIMIT):
        fd, self.map_name = _map_fd(map, "ringbuf", "BatchRing")
        self.concatenate = concatenate
        self._sink = ffi.new("struct pynetmon_sink *")
        self._sink.flags = lib.PYNETMON_SINK_CONCAT if concatenate else 0
        self._sink.limit = max(int(batch_limit), 0)
        self._lock = threading.Lock()
        self.closed = False
        self._track()
        self._ring = lib.pynetmon_ring_open(fd, map.max_entries)
        if self._ring == ffi.NULL:
            err = ffi.errno or errno.EINVAL
            lib.pynetmon_sink_free(self._sink)
            self.closed = True
            raise error_from_errno(err, f"mapping ring buffer {self.map_name!r}")

    @property
    def records(self) -> int:
        """Records read since the reader was made."""
        return int(self._sink.records)

    @property
    def batches(self) -> int:
        """How often the ring space was given back to the producers (about once per batch)."""
        return int(self._ring.drains) if not self.closed else 0

    @property
    def oom(self) -> int:
        """Records dropped because the batch buffer could not grow."""
        return int(self._sink.oom)

    def fileno(self) -> int:
        """An epoll descriptor, readable after a wakeup (for select/poll/asyncio)."""
        self._check_open()
        return int(self._ring.epoll_fd)

    def _check_open(self) -> None:
        if self.closed:
            raise ValueError("ring reader is closed")

    def poll_batch(self, timeout_ms: int = -1, delay_ms: int = 0, batch_bytes: int = 0, *,
                   copy: bool = True) -> tuple[bytes | memoryview, int]:
        """Wait for records, then take every committed one: (batch, count); (b"", 0) when none came
        within `timeout_ms` (-1: forever) or `notify()` ended the wait.

        The sleep ends only on a new wakeup from the kernel (the ring's descriptor is edge-triggered):
        a flag-less commit that finds the reader caught up, or a forced one. Once records wait, the
        batch is left to grow for up to `delay_ms` unless `batch_bytes` already wait or a forced wakeup
        says so. So with producers that commit without flags (or force a wakeup per batch) a quiet
        ring costs no wakeup and a record waits at most `delay_ms` plus one drain. Records committed
        with BPF_RB_NO_WAKEUP are found when the wait times out. The wait runs in C, without the GIL.

        `copy=False` returns a view of the reader's own buffer instead of new bytes, valid until the next
        call (for a caller that writes the batch out at once: no copy, no fresh pages per batch).
        """
        return self._take(int(timeout_ms), int(delay_ms), int(batch_bytes), copy)

    def consume_batch(self, *, copy: bool = True) -> tuple[bytes | memoryview, int]:
        """Take whatever records wait, without waiting (`copy` as in `poll_batch`)."""
        return self._take(0, 0, 0, copy)

    def wait(self, timeout_ms: int = -1, delay_ms: int = 0, batch_bytes: int = 0) -> bool:
        """The wait of `poll_batch` without the taking: False when it timed out or `notify()` ended it
        (records may wait all the same: BPF_RB_NO_WAKEUP ones, or ones that came after)."""
        with self._lock:
            self._check_open()
            ret = lib.pynetmon_ring_wait(self._ring, int(timeout_ms), int(delay_ms), int(batch_bytes))
            if ret < 0:
                raise error_from_errno(-ret, f"waiting on ring buffer {self.map_name!r}")
        return ret == 1

    def write_to(self, fd: int, max_records: int = 0) -> RingWrite:
        """Write the waiting records to the file descriptor `fd` straight from the mapped ring (writev, no
        copy in user space; only the records' own bytes, for records that are whole on their own such as
        pcap records), at most `max_records` (0: all), giving the space back as they are written.

        Returns (records, bytes, failed, error): after a failed write, `error` is the OSError and `failed`
        the records taken from the ring but not written whole (the output may end inside the first)."""
        out = ffi.new("struct pynetmon_ring_written *")
        with self._lock:
            self._check_open()
            ret = lib.pynetmon_ring_write(self._ring, int(fd), int(max_records), out)  # GIL released
            self._sink.records += out.records
        error = OSError(-ret, os.strerror(-ret)) if ret < 0 else None
        return RingWrite(int(out.records), int(out.bytes), int(out.failed), error)

    def notify(self) -> None:
        """End a `poll_batch` wait in progress in another thread (or the next one)."""
        if not self.closed:
            lib.pynetmon_ring_notify(self._ring)

    def _take(self, timeout_ms: int, delay_ms: int, batch_bytes: int, copy: bool = True) \
            -> tuple[bytes | memoryview, int]:
        with self._lock:
            self._check_open()
            if timeout_ms:
                ret = lib.pynetmon_ring_wait(self._ring, timeout_ms, delay_ms, batch_bytes)  # GIL released
                if ret < 0:
                    raise error_from_errno(-ret, f"waiting on ring buffer {self.map_name!r}")
            sink = self._sink
            count = lib.pynetmon_ring_drain(self._ring, sink)
            if not sink.used:
                batch: bytes | memoryview = b""
            elif copy:
                batch = ffi.buffer(sink.buf, sink.used)[:]
            else:
                batch = memoryview(ffi.buffer(sink.buf, sink.used))
            sink.used = 0
        return batch, count

    def close(self) -> None:
        """Unmap the ring and free the batch buffer (ending a wait in another thread first). Idempotent."""
        self.notify()
        with self._lock:
            if self.closed:
                return
            self.closed = True
            lib.pynetmon_ring_close(self._ring)
            self._ring = ffi.NULL
            lib.pynetmon_sink_free(self._sink)


    def __repr__(self) -> str:
        return f"<BatchRing {self.map_name!r}{' closed' if self.closed else ''}>"

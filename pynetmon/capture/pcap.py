"""The pcap file format (nanosecond variant) and a buffered writer of it.

A pcap file is a 24-byte global header followed by records, each a 16-byte header (seconds,
nanoseconds, captured length, original length) and the captured bytes, all in the writer's byte order,
which readers learn from the magic number. The capture dataplane produces records in exactly this
layout (struct capture_record in bpf/capture.h), so whole batches go to the file unchanged.

Unlike dpkt's writer, the captured and original lengths are both recorded, and timestamps keep their
nanoseconds.

>>> with PcapWriter("/tmp/x.pcap", snaplen=96) as w:
...     w.write_packet(frame, ts_ns=time.time_ns(), wirelen=1514)
"""
from __future__ import annotations

import errno
import io
import os
import stat
import struct
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, BinaryIO, Self

from ..errors import Error
from ..filter.cbpf import MAX_SNAPLEN

if TYPE_CHECKING:
    from ..ringbuf import BatchRing

__all__ = [
    "LINKTYPE_ETHERNET",
    "MAGIC_NANOSECOND",
    "MAX_SNAPLEN",
    "PcapWriteError",
    "PcapWriter",
    "global_header",
    "iter_records",
    "open_pcap",
    "record_header",
]

MAGIC_NANOSECOND = 0xA1B23C4D
LINKTYPE_ETHERNET = 1
VERSION = (2, 4)
GLOBAL_HEADER = struct.Struct("=IHHiIII")  # magic, major, minor, thiszone, sigfigs, snaplen, linktype
RECORD_HEADER = struct.Struct("=IIII")  # ts_sec, ts_nsec, caplen (incl_len), wirelen (orig_len)
_SNAPLEN_OFFSET = 16


class PcapWriteError(Error, OSError):
    """The pcap file cannot be opened or written (`.errno`, `.filename` as in OSError)."""

    def __init__(self, what: str, exc: OSError, filename: str | None):
        OSError.__init__(self, exc.errno, f"{what} {filename or 'pcap output'!r}: {exc.strerror or exc}",
                         filename)

    def __str__(self) -> str:
        return self.strerror


def global_header(snaplen: int, linktype: int = LINKTYPE_ETHERNET) -> bytes:
    """The 24-byte header that starts a nanosecond pcap file or stream."""
    return GLOBAL_HEADER.pack(MAGIC_NANOSECOND, *VERSION, 0, 0, snaplen, linktype)


def record_header(ts_ns: int, caplen: int, wirelen: int) -> bytes:
    """The 16-byte header of one record."""
    sec, nsec = divmod(ts_ns, 1_000_000_000)
    return RECORD_HEADER.pack(sec, nsec, caplen, wirelen)


def iter_records(data: bytes | memoryview, offset: int = 0) -> Iterator[tuple[int, int]]:
    """(start, end) of each whole record in a buffer of back-to-back records; stops at a partial one."""
    view = memoryview(data)
    end = len(view)
    unpack = RECORD_HEADER.unpack_from
    while offset + RECORD_HEADER.size <= end:
        caplen = unpack(view, offset)[2]
        stop = offset + RECORD_HEADER.size + caplen
        if stop > end:
            return
        yield offset, stop
        offset = stop


class PcapWriter:
    """Writes a nanosecond pcap file through its own buffer: records collect in memory and reach the
    file when `buffer_bytes` are pending, on `flush()` and on `close()` (one write call each time).

    `target` is a path (created or overwritten at once, so that an unwritable path fails here) or a
    binary file object (written to and flushed, never closed). A path is never followed when it is a
    symbolic link, and must be a regular file. `append=True` continues an existing pcap file of the same
    link type instead of replacing it: a record cut short at its end (a crash mid-write) is cut off, so the
    file stays valid. The header's snaplen is the one given;
    `raise_snaplen` records a larger one, rewritten in the header on flush where the file is seekable.
    Write errors (a full disk) raise `PcapWriteError` and leave the writer closed.
    """

    def __init__(self, target: str | os.PathLike | BinaryIO, snaplen: int, *,
                 linktype: int = LINKTYPE_ETHERNET, buffer_bytes: int = 1 << 20, append: bool = False):
        if not 0 < snaplen <= MAX_SNAPLEN:
            raise ValueError(f"snaplen must be between 1 and {MAX_SNAPLEN}, not {snaplen}")
        self.snaplen = snaplen
        self.linktype = linktype
        self.buffer_bytes = buffer_bytes
        self.packets = 0  # records that reached the file object
        self.lost = 0  # records that were pending when a write failed
        self.bytes_written = 0
        self._pending: list[bytes | memoryview] = []
        self._pending_bytes = 0
        self._pending_count = 0
        self._header_snaplen = self._written_snaplen = snaplen
        self.closed = False
        if isinstance(target, (str, os.PathLike)):
            self.name = os.fspath(target)
            try:
                self._file: BinaryIO = open_pcap(self.name, readable=append)
            except OSError as exc:
                raise PcapWriteError("cannot create pcap file", exc, self.name) from None
            self._owned = True
        else:
            self.name = getattr(target, "name", None) or "<stream>"
            self._file = target
            self._owned = False
        self._seekable = self._owned and _seekable(self._file)
        self.direct_fd = _direct_fd(self._file, self._owned)
        regular = self._owned and stat.S_ISREG(os.fstat(self._file.fileno()).st_mode)
        kept = _resume(self._file, linktype, self.name) if append and regular else None
        if kept is None:
            if regular:
                os.ftruncate(self._file.fileno(), 0)
            self._write(global_header(snaplen, linktype))
        else:
            # The header keeps the larger snaplen of the two (rewritten on flush when it grows).
            self._written_snaplen = kept
            self._header_snaplen = max(kept, snaplen)
        self._flush_file()

    def write_records(self, data: bytes | memoryview, count: int) -> None:
        """Append `count` ready-made records (headers and bytes, back to back)."""
        if not data:
            return
        if self.closed:
            raise ValueError(f"pcap writer for {self.name!r} is closed")
        self._pending.append(data)
        self._pending_bytes += len(data)
        self._pending_count += count
        if self._pending_bytes >= self.buffer_bytes:
            self.flush()

    def write_from_ring(self, ring: BatchRing, max_records: int = 0) -> int:
        """Write the pcap records waiting in `ring` to the file straight from the mapped ring (one writev
        per PYNETMON_RING_IOV records, no copy in user space), at most `max_records` (0: all); returns how
        many. Only where `direct_fd` is not None; what is pending in the writer's buffer goes first."""
        if self.closed:
            raise ValueError(f"pcap writer for {self.name!r} is closed")
        if self.direct_fd is None:
            raise ValueError(f"pcap writer for {self.name!r} writes through a file object, not a descriptor")
        if self._pending or not self._owned:
            self.flush()  # the order of the file: whatever waits in our buffer or the file object's first
        result = ring.write_to(self.direct_fd, max_records)
        self.packets += result.records
        self.bytes_written += result.bytes
        if result.error is not None:
            self.lost += result.failed
            self._abandon()
            raise PcapWriteError("cannot write pcap file", result.error, self.name)
        if result.records:
            self._update_header()
        return result.records

    def write_packet(self, data: bytes, ts_ns: int | None = None, wirelen: int | None = None) -> None:
        """Append one packet (cut to the snaplen); `ts_ns` defaults to now, `wirelen` to len(data)."""
        wirelen = len(data) if wirelen is None else wirelen
        caplen = min(len(data), self.snaplen)
        stamp = time.time_ns() if ts_ns is None else ts_ns
        self.write_records(record_header(stamp, caplen, wirelen) + bytes(data[:caplen]), 1)

    def raise_snaplen(self, snaplen: int) -> None:
        """Note that records may now be up to `snaplen` bytes (the header is updated on flush)."""
        self.snaplen = snaplen
        self._header_snaplen = max(self._header_snaplen, min(snaplen, MAX_SNAPLEN))

    def flush(self) -> None:
        """Write what is pending (one write call) and make the file object pass it on."""
        if self.closed:
            return
        if self._pending:
            data = b"".join(self._pending) if len(self._pending) > 1 else self._pending[0]
            self._write(data)
            self.packets += self._pending_count
            self._pending.clear()
            self._pending_bytes = self._pending_count = 0
        self._update_header()
        self._flush_file()

    def _write(self, data: bytes | memoryview) -> None:
        view = memoryview(data)
        try:
            while view:
                n = self._file.write(view)
                if n is None:  # a non-blocking file object that took nothing
                    n = 0
                view = view[n:]
                self.bytes_written += n
        except OSError as exc:
            self._abandon()
            raise PcapWriteError("cannot write pcap file", exc, self.name) from None

    def _flush_file(self) -> None:
        try:
            self._file.flush()
        except OSError as exc:
            self._abandon()
            raise PcapWriteError("cannot write pcap file", exc, self.name) from None

    def _update_header(self) -> None:
        if self._header_snaplen == self._written_snaplen or not self._seekable:
            return
        try:
            os.pwrite(self._file.fileno(), struct.pack("=I", self._header_snaplen), _SNAPLEN_OFFSET)
        except OSError as exc:
            self._abandon()
            raise PcapWriteError("cannot write pcap file", exc, self.name) from None
        self._written_snaplen = self._header_snaplen

    def _abandon(self) -> None:
        """After a write error: drop what is pending and release the file (nothing more can be written)."""
        self.lost += self._pending_count
        self._pending.clear()
        self._pending_bytes = self._pending_count = 0
        self.closed = True
        if self._owned:
            try:
                self._file.close()
            except OSError:
                pass

    def close(self) -> None:
        """Flush and close the file (a file object passed in is flushed, not closed)."""
        if self.closed:
            return
        try:
            self.flush()
        finally:
            if not self.closed:
                self.closed = True
                if self._owned:
                    try:
                        self._file.close()
                    except OSError as exc:
                        raise PcapWriteError("cannot close pcap file", exc, self.name) from None

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<PcapWriter {self.name!r} snaplen={self.snaplen} packets={self.packets}>"


def open_pcap(path: str, *, readable: bool = False) -> BinaryIO:
    """`path` opened for writing (and reading, if `readable`) without truncating it, never through a
    symbolic link (O_NOFOLLOW). O_NONBLOCK while opening: a FIFO without a reader fails at once (ENXIO)
    instead of blocking."""
    flags = (os.O_RDWR if readable else os.O_WRONLY) | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
    try:
        fd = os.open(path, flags, 0o600)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise OSError(errno.ELOOP, "it is a symbolic link, which is never followed", path) from None
        raise
    try:
        os.set_blocking(fd, True)
        return open(fd, "wb", buffering=0)
    except BaseException:
        os.close(fd)
        raise


def _resume(f, linktype: int, name: str) -> int | None:
    """Prepare `f` (an existing pcap file) for appending: None when it is empty (write a header), else the
    snaplen of its header, with `f` positioned after its last whole record."""
    fd = f.fileno()
    size = os.fstat(fd).st_size
    if size == 0:
        return None
    header = os.pread(fd, GLOBAL_HEADER.size, 0)
    fields = GLOBAL_HEADER.unpack(header) if len(header) == GLOBAL_HEADER.size else None
    if fields is None or fields[0] != MAGIC_NANOSECOND or fields[6] != linktype:
        raise PcapWriteError("will not append to a file that is not a nanosecond pcap file of the same link "
                             "type", OSError(errno.EINVAL, "not a pcap file to append to"), name)
    end = offset = GLOBAL_HEADER.size
    while offset + RECORD_HEADER.size <= size:
        caplen = RECORD_HEADER.unpack(os.pread(fd, RECORD_HEADER.size, offset))[2]
        if caplen > MAX_SNAPLEN or offset + RECORD_HEADER.size + caplen > size:
            break  # a record cut short (or garbage): everything from here on is dropped
        offset += RECORD_HEADER.size + caplen
        end = offset
    if end < size:
        os.ftruncate(fd, end)
    f.seek(end)
    return fields[5]


def _direct_fd(f, owned: bool) -> int | None:
    """The descriptor batches may be written to directly, bypassing the file object: a file we opened,
    or a plain file or pipe object passed in (io.FileIO, io.BufferedWriter, io.BufferedRandom - flushed
    before each direct write). Never a wrapper: a compressing or encrypting file object has the fileno of
    the file below it, which must not get raw records."""
    if not owned and type(f) not in (io.FileIO, io.BufferedWriter, io.BufferedRandom):
        return None
    try:
        return f.fileno()
    except (OSError, ValueError, io.UnsupportedOperation):
        return None


def _seekable(f) -> bool:
    try:
        return f.seekable()
    except (OSError, ValueError, io.UnsupportedOperation):
        return False

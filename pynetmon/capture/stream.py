"""Network mode: captured records wait in a bounded buffer until a client streams them as pcap bytes.

The buffer never holds more than `max_bytes`: a batch that does not fit keeps its first whole records
that do, and the rest are counted as dropped (as a kernel drops what no longer fits its ring). One
client streams at a time; the stream is a complete pcap byte stream (global header first), so what a
client saves is a valid file whenever it stops.
"""
from __future__ import annotations

import collections
import threading
from collections.abc import Iterator

from ..errors import Error
from .pcap import global_header, iter_records

__all__ = ["PacketBuffer"]


class PacketBuffer:
    """A bounded FIFO of pcap record batches, with drop accounting and a blocking reader side."""

    def __init__(self, max_bytes: int):
        if max_bytes <= 0:
            raise ValueError(f"max_bytes must be positive, not {max_bytes}")
        self.max_bytes = max_bytes
        self._chunks: collections.deque[bytes] = collections.deque()
        self._bytes = 0
        self._cond = threading.Condition()
        self._closed = False
        self._streaming = False
        self.dropped_packets = 0
        self.dropped_bytes = 0
        self.delivered_packets = 0

    @property
    def pending_bytes(self) -> int:
        return self._bytes

    def put(self, records: bytes, count: int) -> int:
        """Queue `count` back-to-back records; returns how many had to be dropped for want of room."""
        if not records:
            return 0
        with self._cond:
            room = self.max_bytes - self._bytes
            kept, kept_count = records, count
            if len(records) > room:
                cut = kept_count = 0
                for _, end in iter_records(records):
                    if end > room:
                        break
                    cut, kept_count = end, kept_count + 1
                kept = records[:cut]
                self.dropped_packets += count - kept_count
                self.dropped_bytes += len(records) - cut
            if kept:
                self._chunks.append(kept)
                self._bytes += len(kept)
                self.delivered_packets += kept_count
                self._cond.notify_all()
            return count - kept_count

    def get(self, timeout: float | None = None) -> bytes | None:
        """Everything queued, as one chunk; waits up to `timeout` for some. None once closed and empty."""
        with self._cond:
            if not self._chunks and not self._closed:
                self._cond.wait(timeout)
            if not self._chunks:
                return None if self._closed else b""
            data = b"".join(self._chunks)
            self._chunks.clear()
            self._bytes = 0
            return data

    def close(self) -> None:
        """No more records will come; a stream ends once it has passed on what is queued."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    @property
    def closed(self) -> bool:
        return self._closed

    def stream(self, snaplen: int, linktype: int, poll_interval: float = 0.5) -> Iterator[bytes]:
        """The live pcap byte stream: global header, then records as they come, until the capture ends.

        Only one stream at a time reads a buffer; a second raises `Error` while the first is open.
        An empty chunk is yielded every `poll_interval` seconds without traffic, so that a server
        notices a client that went away.
        """
        with self._cond:
            if self._streaming:
                raise Error("this capture is already being streamed to another client")
            self._streaming = True
        try:
            yield global_header(snaplen, linktype)
            while True:
                chunk = self.get(poll_interval)
                if chunk is None:
                    return
                yield chunk
        finally:
            with self._cond:
                self._streaming = False

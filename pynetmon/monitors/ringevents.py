"""The event stream of a monitor whose kernel side writes a ring buffer (tcp's state changes, ddos's
blocks): one reader opened at the first `events()` call, polled until a quiet `timeout` or until the
monitor closes it.

>>> self._events = RingEvents(obj.maps["tcp_events"])   # in _start
>>> yield from self._events.stream(timeout, decode_event)  # in events()
>>> self._events.close()                                # in _stop
"""
from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from typing import Any

from ..maps import Map
from ..ringbuf import RingBuffer


class RingEvents:
    """A lazily opened reader of one ring map. One reader at a time; `close()` ends a running stream."""

    def __init__(self, ring_map: Map):
        self._map = ring_map
        self._ring: RingBuffer | None = None
        self._lock = threading.Lock()

    def stream(self, timeout: float | None, decode: Callable[[bytes], dict[str, Any]]) -> Iterator[dict[str, Any]]:
        """Decoded records as they come; ends after `timeout` seconds without one (never, with None) or
        when closed."""
        with self._lock:
            if self._ring is None:
                self._ring = RingBuffer(self._map)
            ring = self._ring
        wait_ms = 100 if timeout is None else max(1, int(timeout * 1000))
        while not ring.closed:
            try:
                records = ring.poll(wait_ms)
            except ValueError:  # closed from another thread
                return
            if not records and timeout is not None:
                return
            for record in records:
                yield decode(record)

    def close(self) -> None:
        with self._lock:
            if self._ring is not None:
                self._ring.close()
                self._ring = None

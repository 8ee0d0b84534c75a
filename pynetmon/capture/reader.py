"""The one reader of a capture's ring buffer: a thread that moves record batches to the output.

Records arrive as one concatenated batch per poll (the ring buffer sink appends them in C), so the
thread never touches single packets. Besides reading, it runs the periodic tick (flush the file,
re-measure the clock offset). An exception from the output (a full disk) ends the thread and is handed
to `on_error`; it never reaches the host program's other threads.
"""
from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from ..maps import Map
from ..ringbuf import RingBuffer

__all__ = ["RingReader"]

log = logging.getLogger("pynetmon.capture")

Deliver = Callable[[bytes, int], None]


class RingReader:
    """Reads `ring` in a daemon thread, passing (batch, record count) to `deliver`.

    `tick()` runs every `tick_interval` seconds; polls wait at most `poll_ms` so that a stop request
    and the tick are never late by more than that.
    """

    def __init__(self, ring: Map, deliver: Deliver, *, tick: Callable[[], None], on_error: Callable[[BaseException], None],
                 tick_interval: float = 1.0, poll_ms: int = 100, name: str = "capture"):
        self._ring = RingBuffer(ring, concatenate=True)
        self._deliver = deliver
        self._tick = tick
        self._on_error = on_error
        self.tick_interval = tick_interval
        self.poll_ms = poll_ms
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"pynetmon-capture-{name}", daemon=True)
        self.error: BaseException | None = None

    def start(self) -> None:
        self._thread.start()

    @property
    def running(self) -> bool:
        return self._thread.is_alive()

    def _run(self) -> None:
        next_tick = time.monotonic() + self.tick_interval
        try:
            while not self._stop.is_set():
                batch, count = self._ring.poll_batch(self.poll_ms)
                if count:
                    self._deliver(batch, count)
                now = time.monotonic()
                if now >= next_tick:
                    self._tick()
                    next_tick = now + self.tick_interval
        except BaseException as exc:  # noqa: BLE001 - reported through on_error, see the module doc
            self.error = exc
            log.error("capture reader stopped: %s", exc)
            try:
                self._on_error(exc)
            except Exception:
                log.exception("capture error handler failed")

    def stop(self) -> None:
        """Stop the thread and pass on the records still in the ring (the dataplane is detached by now)."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()
        if self.error is None:
            while True:
                batch, count = self._ring.consume_batch()
                if not count:
                    break
                self._deliver(batch, count)

    def close(self) -> None:
        self._ring.close()

"""The one reader of a capture's ring buffer: a thread that moves record batches to the output.

Records arrive as one concatenated batch per poll (`BatchRing`: our C consumer copies every waiting
record and gives the ring space back once per batch), so the thread never touches single packets. Besides reading, it runs the periodic tick (flush the file,
re-measure the clock offset). An exception from the output (a full disk) ends the thread and is handed
to `on_error`; it never reaches the host program's other threads.
"""
from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from ..maps import Map
from ..ringbuf import BatchRing

__all__ = ["RingReader"]

log = logging.getLogger("pynetmon.capture")

# (batch, record count): the batch is a view of the reader's buffer, valid only during the call.
Deliver = Callable[[bytes | memoryview, int], None]


class RingReader:
    """Reads `ring` in a daemon thread, passing (batch, record count) to `deliver`.

    `tick()` runs every `tick_interval` seconds; a record is taken at most `poll_ms` after the kernel
    woke the reader for it (or `batch_bytes` wait); `stop()` ends a wait at once.
    """

    def __init__(self, ring: Map, deliver: Deliver, *, tick: Callable[[], None], on_error: Callable[[BaseException], None],
                 tick_interval: float = 1.0, poll_ms: int = 100, batch_bytes: int = 0, name: str = "capture"):
        self._ring = BatchRing(ring, concatenate=True)
        self._deliver = deliver
        self._tick = tick
        self._on_error = on_error
        self.tick_interval = tick_interval
        self.poll_ms = poll_ms
        self.batch_bytes = batch_bytes
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
                # Sleeps in C until the kernel wakes it (the first record after a drain, or a full
                # batch), then lets the batch grow for up to poll_ms; or until the tick is due or stop()
                # notifies. An idle capture wakes once per tick; a packet waits at most poll_ms.
                wait_ms = max(1, round((next_tick - time.monotonic()) * 1000))
                batch, count = self._ring.poll_batch(wait_ms, self.poll_ms, self.batch_bytes, copy=False)
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
        self._ring.notify()
        if self._thread.is_alive():
            self._thread.join()
        if self.error is None:
            while True:
                batch, count = self._ring.consume_batch(copy=False)
                if not count:
                    break
                self._deliver(batch, count)

    def close(self) -> None:
        self._ring.close()

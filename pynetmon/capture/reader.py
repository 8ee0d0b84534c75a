"""The one reader of a capture's ring buffer: a thread that moves record batches to the output.

The thread sleeps in C until the kernel wakes it (`BatchRing.wait`: a wakeup per batch, none while the
link is idle), then hands the ring to `take`, which moves every waiting record at once - written to the
file straight from the mapped ring (`BatchRing.write_to`), or copied in one C call into a batch for the
stream - so the thread never touches single packets. Besides reading, it runs the periodic tick (flush
the file, re-measure the clock offset). An exception from the output (a full disk) ends the thread and
is handed to `on_error`; it never reaches the host program's other threads.
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

# Takes every record that waits in the ring (writes or queues it); returns how many it took.
Take = Callable[[BatchRing], int]


class RingReader:
    """Reads `ring` in a daemon thread: `take(ring)` after each wakeup.

    `tick()` runs every `tick_interval` seconds; a record is taken at most `poll_ms` after the kernel
    woke the reader for it (or `batch_bytes` wait); `stop()` ends a wait at once.
    """

    def __init__(self, ring: Map, take: Take, *, tick: Callable[[], None], on_error: Callable[[BaseException], None],
                 tick_interval: float = 1.0, poll_ms: int = 100, batch_bytes: int = 0, name: str = "capture"):
        self._ring = BatchRing(ring, concatenate=True)
        self._take = take
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
                self._ring.wait(wait_ms, self.poll_ms, self.batch_bytes)
                self._take(self._ring)
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
            while self._take(self._ring):
                pass

    def close(self) -> None:
        self._ring.close()

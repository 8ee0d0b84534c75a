"""`PacketCapture`: tcpdump's job done with an eBPF dataplane - filter in the kernel, pcap out.

>>> cap = PacketCapture("sniffer", capture="bidirectional", filter="tcp port 80", snaplen=96, dump="/tmp/web")
>>> cap.attach("eth0")           # writes /tmp/web.pcap
>>> cap.filter = "udp"           # swapped in the kernel at once; the file goes on without a gap
>>> cap.stats()                  # {"seen": n, "matched": n, "captured": n, "dropped": n, ...}
>>> cap.detach()                 # detaches, flushes and closes the file

The path of a packet: TC hook (ingress/egress, tcx where the kernel has it) → filter → ring buffer
record, already laid out as a pcap record → reader thread → pcap file (local mode) or a bounded buffer
streamed to a client (network mode).
"""
from __future__ import annotations

import logging
import os
import threading
from collections.abc import Iterator
from typing import BinaryIO, Self

from ..errors import ConfigError, Error, FilterError
from ..filter import policy
from ..filter.cbpf import MAX_SNAPLEN, Insn
from ..filter.policy import FilterSpec
from ..link import DIRECTIONS
from ..ringbuf import BatchRing
from .clock import realtime_minus_tai_ns
from .dataplane import Dataplane
from .pcap import LINKTYPE_ETHERNET, PcapWriteError, PcapWriter, iter_records
from .reader import RingReader
from .stream import PacketBuffer

__all__ = ["CAPTURE_MODES", "PacketCapture"]

log = logging.getLogger("pynetmon.capture")

CAPTURE_MODES = (*DIRECTIONS, "bidirectional", "off")
_MODE_DIRECTIONS = {"ingress": ("ingress",), "egress": ("egress",), "bidirectional": DIRECTIONS, "off": ()}
DEFAULT_SNAPLEN = MAX_SNAPLEN
DEFAULT_RING_BYTES = 8 << 20
DEFAULT_BUFFER_BYTES = 32 << 20
# The longest a captured packet waits in pynetmon before it is in the file (handed to the OS) or queued
# for the stream: the time the reader lets a batch grow after the kernel woke it, plus the write of the
# batch, which follows at once.
DEFAULT_MAX_DELAY = 0.1
COUNTER_FIELDS = ("seen", "matched", "captured", "dropped", "errors", "captured_bytes")


def compile_filter(spec: FilterSpec) -> list[Insn]:
    """Filter text ("all" for everything), classic BPF instructions, or None (nothing) → instructions.

    Text is compiled as libpcap compiles it for a live capture on Linux (`tcpdump -i`), since the
    dataplane runs it as the kernel runs a packet socket's filter (pynetmon/filter/policy.py).
    """
    try:
        return policy.compile_filter(spec, live=True, snaplen=MAX_SNAPLEN)
    except FilterError as exc:
        if not isinstance(spec, str):
            raise
        raise FilterError(f"filter {spec!r}: {exc}") from None


def _dump_path(dump: str | os.PathLike) -> str:
    path = os.fspath(dump)
    return path if path.endswith(".pcap") else path + ".pcap"


class PacketCapture:
    """Capture packets on one or more interfaces into a pcap file (local mode) or a live pcap stream
    (network mode).

    - `capture`: "ingress", "egress", "bidirectional" or "off" (off detaches the dataplane).
    - `filter`: a pcap-filter(7) expression run in the kernel; "all" captures everything and the
      default, None, captures nothing. Classic BPF instructions are accepted too.
    - `snaplen`: bytes kept of each packet (1..MAX_SNAPLEN, 262144).
    - `dump`: local mode's file: a path (".pcap" is appended when missing; an existing file is
      overwritten, never through a symbolic link) or a binary file object (flushed, never closed).
      Opened here, so an unwritable path fails before anything is loaded or attached. `append=True`
      continues an existing pcap file instead (a restarted capture loses nothing it wrote before).
    - `network_mode=True`: no file; packets wait in a buffer of at most `buffer_bytes` (what does not
      fit is dropped and counted) for `stream()`.
    - `ring_bytes`: the kernel ring buffer (a power of two); `mechanism`: TC attach mechanism ("auto",
      "tcx", "clsact").
    - `max_delay`: the longest (seconds, default 0.1) a captured packet waits before it is written to the
      file or queued for the stream, however quiet the link. The kernel wakes the reader only once an
      eighth of the ring is filled (one wakeup per batch, not per packet); the reader also looks every
      `max_delay` and writes each batch it takes at once (one write call per batch).
    - `flush_interval`: seconds between re-measurements of the clock offset (and flushes of a file
      object given as `dump`, beyond the per-batch ones).
    - `max_packets`: deliver (write, or queue for the stream) at most this many packets, like
      `tcpdump -c`; `finished` is set once they are, and later packets are left out (not counted as
      dropped). The owner then detaches.

    Capture, filter and snaplen can be changed while running (assign the attribute, or `update()`
    several at once): a new filter is compiled and verified first, then swapped in on every hook at
    once, so nothing is lost or duplicated in the file and a bad filter leaves the old one running.
    """

    def __init__(self, name: str = "capture", capture: str = "bidirectional", filter: FilterSpec = None,
                 snaplen: int = DEFAULT_SNAPLEN, dump: str | os.PathLike | BinaryIO | None = None,
                 network_mode: bool = False, *, ring_bytes: int = DEFAULT_RING_BYTES,
                 buffer_bytes: int = DEFAULT_BUFFER_BYTES, flush_interval: float = 1.0, mechanism: str = "auto",
                 max_packets: int | None = None, max_delay: float = DEFAULT_MAX_DELAY,
                 append: bool = False):
        problems = _check_options(name, capture, snaplen, dump, network_mode, ring_bytes, buffer_bytes,
                                  flush_interval, mechanism, max_packets, max_delay)
        if problems:
            raise ConfigError(problems)
        self.name = name
        self.network_mode = network_mode
        self.flush_interval = flush_interval
        self.max_delay = max_delay
        self._capture = capture
        self._filter = filter
        self._snaplen = snaplen
        self._interfaces: list[tuple[str, str | None]] = []
        self._lock = threading.RLock()
        self._config_lock = threading.Lock()
        self._closed = False
        self._final_counters: dict | None = None
        self.error: str | None = None
        self._reader: RingReader | None = None
        self._writer: PcapWriter | None = None
        self._buffer: PacketBuffer | None = None
        self._remaining = max_packets  # packets still to deliver (None: no limit)
        self.finished = threading.Event()  # set once max_packets were delivered

        insns = compile_filter(filter)  # a bad filter fails here, before anything is loaded
        self._dataplane = Dataplane(insns, ring_bytes=ring_bytes, mechanism=mechanism)
        try:
            if network_mode:
                self._buffer = PacketBuffer(buffer_bytes)
            else:
                target = dump if hasattr(dump, "write") else _dump_path(dump)
                self._writer = PcapWriter(target, snaplen, append=append)
            self.dump_path = None if network_mode else self._writer.name
            self._wakeup_bytes = ring_bytes // 8
            self._configure()
            self._reader = RingReader(self._dataplane.maps["capture_ring"], self._take, tick=self._tick,
                                      on_error=self._fail, tick_interval=flush_interval,
                                      poll_ms=max(1, round(max_delay * 1000)), batch_bytes=self._wakeup_bytes,
                                      name=name)
        except BaseException:
            self._dataplane.close()
            if self._writer is not None:
                self._writer.close()
            raise

    # ---- settings -------------------------------------------------------------------------------
    @property
    def capture(self) -> str:
        """Which directions are captured: "ingress", "egress", "bidirectional" or "off"."""
        return self._capture

    @capture.setter
    def capture(self, mode: str) -> None:
        self.update(capture=mode)

    @property
    def filter(self) -> FilterSpec:
        """The filter as given (None: capture nothing)."""
        return self._filter

    @filter.setter
    def filter(self, spec: FilterSpec) -> None:
        self.update(filter=spec)

    @property
    def snaplen(self) -> int:
        return self._snaplen

    @snaplen.setter
    def snaplen(self, snaplen: int) -> None:
        self.update(snaplen=snaplen)

    _UNSET = object()

    def update(self, *, capture: str | None = None, filter: FilterSpec = _UNSET,  # type: ignore[assignment]
               snaplen: int | None = None) -> None:
        """Change several settings at once, all or nothing: everything is checked, a new filter loaded and
        new direction hooks attached before anything that runs changes, and an error (a bad filter, an
        interface that vanished) undoes what was done, leaving the capture exactly as it was."""
        problems = []
        if capture is not None and capture not in CAPTURE_MODES:
            problems.append(("capture", f"must be one of {', '.join(CAPTURE_MODES)}, not {capture!r}"))
        if snaplen is not None:
            problems += _check_snaplen(snaplen)
        if problems:
            raise ConfigError(problems)
        with self._lock:
            self._check_open()
            new_object = None
            if filter is not self._UNSET:
                new_object = self._dataplane.build(compile_filter(filter))
            new_mode = capture if capture is not None and capture != self._capture else None
            try:
                added = self._add_directions(new_mode) if new_mode else []
                try:
                    if new_object is not None:
                        self._dataplane.install(new_object)  # puts it behind the added hooks too
                except BaseException as exc:
                    self._detach_links(added, exc)
                    raise
            except BaseException as exc:
                if new_object is not None:
                    new_object.close()
                if new_mode:
                    exc.add_note(f"capture {self.name!r} is unchanged: still {self._capture!r}")
                raise
            if new_object is not None:
                self._filter = filter
            if snaplen is not None and snaplen != self._snaplen:
                self._snaplen = snaplen
                if self._writer is not None:
                    self._writer.raise_snaplen(snaplen)
                self._configure()
            if new_mode:
                self._capture = new_mode
                for direction in DIRECTIONS:  # the new hooks run: only now drop the ones not wanted
                    if direction not in _MODE_DIRECTIONS[new_mode]:
                        self._dataplane.detach(direction=direction)

    def _configure(self) -> None:
        # Its own lock: the reader thread calls this on its tick while close() may hold self._lock
        # waiting for that thread.
        with self._config_lock:
            self._dataplane.configure(snaplen=self._snaplen,
                                      clock_offset_ns=realtime_minus_tai_ns(), wakeup_bytes=self._wakeup_bytes)

    # ---- attaching ------------------------------------------------------------------------------
    def attach(self, ifname: str, netns: str | None = None) -> None:
        """Start capturing on `ifname` (in network namespace `netns`). Several interfaces may share one
        capture. On failure nothing stays attached to that interface."""
        with self._lock:
            self._check_open()
            if self.error:
                raise Error(f"capture {self.name!r} stopped after an error: {self.error}")
            if (ifname, netns) in self._interfaces:
                return
            try:
                for direction in _MODE_DIRECTIONS[self._capture]:
                    self._dataplane.attach(ifname, direction, netns)
            except BaseException:
                self._dataplane.detach(ifname, netns=netns)
                raise
            self._interfaces.append((ifname, netns))
            if not self._reader.running and self._reader.error is None:
                self._reader.start()

    def _add_directions(self, mode: str) -> list[tuple[str, str | None, str]]:
        """Attach the hooks `mode` needs on every interface (added first, so bidirectional → egress keeps a
        hook); return the (ifname, netns, direction) added. On failure, detach those again and raise."""
        added: list[tuple[str, str | None, str]] = []
        try:
            for ifname, netns in self._interfaces:
                for direction in _MODE_DIRECTIONS[mode]:
                    if (ifname, netns, direction) not in self._dataplane.links:
                        self._dataplane.attach(ifname, direction, netns)
                        added.append((ifname, netns, direction))
        except BaseException as exc:
            self._detach_links(added, exc)
            raise
        return added

    def _detach_links(self, keys: list[tuple[str, str | None, str]], cause: BaseException) -> None:
        """Undo `_add_directions` because of `cause`; a hook that will not detach is noted on `cause` (the
        error being handled is the one to raise)."""
        for ifname, netns, direction in keys:
            try:
                self._dataplane.detach(ifname, direction, netns)
            except Exception as exc:  # noqa: BLE001 - keep undoing the others
                cause.add_note(f"undoing it, the {direction} hook on {ifname} did not detach: {exc}")

    @property
    def interfaces(self) -> list[str]:
        """The interfaces attached to, as "ifname" or "ifname@netns"."""
        return [f"{i}@{n}" if n else i for i, n in self._interfaces]

    def detach(self) -> None:
        """Stop: detach from every interface, pass on what is still in the ring, flush and close the file
        (network mode: end the stream once the client has the rest). Counters stay readable."""
        self.close()

    def close(self) -> None:
        """Same as `detach()`; also frees the maps. Safe to call more than once."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            failure = None
            try:
                self._dataplane.detach()
            finally:
                try:
                    if self._reader is not None:
                        self._reader.stop()
                except PcapWriteError as exc:
                    failure = exc
                    self.error = self.error or str(exc)
                try:
                    self._final_counters = self._dataplane.counters()
                finally:
                    self._dataplane.close()
                    if self._reader is not None:
                        self._reader.close()
                    try:
                        if self._writer is not None:
                            self._writer.close()
                    except PcapWriteError as exc:
                        failure = failure or exc
                        self.error = self.error or str(exc)
                    if self._buffer is not None:
                        self._buffer.close()
            if failure is not None:
                raise failure

    def _check_open(self) -> None:
        if self._closed:
            raise Error(f"capture {self.name!r} is detached; make a new PacketCapture")

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self):
        try:
            if not getattr(self, "_closed", True):
                self.close()
        except Exception:  # noqa: BLE001, S110 - interpreter shutdown
            pass

    # ---- data path ------------------------------------------------------------------------------
    def _take(self, ring: BatchRing) -> int:
        """Move every record waiting in the ring to the output (the reader thread, after each wakeup)."""
        if self._writer is not None and self._writer.direct_fd is not None and self._remaining != 0:
            # Straight from the ring to the file: the records are pcap records already.
            written = self._writer.write_from_ring(ring, self._remaining or 0)
            if self._remaining is not None:
                self._remaining -= written
                if not self._remaining:
                    self.finished.set()
            return written
        batch, count = ring.consume_batch(copy=False)
        if count:
            self._deliver(batch, count)
        return count

    def _deliver(self, batch: bytes | memoryview, count: int) -> None:
        # `batch` is a view of the reader's buffer, reused by its next poll: written out here at once, or
        # copied into the stream buffer.
        last = False
        if self._remaining is not None:
            if count >= self._remaining:  # keep the first records only (a batch holds whole records)
                ends = [end for _, end in iter_records(batch)]
                count, last = self._remaining, True
                batch = batch[:ends[count - 1]] if count else b""
            self._remaining -= count
        if count:
            if self._writer is not None:
                self._writer.write_records(batch, count)
                self._writer.flush()  # the batch reaches the file now (see max_delay), the view with it
            else:
                self._buffer.put(bytes(batch), count)
        if last:
            self.finished.set()

    def _tick(self) -> None:
        if self._writer is not None:
            self._writer.flush()
        self._configure()  # follows changes of the TAI offset

    def _fail(self, exc: BaseException) -> None:
        """The reader hit an error it cannot get past (disk full): stop capturing, keep the counters."""
        self.error = str(exc)
        log.error("capture %r stopped: %s", self.name, exc)
        try:
            self._dataplane.detach()
        finally:
            if self._buffer is not None:
                self._buffer.close()

    def stream(self) -> Iterator[bytes]:
        """Network mode: the live pcap byte stream (global header first), until the capture is detached.

        One client at a time; the records that waited in the buffer come first.
        """
        if self._buffer is None:
            raise Error(f"capture {self.name!r} writes a file; stream() needs network_mode=True")
        return self._buffer.stream(self._snaplen, LINKTYPE_ETHERNET)

    # ---- counters -------------------------------------------------------------------------------
    def stats(self) -> dict:
        """Counters and state.

        - seen: packets the filter ran on; matched: packets it accepted;
        - captured: records that entered the kernel ring buffer;
        - dropped_kernel: matched packets lost because the ring was full; dropped_user: records taken
          from the ring but not delivered (network buffer full, or pending when a write failed);
          dropped: both;
        - delivered: records written to the file (passed to the file object) or queued for the stream;
        - error: why the capture stopped by itself (a full disk), else None.
        """
        with self._lock:
            per_direction = self._final_counters if self._closed else self._dataplane.counters()
        total = {field: sum(d[field] for d in per_direction.values()) for field in COUNTER_FIELDS}
        if self._writer is not None:
            delivered, dropped_user = self._writer.packets, self._writer.lost
        else:
            delivered, dropped_user = self._buffer.delivered_packets, self._buffer.dropped_packets
        return {
            "name": self.name,
            "capture": self._capture,
            "filter": self._filter if isinstance(self._filter, (str, type(None))) else "<classic BPF>",
            "snaplen": self._snaplen,
            "interfaces": self.interfaces,
            "running": not self._closed and self.error is None and bool(self._interfaces),
            "seen": total["seen"],
            "matched": total["matched"],
            "captured": total["captured"],
            "captured_bytes": total["captured_bytes"],
            "dropped": total["dropped"] + dropped_user,
            "dropped_kernel": total["dropped"],
            "dropped_user": dropped_user,
            "errors": total["errors"],
            "delivered": delivered,
            "ingress": per_direction["ingress"],
            "egress": per_direction["egress"],
            "error": self.error,
        }

    def __repr__(self) -> str:
        state = "closed" if self._closed else f"on {', '.join(self.interfaces) or 'nothing'}"
        return f"<PacketCapture {self.name!r} {self._capture} filter={self._filter!r} {state}>"


def _check_snaplen(snaplen) -> list[tuple[str, str]]:
    if not isinstance(snaplen, int) or isinstance(snaplen, bool) or not 0 < snaplen <= MAX_SNAPLEN:
        return [("snaplen", f"must be an integer between 1 and {MAX_SNAPLEN}, not {snaplen!r}")]
    return []


def _check_options(name, capture, snaplen, dump, network_mode, ring_bytes, buffer_bytes, flush_interval,
                   mechanism, max_packets, max_delay) -> list[tuple[str, str]]:
    problems: list[tuple[str, str]] = []
    if not isinstance(name, str) or not name:
        problems.append(("name", f"must be a non-empty string, not {name!r}"))
    if capture not in CAPTURE_MODES:
        problems.append(("capture", f"must be one of {', '.join(CAPTURE_MODES)}, not {capture!r}"))
    problems += _check_snaplen(snaplen)
    if network_mode and dump is not None:
        problems.append(("dump", "network mode streams packets and writes no file; give one or the other"))
    if not network_mode and dump is None:
        problems.append(("dump", "a local capture needs a file to write (or network_mode=True)"))
    if not isinstance(ring_bytes, int) or ring_bytes < 4096 or ring_bytes & (ring_bytes - 1):
        problems.append(("ring_bytes", f"must be a power of two of at least 4096, not {ring_bytes!r}"))
    if not isinstance(buffer_bytes, int) or buffer_bytes <= 0:
        problems.append(("buffer_bytes", f"must be a positive integer, not {buffer_bytes!r}"))
    if not isinstance(flush_interval, (int, float)) or flush_interval <= 0:
        problems.append(("flush_interval", f"must be a positive number of seconds, not {flush_interval!r}"))
    if not isinstance(max_delay, (int, float)) or isinstance(max_delay, bool) or not 0.001 <= max_delay <= 10:
        problems.append(("max_delay", f"must be a number of seconds between 0.001 and 10, not {max_delay!r}"))
    if mechanism not in ("auto", "tcx", "clsact"):
        problems.append(("mechanism", f"must be 'auto', 'tcx' or 'clsact', not {mechanism!r}"))
    if max_packets is not None and (not isinstance(max_packets, int) or isinstance(max_packets, bool) or
                                    max_packets <= 0):
        problems.append(("max_packets", f"must be a positive integer or None, not {max_packets!r}"))
    return problems

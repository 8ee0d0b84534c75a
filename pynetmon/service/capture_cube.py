"""A packetcapture cube: one `pynetmon.capture.PacketCapture` with Polycube's settings, plus the
one-packet-at-a-time reader that Polycube's capture client polls (`GET .../packet`).

A PacketCapture ends for good when detached (its file is flushed and closed), so detaching keeps the
finished one (its counters stay readable) and the next attach starts a new one with the same settings.
Changing `networkmode` or `dump` also starts a new one (re-attached where the old one was).

Files: a new cube replaces the file it names (as `tcpdump -w` does); every later PacketCapture of the
same cube (re-attached, re-attached after its interface came back, restored after a daemon restart)
appends to it, so nothing captured is lost. Files are only ever opened inside the capture directory,
never through a symbolic link.

Polycube's behaviour kept (docs/polycube.md, "packetcapture"): no filter set captures nothing; `dump` is a
path to which ".pcap" is added, Polycube's temporary folder `/tmp` standing for the capture directory
(`resolve_dump`); the `dump` field reads as Polycube's sentence ("capture dump in PATH"), `dump-file`
gives the path alone.
"""
from __future__ import annotations

import contextlib
import logging
import os
import stat
import struct
import threading
from collections.abc import Generator
from contextlib import AbstractContextManager
from pathlib import Path, PurePosixPath
from typing import Any

from ..filter.cbpf import MAX_SNAPLEN
from .config import Limits
from .cube import Cube
from .models import Capture, PacketCaptureBody
from .problems import ApiError, bad_request, from_exception

log = logging.getLogger("pynetmon.service")

MICROSECOND_MAGIC = 0xA1B2C3D4  # Polycube's client writes microsecond records after this header
RECORD = struct.Struct("=IIII")  # ts_sec, ts_nsec, caplen, wirelen (nanosecond pcap, native order)


class CaptureCube(Cube):
    """A named capture. `settings` holds Polycube's fields: capture, filter, snaplen, dump, networkmode."""

    service = "packetcapture"

    def __init__(self, name: str, body: PacketCaptureBody, netns: str | None, capture_dir: Path,
                 limits: Limits | None = None, *, restored: bool = False):
        super().__init__(name, netns)
        self.capture_dir = capture_dir
        self.limits = limits or Limits()
        self._append = restored  # False: the next PacketCapture replaces the file; True: appends to it
        self.settings: dict[str, Any] = {"capture": Capture.off.value, "filter": None, "snaplen": MAX_SNAPLEN,
                                         "dump": None, "networkmode": False}
        self._apply_body(body)
        self._cursor: PacketCursor | None = None
        self.capture = self._build()
        self._ended = False  # True once self.capture was closed (detached): the next attach builds anew

    # -- settings ------------------------------------------------------------------------------
    def _apply_body(self, body: PacketCaptureBody) -> dict[str, Any]:
        changes = {k: v for k, v in body.model_dump(exclude_none=True, exclude={"anonimize"}).items()}
        if "capture" in changes:
            changes["capture"] = Capture(changes["capture"]).value
        if "dump" in changes:
            changes["dump"] = str(resolve_dump(self.capture_dir, changes["dump"]))
        self.settings.update(changes)
        return changes

    def _build(self):
        from ..capture import PacketCapture  # imported here: the daemon starts even if capture is broken
        from ..capture.pcap import PcapWriteError
        s = self.settings
        network = bool(s["networkmode"])
        dump = self.dump_file()
        try:
            with self.memory:
                capture = PacketCapture(self.name, capture=s["capture"], filter=s["filter"], snaplen=s["snaplen"],
                                        dump=dump, network_mode=network, append=self._append,
                                        ring_bytes=self.limits.ring_bytes,
                                        buffer_bytes=self.limits.capture_buffer_bytes)
        except PcapWriteError as exc:
            raise bad_request("dump", str(exc)) from exc
        except Exception as exc:
            raise from_exception(exc) from exc
        if not network:
            self._append = True  # this cube's later captures continue the file
        return capture

    def update(self, body: PacketCaptureBody) -> None:
        """Change settings while running; a bad filter leaves the old one running."""
        with self.lock:
            self.check_interface()
            before, appending = dict(self.settings), self._append
            try:
                changes = self._apply_body(body)
                if before["dump"] != self.settings["dump"]:
                    self._append = False  # a new file: replaced, as tcpdump -w does
                if {"networkmode", "dump"} & changes.keys() and any(before[k] != self.settings[k]
                                                                    for k in ("networkmode", "dump")):
                    self._rebuild()
                else:
                    live = {k: changes[k] for k in ("capture", "filter", "snaplen") if k in changes}
                    if live and not self._finished():
                        self.capture.update(**live)
            except Exception as exc:
                self.settings, self._append = before, appending
                raise from_exception(exc) from exc
            log.info("packetcapture %r: %s", self.name, ", ".join(f"{k}={v!r}" for k, v in changes.items()))

    def _finished(self) -> bool:
        return self._ended

    def _rebuild(self) -> None:
        port = self.port
        new = self._build()
        self._close_cursor()
        old, self.capture, self._ended = self.capture, new, False
        try:
            old.close()
        finally:
            if port is not None:
                try:
                    new.attach(port, self.netns)
                except Exception:
                    self.port, self._ifindex = None, 0  # still `wanted`: waits for its interface
                    raise

    # -- attach ----------------------------------------------------------------------------------
    def in_netns(self) -> AbstractContextManager[None]:
        return contextlib.nullcontext()  # PacketCapture attaches in `netns` itself

    def _attach(self, port: str) -> None:
        if self._finished():
            self.capture, self._ended = self._build(), False
        self.capture.attach(port, self.netns)

    def _detach(self) -> None:
        self._close_cursor()
        self._ended = True
        self.capture.close()  # flushes and closes the file; a stream ends once the client has the rest

    def _close(self) -> None:
        self._close_cursor()
        self._ended = True
        self.capture.close()

    # -- reads -----------------------------------------------------------------------------------
    def stats(self) -> dict[str, Any]:
        s = self.capture.stats()
        return {"packets": s.get("delivered", 0), "lost": s.get("dropped", 0), **s}

    def info(self) -> dict[str, Any]:
        out = super().info()
        network = bool(self.settings["networkmode"])
        path = self.dump_file()
        # Polycube's getDump() answers a sentence, not the path (polycube-network/polycube,
        # src/services/pcn-packetcapture/src/Packetcapture.cpp); `dump-file` is the path alone.
        out.update(capture=self.settings["capture"], filter=self.settings["filter"] or "",
                   snaplen=self.settings["snaplen"],
                   dump="the service is running in network mode" if network else f"capture dump in {path}",
                   networkmode=network, anonimize=False)
        out["dump-file"] = path
        stats = self.capture.stats()
        out["stats"] = {k: stats[k] for k in ("seen", "matched", "captured", "delivered", "dropped")}
        if stats.get("error"):
            out["error"] = stats["error"]
        return out

    def dump_file(self) -> str | None:
        """The pcap file a local-mode capture writes (None in network mode)."""
        if self.settings["networkmode"]:
            return None
        dump = self.settings["dump"] or str(self.capture_dir / self.name)
        return dump if dump.endswith(".pcap") else dump + ".pcap"

    def snapshot(self) -> dict[str, Any]:
        return {**{k: v for k, v in self.settings.items() if v is not None}, "port": self.wanted}

    def global_header(self) -> dict[str, int]:
        """Polycube's globalheader fields (microsecond magic: `GET .../packet` gives microseconds)."""
        return {"magic": MICROSECOND_MAGIC, "version_major": 2, "version_minor": 4, "thiszone": 0, "sigfigs": 0,
                "snaplen": int(self.settings["snaplen"]), "linktype": 1}

    def stream(self) -> Generator[bytes, None, None]:
        """The live pcap stream (network mode only)."""
        if not self.settings["networkmode"]:
            raise ApiError(409, f"packetcapture {self.name!r} writes {self.settings['dump'] or 'a file'}; "
                                "set networkmode to true to stream it", [("networkmode", "is false")])
        if self._finished():
            raise ApiError(409, f"packetcapture {self.name!r} is not attached", [("port", "not attached")])
        if self._cursor is not None:
            raise ApiError(409, f"packetcapture {self.name!r} is being read packet by packet (GET .../packet); "
                                "one reader at a time", [("", "busy")])
        try:
            return self.capture.stream()
        except Exception as exc:
            raise from_exception(exc) from exc

    def next_packet(self) -> dict[str, Any]:
        """One packet for Polycube's client (rawdata '' when none came within half a second)."""
        with self.lock:
            if self._cursor is None:
                self._cursor = PacketCursor(self.stream())
            cursor = self._cursor
        return cursor.next()

    def _close_cursor(self) -> None:
        if self._cursor is not None:
            self._cursor.close()
            self._cursor = None


POLYCUBE_TMP = PurePosixPath("/tmp")  # where Polycube writes captures (its default `dump` folder)


def resolve_dump(capture_dir: Path, dump: str) -> Path:
    """Where a capture's `dump` setting writes: a path inside `capture_dir` (relative, or absolute under
    it, or absolute under Polycube's `/tmp`, which stands for `capture_dir`: `/tmp/x` is
    `capture_dir/x`), without '.', '..' or empty components; its directories are created (mode 0700) and
    must be real directories, not symbolic links. ApiError(400) naming `dump` otherwise.

    The file itself is opened with O_NOFOLLOW by the pcap writer, so a link planted there is refused too.
    """
    base = capture_dir.resolve()
    raw = PurePosixPath(dump)
    if raw.is_absolute():
        try:
            raw = raw.relative_to(base)
        except ValueError:
            try:
                raw = raw.relative_to(POLYCUBE_TMP)
            except ValueError:
                raise bad_request("dump", f"{dump!r} is outside the daemon's capture directory {str(base)!r} "
                                          "(absolute paths must be under it, or under /tmp, which stands for "
                                          "it)") from None
    if not raw.parts or any(part in ("", ".", "..") for part in raw.parts) or "\0" in dump:
        raise bad_request("dump", f"{dump!r} does not name a file inside the daemon's capture directory "
                                  f"{str(base)!r} ('.', '..' and empty names are refused)")
    here = base
    for part in raw.parts[:-1]:
        here = here / part
        try:
            os.mkdir(here, 0o700)
        except FileExistsError:
            pass
        except OSError as exc:
            raise bad_request("dump", f"cannot create directory {str(here)!r}: {exc.strerror}") from None
        if not stat.S_ISDIR(os.lstat(here).st_mode):
            raise bad_request("dump", f"{str(here)!r} is a symbolic link or not a directory; captures are "
                                      "written only into real directories inside the capture directory")
    return base / raw


class PacketCursor:
    """Reads a pcap byte stream one record at a time."""

    def __init__(self, stream: Generator[bytes, None, None]):
        self._stream = stream
        self._pending = b""
        self._lock = threading.Lock()
        next(self._stream)  # the global header

    def next(self) -> dict[str, Any]:
        with self._lock:
            while True:
                if len(self._pending) >= RECORD.size:
                    sec, nsec, caplen, wirelen = RECORD.unpack_from(self._pending)
                    end = RECORD.size + caplen
                    if len(self._pending) >= end:
                        data = self._pending[RECORD.size:end]
                        self._pending = self._pending[end:]
                        return {"capturelen": caplen, "packetlen": wirelen, "timestamp-seconds": sec,
                                "timestamp-microseconds": nsec // 1000, "rawdata": data.decode("latin-1")}
                chunk = next(self._stream, None)
                if not chunk:  # nothing within the stream's poll interval, or the capture ended
                    return {"capturelen": 0, "packetlen": 0, "timestamp-seconds": 0,
                            "timestamp-microseconds": 0, "rawdata": ""}
                self._pending += chunk

    def close(self) -> None:
        self._stream.close()

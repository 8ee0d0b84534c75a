"""Save the live pcap stream of a network-mode capture (served over HTTP) into a file.

URL is the stream's address, e.g. http://host:9000/polycube/v1/packetcapture/NAME/stream (the pynetmon
daemon serves `PacketCapture.stream()` there). FILE is overwritten; '-' writes to standard output. The
file is a valid pcap whenever the client stops: at the end of the stream, on Ctrl-C or SIGTERM."""
from __future__ import annotations

import argparse
import http.client
import signal
import struct
import sys
import urllib.error
import urllib.request

from ..capture.pcap import GLOBAL_HEADER, MAGIC_NANOSECOND, iter_records
from ..errors import Error
from ._client import read_token

NAME = "capture-client"
HELP = "save a capture's live pcap stream (network mode) from a URL into a file"
CHUNK = 1 << 16
PCAP_MAGICS = {MAGIC_NANOSECOND, 0xA1B2C3D4}  # either resolution, in our byte order


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("url", help="the stream's URL (http:// or https://)")
    parser.add_argument("file", help="the pcap file to write ('-' for standard output)")
    parser.add_argument("--token-file", metavar="PATH",
                        help="file holding the daemon's bearer token (default: $PYNETMON_TOKEN, if set)")
    parser.add_argument("--timeout", type=float, default=30.0, help="seconds to wait for the server to answer")


class _Stop(Exception):
    pass


def _open_stream(args):
    if not args.url.startswith(("http://", "https://")):
        raise Error(f"URL must start with http:// or https://, not {args.url!r}")
    request = urllib.request.Request(args.url, headers={"Accept": "application/vnd.tcpdump.pcap"})
    token = read_token(args.token_file)
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        return urllib.request.urlopen(request, timeout=args.timeout)
    except urllib.error.HTTPError as exc:
        detail = exc.read(500).decode(errors="replace").strip()
        raise Error(f"{args.url} answered {exc.code} {exc.reason}" + (f": {detail}" if detail else "")) from None
    except http.client.InvalidURL as exc:  # a malformed host or port
        raise Error(f"bad URL {args.url!r}: {exc}") from None
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise Error(f"cannot reach {args.url}: {reason}") from None


def run(args: argparse.Namespace) -> int:
    def on_signal(_signum, _frame):
        raise _Stop

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    out = None
    total = packets = 0
    pending = b""
    try:
        response = _open_stream(args)
        with response:
            header = response.read(GLOBAL_HEADER.size)
            if len(header) < GLOBAL_HEADER.size or struct.unpack_from("=I", header)[0] not in PCAP_MAGICS:
                raise Error(f"{args.url} did not answer with a pcap stream (got {header[:16]!r})")
            try:
                out = sys.stdout.buffer if args.file == "-" else open(args.file, "wb")  # noqa: SIM115
            except OSError as exc:
                raise Error(f"cannot write {args.file!r}: {exc.strerror}") from None
            out.write(header)
            total = len(header)
            while True:
                data = response.read1(CHUNK)
                if not data:
                    break
                # Only whole records reach the file, so that it stays valid wherever the stream stops.
                pending += data
                end = 0
                for _start, end in iter_records(pending):
                    packets += 1
                if end:
                    out.write(pending[:end])
                    out.flush()
                    total += end
                    pending = pending[end:]
    except _Stop:
        pass
    except (ConnectionError, TimeoutError) as exc:
        print(f"pynetmon capture-client: the stream ended: {exc}", file=sys.stderr)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        if out is not None:
            out.flush()
            if out is not sys.stdout.buffer:
                out.close()
    print(f"{packets} packets ({total} bytes) saved to {args.file}", file=sys.stderr)
    return 0

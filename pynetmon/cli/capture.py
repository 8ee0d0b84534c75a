"""Capture packets on an interface with an eBPF dataplane, like `tcpdump -w`.

The filter runs in the kernel; matching packets are written to FILE as a nanosecond pcap
(`-w -`: to standard output, so that `pynetmon capture eth0 -w - | tcpdump -r -` works). Without -w,
one line per packet is printed. Ctrl-C (or SIGTERM) stops cleanly: the dataplane is detached, the
file flushed and closed, and the counts printed on standard error, as tcpdump does.

The filter is -f EXPR, or the words after the interface, with options before, between or after them as
tcpdump allows (`pynetmon capture eth0 tcp port 80 -w x.pcap -c 100`); without one, everything is
captured. -c COUNT stops after COUNT packets.

A capture hosted by the daemon (`pynetmon serve`) is set and shown with polycubectl's words after its
name (-a/-p/--token-file reach the daemon):

    pynetmon capture mysniffer set filter="ip src 10.0.2.11" snaplen=80
    pynetmon capture mysniffer filter show      (also: snaplen show, show dump, show)"""
from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
import time

from ..capture import PacketCapture
from ..capture.capture import CAPTURE_MODES, DEFAULT_RING_BYTES, compile_filter
from ..capture.pcap import RECORD_HEADER, iter_records
from ..errors import Error
from ..filter.cbpf import MAX_SNAPLEN
from . import _client

NAME = "capture"
HELP = "capture packets on an interface into a pcap file (like tcpdump -w)"


def _add_options(parser, defaults: bool = True) -> None:
    """The options; without `defaults`, an option not given leaves the namespace as it is."""
    def default(value):
        return value if defaults else argparse.SUPPRESS

    parser.add_argument("-f", "--filter", default=default(None),
                        help="pcap-filter(7) expression (default: every packet)")
    parser.add_argument("-s", "--snaplen", type=int, default=default(MAX_SNAPLEN),
                        help=f"bytes to keep of each packet (default {MAX_SNAPLEN})")
    parser.add_argument("-c", "--count", type=int, default=default(None), metavar="COUNT",
                        help="stop after COUNT packets (like tcpdump -c)")
    parser.add_argument("-d", "--direction", choices=CAPTURE_MODES[:-1],
                        default=default("bidirectional"), help="which packets to capture (default bidirectional)")
    parser.add_argument("-w", "--write", metavar="FILE", default=default(None),
                        help="write a pcap file (overwritten if it exists); '-' for standard output")
    parser.add_argument("-U", "--packet-buffered", action="store_true", default=default(False),
                        help="write packets within 20 ms instead of 100 ms")
    parser.add_argument("-n", "--netns", default=default(None), help="the network namespace the interface is in")
    parser.add_argument("--ring-size", type=int, default=default(DEFAULT_RING_BYTES), metavar="BYTES",
                        help="kernel ring buffer size, a power of two (default 8 MiB)")
    parser.add_argument("-a", "--address", default=default(_client.DEFAULT_ADDRESS),
                        help="daemon commands (set, show): the daemon's address")
    parser.add_argument("-p", "--port", type=int, default=default(_client.DEFAULT_PORT),
                        help="daemon commands (set, show): the daemon's port")
    parser.add_argument("--token-file", metavar="PATH", default=default(None),
                        help="daemon commands (set, show): file holding the daemon's bearer token")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    _add_options(parser)
    parser.add_argument("iface", help="the network interface to capture on (or a daemon capture's name, "
                                      "before set/show)")
    # Everything after IFACE: filter words with options among them (parsed again in run(), since a
    # subcommand's parser stops at the first positional run).
    parser.add_argument("expression", nargs=argparse.REMAINDER, metavar="FILTER",
                        help="the filter, as for tcpdump (alternative to -f); options may come anywhere")


class _RestParser(argparse.ArgumentParser):
    """Parses what follows IFACE; a mistake there is an error naming it, like any other of this command."""

    def error(self, message):
        raise Error(message)


def _parse_rest(args) -> None:
    """Move the options found among the filter words into `args`; leave the words in args.expression."""
    rest = _RestParser(prog="pynetmon capture", add_help=False)
    _add_options(rest, defaults=False)
    rest.add_argument("words", nargs="*")
    rest.parse_intermixed_args(args.expression, namespace=args)
    args.expression = args.words
    if args.count is not None and args.count <= 0:
        raise Error(f"-c/--count must be a positive number of packets, not {args.count}")


def _filter(args) -> str:
    if args.filter and args.expression:
        raise Error("give the filter either with -f or after the interface, not both")
    text = args.filter or " ".join(args.expression)
    return text if text.strip() else "all"


def _open_output(path: str):
    if path == "-":
        return sys.stdout.buffer
    try:
        return open(path, "wb")
    except OSError as exc:
        raise Error(f"cannot write {path!r}: {exc.strerror}") from None


def run(args: argparse.Namespace) -> int:
    stop = threading.Event()

    def on_signal(_signum, _frame):
        stop.set()

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    output = None
    try:
        _parse_rest(args)
        if _daemon_command(args.expression):
            return _run_daemon_command(args)
        expr = _filter(args)
        compile_filter(expr)  # before the output is opened, so that a bad filter leaves no empty file behind
        if args.write:
            output = _open_output(args.write)
            cap = PacketCapture("cli", capture=args.direction, filter=expr, snaplen=args.snaplen, dump=output,
                                ring_bytes=args.ring_size, max_delay=0.02 if args.packet_buffered else 0.1,
                                max_packets=args.count)
        else:
            cap = PacketCapture("cli", capture=args.direction, filter=expr, snaplen=args.snaplen,
                                network_mode=True, ring_bytes=args.ring_size, flush_interval=0.2,
                                max_packets=args.count)
        with cap:
            cap.attach(args.iface, netns=args.netns)
            where = f"{args.iface} in {args.netns}" if args.netns else args.iface
            print(f"pynetmon capture: listening on {where}, {args.direction}, filter {expr!r}, "
                  f"snapshot length {args.snaplen} bytes", file=sys.stderr)
            if args.write:
                # A Ctrl-C wakes this wait at once (the handler sets `stop`); the count and an error are
                # looked at four times a second: an idle capture costs next to no CPU (tcpdump's costs none).
                while not stop.wait(0.25) and cap.error is None and not cap.finished.is_set():
                    pass
            else:
                _print_packets(cap, stop, args.iface, args.count)
        stats = cap.stats()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        if output is not None and output is not sys.stdout.buffer:
            output.close()
    print(f"{stats['delivered']} packets captured\n{stats['seen']} packets received by filter\n"
          f"{stats['dropped']} packets dropped ({stats['dropped_kernel']} by kernel)", file=sys.stderr)
    if stats["error"]:
        print(f"pynetmon capture: stopped: {stats['error']}", file=sys.stderr)
        return 1
    return 0


# ---- polycubectl's commands on a capture the daemon hosts ----------------------------------------------
# `polycubectl NAME set k=v` is PATCH /polycube/v1/NAME/ {"k": v}; `polycubectl NAME LEAF show` and
# `polycubectl NAME show LEAF` are GET /polycube/v1/NAME/LEAF/ (polycube-network/polycube,
# src/polycubectl/cliargs/cliargs.go): the daemon's generic /polycube/v1/{cube}/... form serves them.

LEAVES = ("capture", "filter", "snaplen", "dump", "networkmode")


def _daemon_command(words: list[str]) -> bool:
    """True when the words after the name are polycubectl's `set ...`, `show [LEAF]` or `LEAF show`
    (none of these words is a pcap-filter(7) keyword, so no filter reads like them)."""
    return bool(words) and (words[0] in ("set", "show") or (len(words) == 2 and words[0] in LEAVES
                                                            and words[1] == "show"))


def _typed(value: str):
    """A value as polycubectl types it: an integer, a float, a boolean, else the string."""
    for convert in (int, float):
        try:
            return convert(value)
        except ValueError:
            pass
    if value.lower() in ("true", "false"):
        return value.lower() == "true"
    return value


def _run_daemon_command(args) -> int:
    name, words = args.iface, args.expression
    client = _client.Client(args.address, args.port, _client.read_token(args.token_file))
    path = f"/polycube/v1/{name}/"
    if words[0] == "set":
        body = {}
        for word in words[1:]:
            key, eq, value = word.partition("=")
            if not eq or key not in LEAVES:
                raise Error(f"set takes KEY=VALUE with KEY one of {', '.join(LEAVES)}, not {word!r}")
            body[key] = value if key in ("capture", "filter", "dump") else _typed(value)
        if not body:
            raise Error("set needs at least one KEY=VALUE (e.g. filter=\"tcp port 80\")")
        client.patch(path, body)
        return 0
    leaf = words[0] if words[0] != "show" else (words[1] if len(words) > 1 else None)
    if len(words) > 2 or (leaf is not None and leaf not in LEAVES):
        raise Error(f"show takes one of {', '.join(LEAVES)} or nothing, not {' '.join(words[1:])!r}")
    answer = client.get(path + (f"{leaf}/" if leaf else ""))
    if isinstance(answer, dict):
        for key, value in answer.items():
            print(f"{key}: {_shown(value)}")
    else:
        print(_shown(answer))
    return 0


def _shown(value) -> str:
    if isinstance(value, (bool, dict, list)) or value is None:
        return json.dumps(value)  # true/false/null and nested fields (stats) as JSON, not Python's repr
    return str(value)


def _print_packets(cap: PacketCapture, stop: threading.Event, iface: str, count: int | None) -> None:
    """One line per packet: time, interface, lengths and a dpkt summary of the headers; at most `count`."""
    stream = cap.stream()
    next(stream)  # the global header
    pending = b""
    printed = 0
    for chunk in stream:
        pending += chunk
        end = 0
        for start, end in iter_records(pending):
            sec, nsec, caplen, wirelen = RECORD_HEADER.unpack_from(pending, start)
            frame = pending[start + RECORD_HEADER.size:end]
            stamp = time.strftime("%H:%M:%S", time.localtime(sec))
            print(f"{stamp}.{nsec:09d} {iface} {_describe(frame)}, length {wirelen}"
                  f"{'' if caplen == wirelen else f' (captured {caplen})'}", flush=True)
            printed += 1
        pending = pending[end:]
        if stop.is_set() or cap.error or (count is not None and printed >= count):
            return


def _describe(frame: bytes) -> str:
    import dpkt  # only the printing mode needs it

    try:
        eth = dpkt.ethernet.Ethernet(frame)
    except (dpkt.UnpackError, IndexError):
        return "truncated Ethernet frame"
    ip = eth.data
    if isinstance(ip, (dpkt.ip.IP, dpkt.ip6.IP6)):
        import ipaddress
        src, dst = ipaddress.ip_address(ip.src), ipaddress.ip_address(ip.dst)
        l4 = ip.data
        if isinstance(l4, (dpkt.tcp.TCP, dpkt.udp.UDP)):
            return f"{type(l4).__name__} {src}.{l4.sport} > {dst}.{l4.dport}"
        return f"IP {src} > {dst} proto {ip.p if hasattr(ip, 'p') else ip.nxt}"
    return f"ethertype {eth.type:#06x}"

"""Run a ready monitor (pynetmon.monitors) in this process: `pynetmon monitor flows -i eth0`.

Without --json, a live table refreshed every second until Ctrl-C (or --duration). With --json, one
snapshot (the monitor's JSON document, docs/monitors.md) on standard output after --duration seconds (or
at Ctrl-C), and exit 0. With --events, the monitor's events as JSON lines. --set key=value sets an
option; the value is read as JSON where it parses (`--set top=10`, `--set aggregate='["src"]'`) and as
a string otherwise (`--set mode=xdp`). Kinds add shorthand flags of their own (`ddos --blacklist IP
SECONDS`, the article's controller flags; `Monitor.cli_flags`). --list shows the kinds there are."""
from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
import time
from typing import TYPE_CHECKING, Any

from .. import monitors
from ..errors import ConfigError

if TYPE_CHECKING:
    from rich.console import Group

NAME = "monitor"
HELP = "run a ready monitor (flows, tcp, drops, ...) and show what it sees"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("kind", nargs="?", help="the monitor kind (--list shows them)")
    parser.add_argument("-i", "--interface", help="interface to attach to (packet monitors)")
    parser.add_argument("-n", "--netns", help="network namespace: name under /run/netns or a path; tracepoint "
                                              "monitors count only its events, packet monitors attach in it")
    parser.add_argument("-d", "--duration", type=float, metavar="S", help="stop after S seconds")
    parser.add_argument("--json", action="store_true", help="print one JSON snapshot at the end")
    parser.add_argument("--events", action="store_true", help="print the monitor's events as JSON lines")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", dest="options",
                        help="an option (value as JSON where it parses, else a string); repeatable")
    parser.add_argument("--interval", type=float, default=1.0, help="seconds between refreshes of the table")
    parser.add_argument("--list", action="store_true", help="list the monitor kinds and exit")
    seen: dict[str, str] = {}
    for kind, cls in monitors.kinds().items():
        for flag in cls.cli_flags:
            if flag.flag in seen:
                raise TypeError(f"{flag.flag} is a flag of both the {seen[flag.flag]} and the {kind} monitor")
            seen[flag.flag] = kind
            parser.add_argument(flag.flag, nargs=len(flag.metavar), metavar=flag.metavar, action="append",
                                dest=_dest(kind, flag.flag), help=f"{kind} only: {flag.help}")


def _dest(kind: str, flag: str) -> str:
    return f"flag_{kind}_{flag.lstrip('-').replace('-', '_')}"


def kind_options(kind: str, args: argparse.Namespace) -> dict[str, Any]:
    """The options of `--set` plus those of the kind's own flags; a flag of another kind is an error."""
    options = parse_options(args.options)
    for other, cls in monitors.kinds().items():
        for flag in cls.cli_flags:
            for values in getattr(args, _dest(other, flag.flag), None) or []:
                if other != kind:
                    raise ConfigError([(flag.flag, f"is a flag of the {other} monitor, not of {kind}")])
                flag.apply(options, list(values))
    return options


def parse_options(items: list[str]) -> dict[str, Any]:
    """`["top=10", "mode=xdp"]` → `{"top": 10, "mode": "xdp"}`; a ConfigError names a malformed item."""
    options: dict[str, Any] = {}
    for item in items:
        key, sep, text = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError([(f"--set {item}", "expected KEY=VALUE")])
        try:
            value = json.loads(text)
        except ValueError:
            value = text
        options[key.strip()] = value
    return options


def _stop_event(duration: float | None) -> threading.Event:
    """Set at Ctrl-C, SIGTERM, or after `duration` seconds."""
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    if duration is not None:
        timer = threading.Timer(duration, done.set)
        timer.daemon = True  # Ctrl-C before the end must not wait for it
        timer.start()
    return done


def _wait(done: threading.Event, step: float | None = None) -> bool:
    """Wait for `done` (at most `step` seconds); True when it is set. Ctrl-C sets it."""
    try:
        return done.wait(step)
    except KeyboardInterrupt:
        done.set()
        return True


def run(args: argparse.Namespace) -> int:
    if args.list or not args.kind:
        for kind, summary in monitors.available().items():
            print(f"{kind:10} {summary}")
        return 0 if args.list else 2
    mon = monitors.create(args.kind, args.interface, args.netns, kind_options(args.kind, args))
    done = _stop_event(args.duration)
    mon.start()
    if args.json or args.events:  # the table says so itself; here tell the user (and scripts) it runs
        print(f"pynetmon monitor: {mon!r} started", file=sys.stderr, flush=True)
    try:
        if args.events:
            _print_events(mon, done)
        elif args.json:
            _wait(done)
        else:
            _live(mon, done, args.interval)
        if args.json:
            json.dump(mon.snapshot(), sys.stdout, indent=1)
            print()
    finally:
        done.set()
        mon.close()
    return 0


def _print_events(mon: monitors.Monitor, done: threading.Event) -> None:
    try:
        while not done.is_set():
            for event in mon.events(timeout=0.2):
                print(json.dumps(event), flush=True)
                if done.is_set():
                    break
            else:
                continue
    except KeyboardInterrupt:
        done.set()


def _live(mon: monitors.Monitor, done: threading.Event, interval: float) -> None:
    from rich.live import Live

    with Live(render(mon.kind, mon.snapshot()), refresh_per_second=4, screen=False) as live:
        while not _wait(done, interval):
            live.update(render(mon.kind, mon.snapshot()))


ROWS = 20


def _cell(value: Any) -> str:
    if isinstance(value, list):
        return ",".join(map(str, value))
    if isinstance(value, float):
        return f"{value:.6g}"
    return "" if value is None else str(value)


def _is_histogram(value: Any) -> bool:
    return isinstance(value, dict) and "buckets" in value and "count" in value


def render(kind: str, snap: dict[str, Any]) -> Group:
    """A rich renderable of any monitor's snapshot: its numbers in one line, each list of records as a
    table (first ROWS rows), each histogram as count and percentiles."""
    from rich.console import Group
    from rich.table import Table
    from rich.text import Text

    from ..monitors.histogram import Histogram

    parts: list[Any] = []
    scalars = {k: v for k, v in snap.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
    head = "  ".join(f"{k}={_cell(v)}" for k, v in scalars.items())
    parts.append(Text(f"{kind} {time.strftime('%H:%M:%S')}  {head}", style="bold"))
    for key, value in snap.items():
        if key == "self" and isinstance(value, dict):
            parts.append(Text("self: " + "  ".join(f"{k}={_cell(v)}" for k, v in value.items() if k != "programs")))
        elif isinstance(value, dict) and value and all(isinstance(v, (int, float)) for v in value.values()):
            parts.append(Text(f"{key}: " + "  ".join(f"{k}={v}" for k, v in value.items())))
        elif _is_histogram(value):
            bounds = [float("inf") if b["le"] == "+Inf" else float(b["le"]) for b in value["buckets"]]
            cum = [b["count"] for b in value["buckets"]]
            counts = [c - p for c, p in zip(cum, [0, *cum[:-1]])]
            h = Histogram(bounds, counts, value["sum"] if isinstance(value["sum"], (int, float)) else 0)
            pct = "  ".join(f"{k}={_cell(v)}" for k, v in h.percentiles(0.5, 0.9, 0.99).items())
            parts.append(Text(f"{key}: count={value['count']}  {pct}"))
        elif isinstance(value, list) and value and isinstance(value[0], dict):
            table = Table(title=f"{key} ({len(value)})", title_justify="left", show_edge=False)
            # raw timestamps say nothing at a glance: the JSON has them
            columns = [c for c in value[0] if not isinstance(value[0][c], dict) and not c.endswith("_ns")]
            for column in columns:
                table.add_column(column, justify="right" if isinstance(value[0][column], (int, float)) else "left")
            for row in value[:ROWS]:
                table.add_row(*(_cell(row.get(c)) for c in columns))
            parts.append(table)
    return Group(*parts)

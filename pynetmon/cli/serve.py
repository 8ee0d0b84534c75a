"""Run the pynetmon daemon: named Dynmon monitors and packet captures driven over REST
(Polycube-compatible routes under /polycube/v1, OpenAPI at /openapi.json), metrics for Prometheus at
/metrics. It listens on loopback unless given --token-file; on SIGTERM/SIGINT it detaches everything
and flushes every capture file."""
from __future__ import annotations

import argparse
import logging
from pathlib import Path

NAME = "serve"
HELP = "run the daemon (REST API + Prometheus /metrics)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--listen", default="127.0.0.1:9000", metavar="HOST:PORT",
                        help="address to listen on (default 127.0.0.1:9000; port 0 picks a free one). "
                             "A non-loopback address needs --token-file")
    parser.add_argument("--token-file", metavar="PATH",
                        help="file with the bearer token every request but GET /metrics must carry (mode 600)")
    parser.add_argument("--protect-metrics", action="store_true",
                        help="require the token for GET /metrics too")
    parser.add_argument("--state-file", metavar="PATH",
                        help="keep cubes (configs and attachments) in this JSON file and restore them at start")
    parser.add_argument("--config", metavar="FILE",
                        help="YAML or JSON file declaring the monitors, Dynmon configs and captures this node runs, "
                             "per interface name or pattern, with ${VAR} from the environment; re-applied as a diff "
                             "on SIGHUP and when its content changes (docs/deploy.md, Declarative configuration)")
    parser.add_argument("--check-config", action="store_true",
                        help="check --config FILE, print the cubes it makes on this node's interfaces (as JSON), "
                             "and exit: 0 when valid, 1 naming every problem (nothing is loaded or attached)")
    parser.add_argument("--config-poll", type=float, default=2.0, metavar="SECONDS",
                        help="how often the config file is looked at for changes (default 2)")
    parser.add_argument("--netns", metavar="NAME",
                        help="attach to interfaces of this network namespace (from /run/netns)")
    parser.add_argument("--capture-dir", default="/tmp/pynetmon", metavar="DIR",
                        help="packet captures write their files here; `dump` paths must be inside it "
                             "(default /tmp/pynetmon)")
    parser.add_argument("--max-body", type=_size, default=1 << 20, metavar="BYTES",
                        help="largest request body accepted (default 1M)")
    parser.add_argument("--compile-timeout", type=float, default=10.0, metavar="SECONDS",
                        help="wall-clock limit of one clang run on Dynmon code (default 10 s; docs/security.md)")
    parser.add_argument("--pin-root", default="/sys/fs/bpf", metavar="DIR",
                        help="Dynmon's _PINNED maps may only be pinned below this directory of the BPF file "
                             "system (default /sys/fs/bpf, as BCC; docs/security.md)")
    from dataclasses import fields

    from ..service.config import Limits
    limits = parser.add_argument_group("limits", "every resource the daemon uses is bounded; a request over a "
                                       "limit is refused with a 4xx naming it (sizes take K, M, G suffixes)")
    for f in fields(Limits):
        size = f.metadata.get("size", False)
        default = f.default
        shown = _show(default, size) if isinstance(default, int) else "raise to the hard limit"
        limits.add_argument(f.metadata["option"], dest=f"limit_{f.name}", type=_size if size else int,
                            default=default, metavar="BYTES" if size else "N",
                            help=f"{f.metadata['help']} (default {shown})")


def _size(text: str) -> int:
    import argparse

    from ..service.config import parse_size
    try:
        return parse_size(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _show(value: int, size: bool) -> str:
    if size:
        for unit, shift in (("G", 30), ("M", 20), ("K", 10)):
            if value >= 1 << shift and value % (1 << shift) == 0:
                return f"{value >> shift}{unit}"
    return str(value)


def run(args: argparse.Namespace) -> int:
    import os
    import sys
    from dataclasses import fields

    from .. import sandbox
    from ..errors import ConfigError, Error
    from ..service import ServiceConfig, serve, state_file
    from ..service.config import Limits, parse_listen, read_token_file

    if not args.compile_timeout > 0:
        raise Error(f"--compile-timeout: {args.compile_timeout} is not a positive number of seconds")
    sandbox.configure(timeout=args.compile_timeout)
    from ..dynmon.sharing import configure_pins
    try:
        configure_pins(args.pin_root.rstrip("/") or "/")
    except ConfigError as exc:
        raise Error(f"--pin-root: {exc.problems[0][1]}") from None
    logging.getLogger("pynetmon.service").setLevel(logging.DEBUG if args.verbose > 1 else logging.INFO)
    host, port = parse_listen(args.listen)
    if args.netns and not os.path.exists(f"/run/netns/{args.netns}"):
        raise Error(f"--netns: no network namespace named {args.netns!r} in /run/netns")
    _check_capture_dir(Path(args.capture_dir))
    if args.state_file:
        # Read once before listening: a broken file is then a one-line error naming --state-file, not a
        # traceback from the ASGI server's start-up.
        state_file.load(Path(args.state_file))
    if args.check_config and not args.config:
        raise Error("--check-config needs --config FILE")
    if args.config:
        loaded = _check_config(Path(args.config))
        if args.check_config:
            return _print_cubes(loaded, args.netns)
    config = ServiceConfig(host=host, port=port,
                           token=read_token_file(args.token_file) if args.token_file else None,
                           protect_metrics=args.protect_metrics, max_body=args.max_body,
                           netns=args.netns, state_file=Path(args.state_file) if args.state_file else None,
                           capture_dir=Path(args.capture_dir),
                           limits=Limits(**{f.name: getattr(args, f"limit_{f.name}") for f in fields(Limits)}),
                           config_file=Path(args.config).absolute() if args.config else None,
                           config_poll=args.config_poll)
    code = serve(config)
    # Every cube is detached and every capture file flushed. Worker threads still inside a request (a
    # compile, a capture stream's read) would hold the exit for seconds while Python joins them: the
    # process ends here instead.
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def _check_config(path: Path):
    """Read and check the config file once before listening: a broken file is a one-line error naming
    --config and each problem's JSON path. (Reloads later keep the running set on a broken file.)"""
    from ..errors import ConfigError, Error
    from ..service import declared

    try:
        return declared.load(path)
    except ConfigError as exc:
        raise Error(f"--config {str(path)!r}: {exc}") from None


def _print_cubes(loaded, netns: str | None) -> int:
    """`--check-config`: the cubes the config makes here, one JSON object a line."""
    import json
    import socket
    import sys

    from .. import netns as _netns
    from ..service import declared

    with _netns.enter(netns):
        present = [name for _, name in socket.if_nameindex()]
    for d in declared.expand(loaded, present).values():
        print(json.dumps({"name": d.name, "service": d.service, "entry": d.entry, "interface": d.interface,
                          "present": d.interface is None or d.interface in present}))
    print(f"{loaded.path}: valid (sha256 {loaded.sha256})", file=sys.stderr)
    return 0


def _check_capture_dir(path: Path) -> None:
    """The daemon (root) writes pcap files into this directory, /tmp/pynetmon by default: refuse one that
    another user could have planted (their own directory, or a symlink to somewhere else)."""
    import os
    import stat

    from ..errors import Error

    try:
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
        info = os.lstat(path)
    except OSError as exc:
        raise Error(f"--capture-dir: cannot create {str(path)!r}: {exc.strerror}") from None
    if stat.S_ISLNK(info.st_mode) or not stat.S_ISDIR(info.st_mode):
        raise Error(f"--capture-dir: {str(path)!r} is not a directory (a symlink is refused)")
    if info.st_uid not in (0, os.geteuid()):
        raise Error(f"--capture-dir: {str(path)!r} belongs to uid {info.st_uid}, who could redirect the capture "
                    "files")
    if info.st_mode & stat.S_IWOTH:
        raise Error(f"--capture-dir: {str(path)!r} is writable by anyone, who could redirect the capture files")

"""The `pynetmon` command. Each subcommand is one module in this package that defines

    NAME = "inject"                       # the subcommand
    HELP = "one line for --help"
    def add_arguments(parser): ...        # argparse options
    def run(args: argparse.Namespace) -> int: ...             # exit status

and is found automatically, so adding a command never touches a shared file.
"""
from __future__ import annotations

import argparse
import importlib
import logging
import pkgutil
import sys

from ..errors import Error


def _commands():
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda i: i.name):
        if info.name.startswith("_"):
            continue
        module = importlib.import_module(f"{__name__}.{info.name}")
        if hasattr(module, "NAME") and hasattr(module, "run"):
            yield module


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="pynetmon", description="eBPF network monitoring and packet capture")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more logging (-vv for libbpf debug)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module in _commands():
        p = sub.add_parser(module.NAME, help=module.HELP, description=(module.__doc__ or module.HELP).strip())
        module.add_arguments(p)
        p.set_defaults(_run=module.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=[logging.WARNING, logging.INFO, logging.DEBUG][min(args.verbose, 2)],
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")
    if not getattr(args, "_run", None):
        parser.print_help()
        return 2
    try:
        return int(args._run(args) or 0)
    except Error as exc:
        print(f"pynetmon {args.command}: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # `pynetmon ... | head`: the reader left; not an error of ours
        sys.stderr.close()
        return 0

"""Print a dynmon monitor's metrics as JSON, like Polycube's dynmon_extractor.py: all of them, one
direction's (-t), or one metric's value (-t and -n: a single value is printed bare, `8`, as Polycube's
extractor prints it). -s saves them to a file instead."""
from __future__ import annotations

import argparse
import json

from ._client import Client, add_connection_arguments

NAME = "extract"
HELP = "read a dynmon monitor's metrics from the daemon as JSON"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("name", help="the monitor's name")
    parser.add_argument("-t", "--type", choices=("ingress", "egress", "all"), default="all",
                        help="which direction's metrics (default all)")
    parser.add_argument("-n", "--name", dest="metric", metavar="METRIC",
                        help="only this metric's value (needs -t ingress or -t egress)")
    parser.add_argument("-s", "--save", action="store_true", help="write the metrics to a file, not stdout")
    parser.add_argument("-o", "--output", default="dump.json", help="file for -s (default dump.json)")
    add_connection_arguments(parser)


def run(args: argparse.Namespace) -> int:
    if args.metric and args.type == "all":
        raise SystemExit("pynetmon extract: -n/--name needs -t ingress or -t egress")
    client = Client.from_args(args)
    url = f"/polycube/v1/dynmon/{args.name}/metrics"
    if args.type != "all":
        url += f"/{args.type}-metrics"
        if args.metric:
            url += f"/{args.metric}/value"
    result = client.get(url)
    if isinstance(result, dict):
        result.pop("_links", None)
    elif args.metric and isinstance(result, list) and len(result) == 1:
        # Polycube's dynmon_extractor.py prints `res[0]` for -n: `8`, not `[8]`. With several entries it
        # would print only the first; we print them all (a hash's other keys are not dropped silently).
        result = result[0]
    text = json.dumps(result, indent=2)
    if args.save:
        with open(args.output, "w") as f:
            f.write(text + "\n")
        print(f"saved to {args.output}")
    else:
        print(text)
    return 0

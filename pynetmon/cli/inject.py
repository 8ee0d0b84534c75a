"""Create (or update) a dynmon monitor on the daemon and attach it to an interface, like Polycube's
dynmon_injector.py: if NAME exists, its dataplane is replaced (the old one keeps running if the new one
is rejected) and it is moved to IFACE if it was attached elsewhere.

CONFIG.json is a dataplane-config ({"ingress-path": ..., "egress-path": ...}) or a single path
({"name", "code", "metric-configs"}); -t picks the paths to inject, and a path not picked is removed
from the running monitor (as Polycube's injector's -t does)."""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from ..errors import Error
from ._client import Client, add_connection_arguments

NAME = "inject"
HELP = "inject a dynmon dataplane-config into the daemon and attach it to an interface"
PATHS = {"ingress": ("ingress-path",), "egress": ("egress-path",), "both": ("ingress-path", "egress-path")}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("name", help="the monitor's name")
    parser.add_argument("iface", help="the network interface to attach it to")
    parser.add_argument("config", help="JSON file with the dataplane-config (or one path's config)")
    parser.add_argument("-t", "--type", choices=tuple(PATHS), default="both",
                        help="which paths to inject (default both)")
    parser.add_argument("-m", "--mode", type=str.upper, choices=("TC", "XDP_SKB", "XDP_DRV"), default="TC",
                        help="hook: TC (default), XDP_SKB (generic XDP) or XDP_DRV (driver XDP, ingress only)")
    add_connection_arguments(parser)


def load_config(path: str, paths: tuple[str, ...]) -> dict:
    """The dataplane-config to send: the file's, reduced to (or spread over) `paths`."""
    try:
        doc = json.loads(Path(path).read_text())
    except OSError as exc:
        raise Error(f"cannot read {path!r}: {exc.strerror}") from None
    except json.JSONDecodeError as exc:
        raise Error(f"{path!r} is not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}") from None
    if not isinstance(doc, dict):
        raise Error(f"{path!r} must hold a JSON object (a dataplane-config), not {type(doc).__name__}")
    if "dataplane-config" in doc and isinstance(doc["dataplane-config"], dict):
        doc = doc["dataplane-config"]
    if "code" in doc:  # one path's config: put it where -t says
        chosen = {p: doc for p in paths}
    else:
        chosen = {p: doc[p] for p in paths if p in doc}
    if not chosen:
        raise Error(f"{path!r} has no {' or '.join(paths)} (keys found: {', '.join(doc) or 'none'})")
    # The dataplane-config replaces the whole running one, as Polycube's injector's does: a path not
    # injected (-t egress: the ingress path) is removed, not left running from an earlier injection.
    return {p: chosen.get(p, {}) for p in PATHS["both"]}


def run(args: argparse.Namespace) -> int:
    config = load_config(args.config, PATHS[args.type])
    client = Client.from_args(args)
    url = f"/polycube/v1/dynmon/{args.name}"
    try:
        cube = client.get(url)
    except Error as exc:
        if getattr(exc, "status", None) != 404:
            raise
        cube = None
    if cube is None:
        print(f"Creating dynmon {args.name!r} ({args.mode})")
        client.post(url, {"dataplane-config": config, "type": args.mode})
    else:
        if cube.get("type", "TC") != args.mode:
            raise Error(f"dynmon {args.name!r} exists with mode {cube.get('type')}, not {args.mode}; "
                        f"delete it first (DELETE {url}) to change the mode")
        print(f"Dynmon {args.name!r} exists: injecting the new dataplane")
        client.put(url + "/dataplane-config", config)
    parent = (cube or {}).get("parent") or ""
    if parent and parent != args.iface:
        print(f"Detaching {args.name!r} from {parent}")
        client.post("/polycube/v1/detach", {"cube": args.name, "port": parent})
    if parent != args.iface:
        print(f"Attaching {args.name!r} to {args.iface}")
        client.post("/polycube/v1/attach", {"cube": args.name, "port": args.iface})
    return 0

"""Shared helpers of the dynmon tests."""
from __future__ import annotations

import json
from pathlib import Path

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "dynmon"


def exchange(sender, receiver, count: int, port: int = 5555, payload: bytes = b"x" * 32) -> None:
    """`sender` sends `count` UDP datagrams to `receiver`, which receives them all before this returns."""
    sink = receiver.socket()
    try:
        sink.bind((receiver.ip, port))
        sink.settimeout(10)
        assert sender.send_udp(receiver.ip, port, count, payload) == count
        for _ in range(count):
            sink.recv(4096)
    finally:
        sink.close()


def example(name: str) -> dict:
    return json.loads((EXAMPLES / f"{name}.json").read_text())


def path_config(code: str, *metrics: tuple, name: str = "test") -> dict:
    """A path object: `metrics` are (metric name, map name[, extra fields]) tuples."""
    configs = []
    for m in metrics:
        entry = {"name": m[0], "map-name": m[1]}
        if len(m) > 2:
            entry.update(m[2])
        configs.append(entry)
    return {"name": name, "code": code, "metric-configs": configs}

"""Shared helpers of the dynmon tests."""
from __future__ import annotations

import json
from pathlib import Path

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "dynmon"


def exchange(sender, receiver, count: int, port: int = 5555, payload: bytes = b"x" * 32) -> None:
    """`sender` sends `count` UDP datagrams to `receiver`, which receives them all before this returns.
    If some never arrive, the failure says where they could have been dropped."""
    sink = receiver.socket()
    received = 0
    try:
        sink.bind((receiver.ip, port))
        sink.settimeout(10)
        assert sender.send_udp(receiver.ip, port, count, payload) == count
        for _ in range(count):
            sink.recv(4096)
            received += 1
    except TimeoutError:
        raise AssertionError(f"{received} of {count} datagrams arrived; {_drop_report(sender, receiver)}") from None
    finally:
        sink.close()


def _drop_report(sender, receiver) -> str:
    """Counters of the places a datagram between two test hosts can be dropped."""
    def link(host) -> str:
        (info,) = json.loads(host.run("ip", "-j", "-s", "-d", "link", "show", "eth0").stdout)
        tx, rx = info["stats64"]["tx"], info["stats64"]["rx"]
        return (f"{host.netns} eth0 {info['operstate']} qdisc {info.get('qdisc')}: tx {tx['packets']} "
                f"(dropped {tx['dropped']}), rx {rx['packets']} (dropped {rx['dropped']})")
    backlog = [int(line.split()[1], 16) for line in Path("/proc/net/softnet_stat").read_text().splitlines()]
    udp = receiver.run("nstat", "-az", "UdpInErrors", "UdpRcvbufErrors", "UdpNoPorts", check=False).stdout
    return f"{link(sender)}; {link(receiver)}; per-CPU backlog drops {backlog}; receiver {' '.join(udp.split())}"


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

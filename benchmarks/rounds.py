"""What the benchmarks share: interleaved rounds, ratios with their spread, the machine's load.

The machine is shared and noisy, so a ratio is only read from measurements of the same round (the
thing and its peer, one right after the other), and it is reported as the median, min and max over
the rounds: a single noisy round then shows as spread instead of passing for a win or a loss.
"""
from __future__ import annotations

import contextlib
import os
import statistics
import subprocess
import time
from collections.abc import Callable, Iterator, Sequence

from pynetmon.testhosts import Host, TestHosts


def env_int(name: str, default: int) -> int:
    """An integer knob from the environment (`make bench-quick` lowers rounds and durations)."""
    value = os.environ.get(name)
    return int(value) if value else default


def load_average() -> str:
    """The 1/5/15-minute load averages, as `uptime` shows them."""
    return "load average " + ", ".join(f"{x:.2f}" for x in os.getloadavg())


def timed_ms(fn: Callable[[], object], before: Callable[[], object] | None = None) -> float:
    """One call of `fn` in ms, after an untimed `before()`."""
    if before is not None:
        before()
    t = time.perf_counter()
    fn()
    return (time.perf_counter() - t) * 1000


def interleave(cases: dict[str, tuple[Callable[[], object], Callable[[], object] | None]], rounds: int,
               warmup: int = 1) -> dict[str, list[float]]:
    """Time every case once per round, in order, `rounds` times (after `warmup` untimed rounds):
    {name: [ms per round]}. `cases` maps a name to (fn, before or None)."""
    for _ in range(warmup):
        for fn, before in cases.values():
            timed_ms(fn, before)
    out: dict[str, list[float]] = {name: [] for name in cases}
    for _ in range(rounds):
        for name, (fn, before) in cases.items():
            out[name].append(timed_ms(fn, before))
    return out


def spread(values: Sequence[float]) -> tuple[float, float, float]:
    """(median, min, max)."""
    return statistics.median(values), min(values), max(values)


def ratios(numerators: Sequence[float], denominators: Sequence[float]) -> tuple[float, float, float]:
    """(median, min, max) of the per-round ratios numerator / denominator."""
    return spread([n / d for n, d in zip(numerators, denominators) if d])


def fmt_spread(values: tuple[float, float, float], digits: int = 2, suffix: str = "") -> str:
    """"median (min-max)"."""
    med, lo, hi = values
    return f"{med:.{digits}f}{suffix} ({lo:.{digits}f}-{hi:.{digits}f})"


def percentile(samples: Sequence[float], q: float) -> float:
    """The q-quantile (nearest rank)."""
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


@contextlib.contextmanager
def iperf_hosts(prefix: str) -> Iterator[tuple[Host, Host]]:
    """Two test hosts with IPv6 off (no router solicitations in the counts) and an iperf3 server on
    the second, stopped and removed on exit: the set-up every throughput benchmark shares."""
    with TestHosts(prefix=prefix) as (a, b):
        for host in (a, b):
            host.run("sysctl", "-q", "-w", "net.ipv6.conf.all.disable_ipv6=1")
        server = b.popen("iperf3", "-s", stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            time.sleep(0.5)  # the server is listening well before this
            yield a, b
        finally:
            server.terminate()
            server.wait()


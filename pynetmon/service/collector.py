"""The daemon's metrics: every dynmon and ready monitor's families (each sample labelled `monitor="NAME"`, so that
monitors exporting the same metric stay apart), plus the daemon's own: packet capture counters and one
`pynetmon_monitor_up` per monitor.

A monitor whose read fails is reported with `pynetmon_monitor_up 0` and a log line; it never fails the
scrape of the others. `DaemonCollector.groups()` keeps each monitor's families apart (what the /metrics
renderer caches, pynetmon/service/metrics_exposition.py); `collect()` merges them (prometheus_client's
Collector interface).
"""
from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from .registry import Registry

if TYPE_CHECKING:
    from .dynmon_cube import DynmonCube
    from .monitor_cube import MonitorCube
    from .reconciler import Reconciler

log = logging.getLogger("pynetmon.service")


@dataclass
class Scrape:
    """One collection: `groups` holds the dynmon families by name (each group: one family per monitor
    exporting that name, all of one type, in monitor order); `daemon` the daemon's own families."""

    groups: dict[str, list[Metric]] = field(default_factory=dict)
    daemon: list[Metric] = field(default_factory=list)


class DaemonCollector:
    """Collects from every cube of `registry` at each scrape."""

    def __init__(self, registry: Registry, reconciler: Reconciler | None = None):
        self.registry = registry
        self.reconciler = reconciler  # with `--config`: the reload metrics

    def scrape(self) -> Scrape:
        """Read every monitor once (each monitor's families come from `Dynmon.families`, unchanged)."""
        out = Scrape()
        up = GaugeMetricFamily("pynetmon_monitor_up", "1 when the monitor's metrics were read", labels=["monitor"])
        monitors: list[DynmonCube | MonitorCube] = [*self.registry.cubes("dynmon"), *self.registry.cubes("monitor")]
        for cube in sorted(monitors, key=lambda c: c.name):
            try:
                families = cube.families()
            except Exception as exc:  # noqa: BLE001 - one broken monitor must not fail the whole scrape
                log.warning("metrics of %s %r: %s", cube.service, cube.name, exc)
                up.add_metric([cube.name], 0)
                continue
            up.add_metric([cube.name], 1)
            for family in families:
                group = out.groups.setdefault(family.name, [])
                if group and group[0].type != family.type:
                    log.warning("%s %r exports %s as a %s, another monitor as a %s: skipped",
                                cube.service, cube.name, family.name, family.type, group[0].type)
                    continue
                group.append(family)
        out.daemon = [up, self._attached(), *self._captures(),
                      *(self.reconciler.families() if self.reconciler is not None else ())]
        return out

    def _attached(self) -> Metric:
        # One sample per cube that has an interface: 0 while that interface is missing (waiting for it).
        gauge = GaugeMetricFamily("pynetmon_attached", "1 when the cube is attached to its interface, 0 while "
                                  "it waits for the interface to appear", labels=["cube", "interface"])
        for cube in sorted(self.registry.cubes(), key=lambda c: c.name):
            if cube.wanted is not None:
                gauge.add_metric([cube.name, cube.wanted], 1 if cube.port is not None else 0)
        return gauge

    def collect(self) -> Iterator[Metric]:
        """prometheus_client's Collector interface: one family per name (new objects; the monitors'
        families are not changed), then the daemon's own."""
        scrape = self.scrape()
        for group in scrape.groups.values():
            first = group[0]
            if len(group) == 1:
                yield first
                continue
            merged = Metric(first.name, first.documentation, first.type, first.unit)
            merged.samples = [s for family in group for s in family.samples]
            yield merged
        yield from scrape.daemon

    def _captures(self) -> Iterator[Metric]:
        cubes = sorted(self.registry.cubes("packetcapture"), key=lambda c: c.name)
        if not cubes:
            return
        packets = CounterMetricFamily("pynetmon_capture_packets", "packets captured", labels=["capture"])
        lost = CounterMetricFamily("pynetmon_capture_lost", "packets lost (buffer full)", labels=["capture"])
        for cube in cubes:
            try:
                stats = cube.stats()
            except Exception as exc:  # noqa: BLE001
                log.warning("stats of packetcapture %r: %s", cube.name, exc)
                continue
            packets.add_metric([cube.name], stats.get("packets", 0))
            lost.add_metric([cube.name], stats.get("lost", 0))
        yield packets
        yield lost

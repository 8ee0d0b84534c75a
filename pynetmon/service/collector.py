"""The daemon's metrics as a prometheus_client Collector: every dynmon monitor's families (each sample
labelled `monitor="NAME"`, so that monitors exporting the same metric stay apart), plus the daemon's
own: packet capture counters and one `pynetmon_monitor_up` per monitor.

A monitor whose read fails is reported with `pynetmon_monitor_up 0` and a log line; it never fails the
scrape of the others.
"""
from __future__ import annotations

import logging
from collections.abc import Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.samples import Sample

from .registry import Registry

log = logging.getLogger("pynetmon.service")


def with_label(family: Metric, name: str, value: str) -> Metric:
    """`family` with label name=value added to every sample (a new Metric; the input is not changed)."""
    out = Metric(family.name, family.documentation, family.type, family.unit)
    out.samples = [Sample(s.name, {name: value, **s.labels}, s.value, s.timestamp, s.exemplar)
                   for s in family.samples]
    return out


class DaemonCollector:
    """Collects from every cube of `registry` at each scrape."""

    def __init__(self, registry: Registry):
        self.registry = registry

    def collect(self) -> Iterator[Metric]:
        up = GaugeMetricFamily("pynetmon_monitor_up", "1 when the monitor's metrics were read", labels=["monitor"])
        merged: dict[str, Metric] = {}
        for cube in sorted(self.registry.cubes("dynmon"), key=lambda c: c.name):
            try:
                families = cube.families()
            except Exception as exc:  # noqa: BLE001 - one broken monitor must not fail the whole scrape
                log.warning("metrics of dynmon %r: %s", cube.name, exc)
                up.add_metric([cube.name], 0)
                continue
            up.add_metric([cube.name], 1)
            for family in families:
                labelled = with_label(family, "monitor", cube.name)
                known = merged.get(family.name)
                if known is None:
                    merged[family.name] = labelled
                elif known.type == family.type:  # same metric from another monitor: one family
                    known.samples.extend(labelled.samples)
                else:
                    log.warning("dynmon %r exports %s as a %s, another monitor as a %s: skipped",
                                cube.name, family.name, family.type, known.type)
        yield from merged.values()
        yield up
        yield from self._captures()

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

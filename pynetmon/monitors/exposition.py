"""Monitor families as OpenMetrics text, through prometheus_client's public exposition API."""
from __future__ import annotations

from collections.abc import Iterable, Iterator

from prometheus_client import CollectorRegistry
from prometheus_client.core import Metric
from prometheus_client.openmetrics.exposition import generate_latest


class _Families:
    def __init__(self, families: Iterable[Metric]):
        self._families = list(families)

    def collect(self) -> Iterator[Metric]:
        return iter(self._families)


def render_openmetrics(families: Iterable[Metric]) -> str:
    """`families` as one OpenMetrics document (ending in `# EOF`)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Families(families))
    return generate_latest(registry).decode()

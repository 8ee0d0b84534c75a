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


def with_labels(families: Iterable[Metric], labels: dict[str, str]) -> list[Metric]:
    """New families whose every sample also carries `labels` (the service's `monitor="NAME"`), put first;
    a sample's own label of the same name is overridden. The given families are not changed."""
    out = []
    for family in families:
        copy = Metric(family.name, family.documentation, family.type, family.unit)
        copy.samples = [s._replace(labels={**labels, **{k: v for k, v in s.labels.items() if k not in labels}})
                        for s in family.samples]
        out.append(copy)
    return out

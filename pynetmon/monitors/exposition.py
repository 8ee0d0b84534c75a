"""Monitor families as OpenMetrics text (written by `pynetmon.exposition`, the one writer of the text
formats), and the service's labelled copies of them."""
from __future__ import annotations

from collections.abc import Iterable

from prometheus_client.core import Metric

from ..exposition import exposition


def render_openmetrics(families: Iterable[Metric]) -> str:
    """`families` as one OpenMetrics document (ending in `# EOF`)."""
    return exposition(list(families))


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

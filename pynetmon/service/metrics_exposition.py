"""The body of `GET /metrics`: every group of families of one name (one per monitor exporting it) as one
family of the exposition, then the daemon's own families, in the format the `Accept` header asks for.

The text is written by `pynetmon.exposition` (the writer and content negotiation of both formats).
Families that arrive with their sample lines already written (`PrerenderedFamily`, what Dynmon's bulk
path gives) cost one join; other families' lines are kept from the previous scrape while the producer
hands over the very same family object (Dynmon does for maps that did not change), so an idle monitor
costs nothing to render.
"""
from __future__ import annotations

import threading

from prometheus_client.core import Metric

from ..exposition import Format, family_lines, group_text, negotiate, render
from .collector import DaemonCollector, Scrape


class MetricsExposition:
    """Renders scrapes; remembers the sample lines of each family of the previous scrape, per format."""

    def __init__(self):
        self._lock = threading.Lock()
        # format → {id(family): (family, its sample lines)}; only the last scrape's
        self._previous: dict[Format, dict[int, tuple[Metric, str]]] = {}
        self.reused = 0      # families whose lines came from the previous scrape (for tests and benchmarks)
        self.rendered = 0    # families whose lines were written (or joined) for this scrape

    def response(self, collector: DaemonCollector, accept: str) -> tuple[bytes, str]:
        """(body, content type) for a request whose Accept header is `accept`."""
        fmt, content_type = negotiate(accept)
        return self.body(collector.scrape(), fmt), content_type

    def body(self, scrape: Scrape, fmt: Format) -> bytes:
        """The exposition of `scrape` in format `fmt`."""
        with self._lock:
            previous = self._previous.get(fmt, {})
        current: dict[int, tuple[Metric, str]] = {}

        def lines(family: Metric) -> str:
            known = previous.get(id(family))
            if known is not None and known[0] is family:
                self.reused += 1
                text = known[1]
            else:
                self.rendered += 1
                text = family_lines(family, fmt)
            current[id(family)] = (family, text)
            return text

        parts = [group_text(group, fmt, lines) for group in scrape.groups.values()]
        parts.append(render(scrape.daemon, fmt).decode("utf-8"))
        with self._lock:
            self._previous[fmt] = current
        return "".join(parts).encode("utf-8")

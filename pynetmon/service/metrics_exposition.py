"""The body of `GET /metrics`, written by prometheus_client, with each monitor's rendered samples kept
for the next scrape.

prometheus_client writes about 4-5 µs per sample, so 100,000 series take ~0.4 s to render whatever is
done before. Most of a scrape's families are often unchanged since the previous one (idle monitors,
flows that stopped); `Dynmon.families` then returns the very same family objects, and their text is
taken from the previous scrape instead of being written again.

The text is still only prometheus_client's: a family is rendered by it on its own, and where several
monitors export one metric name (one family in the exposition), the group is that family's header as
prometheus_client writes it for the first monitor's family, followed by the sample lines of each
monitor's rendering (each rendering minus its own header, and minus OpenMetrics' final `# EOF`, which
the last part, the daemon's own families, brings). No line is written here.
"""
from __future__ import annotations

import threading
from collections.abc import Iterable

from prometheus_client.core import Metric
from prometheus_client.exposition import choose_encoder
from prometheus_client.exposition import generate_latest as generate_prometheus_text
from prometheus_client.openmetrics.exposition import UNDERSCORES
from prometheus_client.openmetrics.exposition import generate_latest as generate_openmetrics

from ..dynmon.openmetrics import render
from .collector import DaemonCollector, Scrape

EOF_LINE = {"openmetrics": b"# EOF\n", "prometheus": b""}
_WRITERS = {generate_openmetrics: "openmetrics", generate_prometheus_text: "prometheus"}


class MetricsExposition:
    """Renders scrapes; remembers the rendered sample lines of each family of the previous scrape, per
    output format."""

    def __init__(self):
        self._lock = threading.Lock()
        # (format, escaping, version) → {id(family): (family, its sample lines)}; only the last scrape's
        self._previous: dict[tuple, dict[int, tuple[Metric, bytes]]] = {}
        self.reused = 0      # families whose lines came from the previous scrape (for tests and benchmarks)
        self.rendered = 0    # families rendered by prometheus_client

    def response(self, collector: DaemonCollector, accept: str) -> tuple[bytes, str]:
        """(body, content type) for a request whose Accept header is `accept` (prometheus_client's own
        content negotiation, `choose_encoder`)."""
        encoder, content_type = choose_encoder(accept)
        writer = _WRITERS.get(getattr(encoder, "func", encoder))
        if writer is None:  # a writer this module does not know: let prometheus_client do all of it
            return encoder(collector), content_type
        options = dict(getattr(encoder, "keywords", {}))
        fmt_key = (writer, options.get("escaping", UNDERSCORES), options.get("version", "1.0.0"))
        return self.body(collector.scrape(), fmt_key), content_type

    def body(self, scrape: Scrape, fmt_key: tuple) -> bytes:
        """The exposition of `scrape` in format `fmt_key` = (format, escaping, version)."""
        with self._lock:
            previous = self._previous.get(fmt_key, {})
        current: dict[int, tuple[Metric, bytes]] = {}
        parts = []
        for group in scrape.groups.values():
            part = self._group(group, fmt_key, previous, current)
            if part is None:  # the renderings do not split as expected: the merged family, rendered whole
                merged = Metric(group[0].name, group[0].documentation, group[0].type, group[0].unit)
                merged.samples = [s for family in group for s in family.samples]
                part = self._write([merged], fmt_key)[:-len(EOF_LINE[fmt_key[0]]) or None]
            parts.append(part)
        parts.append(self._write(scrape.daemon, fmt_key))
        with self._lock:
            self._previous[fmt_key] = current
        return b"".join(parts)

    def _group(self, group: list[Metric], fmt_key: tuple, previous: dict, current: dict) -> bytes | None:
        parts = [self._header(group[0], fmt_key)]
        for family in group:
            known = previous.get(id(family))
            if known is not None and known[0] is family:
                lines = known[1]
                self.reused += 1
            else:
                lines = self._lines(family, fmt_key)
                if lines is None:
                    return None
                self.rendered += 1
            current[id(family)] = (family, lines)
            parts.append(lines)
        return b"".join(parts)

    def _header(self, family: Metric, fmt_key: tuple) -> bytes:
        """What prometheus_client writes for `family` without samples (no final `# EOF`)."""
        empty = Metric(family.name, family.documentation, family.type, family.unit)
        text = self._write([empty], fmt_key)
        return text[:len(text) - len(EOF_LINE[fmt_key[0]])]

    def _lines(self, family: Metric, fmt_key: tuple) -> bytes | None:
        """`family`'s sample lines as prometheus_client writes them, or None when its rendering is not
        header + samples (+ `# EOF`), e.g. the text format's extra `_created` sections."""
        header = self._header(family, fmt_key)
        text = self._write([family], fmt_key)
        eof = EOF_LINE[fmt_key[0]]
        if not text.startswith(header) or not text.endswith(eof) or b"\n# " in text[len(header):len(text) - len(eof)]:
            return None
        return text[len(header):len(text) - len(eof)]

    @staticmethod
    def _write(families: Iterable[Metric], fmt_key: tuple) -> bytes:
        fmt, escaping, version = fmt_key
        if fmt == "prometheus":
            return render(families, fmt, escaping=escaping)
        return render(families, fmt, escaping=escaping, version=version)

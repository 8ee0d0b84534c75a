"""Metric families as text: OpenMetrics 1.0 and Prometheus' text format (0.0.4, and 1.0.0 with name
escaping), with the content negotiation of `GET /metrics`. One home for the text formats.

Families are prometheus_client `Metric` objects (what collectors yield, what Dynmon and the ready
monitors export), but the text is written here: prometheus_client's writers are not built for bulk
(about 4-5 µs a sample, 0.5 s for 100,000 series) and everything below their `generate_latest` is not
its public API. The output is byte for byte what prometheus_client 0.2x writes for the same families
(the tests compare, parse the text back with its parsers and lint it with `promtool check metrics`).

Two ways to a family's sample lines:

* any `Metric`: written sample by sample here (`family_lines`);
* a `PrerenderedFamily`: its producer already wrote the lines in bulk (one label text per series kept
  while the series lives, values formatted column by column, one join; see `pynetmon/dynmon/series.py`)
  and they are used as they are; its `samples` are built only when someone asks for them.

Native histograms (OpenMetrics 2.0) are the one thing not written here: a group holding one is handed
to prometheus_client's public `generate_latest`.
"""
from __future__ import annotations

import functools
import math
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from prometheus_client.core import Metric, Sample

OPENMETRICS = "openmetrics"
PROMETHEUS = "prometheus"
FORMATS = (OPENMETRICS, PROMETHEUS)

UNDERSCORES, ALLOW_UTF8, DOTS, VALUES = "underscores", "allow-utf-8", "dots", "values"
ESCAPINGS = (UNDERSCORES, ALLOW_UTF8, DOTS, VALUES)

CONTENT_TYPE_OPENMETRICS = "application/openmetrics-text; version=1.0.0; charset=utf-8"
CONTENT_TYPE_TEXT_0_0_4 = "text/plain; version=0.0.4; charset=utf-8"
CONTENT_TYPE_TEXT_1_0_0 = "text/plain; version=1.0.0; charset=utf-8"

_LEGACY_METRIC_NAME = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*\Z")
_LEGACY_LABEL_NAME = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*\Z")
# Sample lines suffixed like these go to gauge sections of their own in the text format (which has no
# such sample kinds), as prometheus_client does.
_TEXT_SECTIONS = ("_created", "_gsum", "_gcount")


@dataclass(frozen=True)
class Format:
    """What to write: `kind` "openmetrics" or "prometheus" (text format), how names outside the legacy
    character set are escaped, and the OpenMetrics version (2.0.0 only admits native histograms)."""

    kind: str = OPENMETRICS
    escaping: str = UNDERSCORES
    version: str = "1.0.0"

    def __post_init__(self):
        if self.kind not in FORMATS:
            raise ValueError(f"format must be one of {', '.join(FORMATS)}, not {self.kind!r}")
        if self.escaping not in ESCAPINGS:
            raise ValueError(f"escaping must be one of {', '.join(ESCAPINGS)}, not {self.escaping!r}")

    @property
    def eof(self) -> str:
        """The final line of a whole exposition."""
        return "# EOF\n" if self.kind == OPENMETRICS else ""


def as_format(fmt: Format | str) -> Format:
    """`fmt` as a Format ("openmetrics" / "prometheus" with default escaping)."""
    return fmt if isinstance(fmt, Format) else Format(fmt)


# ---- content negotiation ---------------------------------------------------------------------------

def _version_tuple(version: str) -> tuple:
    out: list[Any] = []
    for part in version.split("."):
        try:
            out.append(int(part))
        except ValueError:
            out.append(part)
    return tuple(out)


def negotiate(accept: str | None) -> tuple[Format, str]:
    """(format, content type) for an `Accept` header, with prometheus_client's rules: the first
    acceptable OpenMetrics (version ≥ 1.0.0, or no version) or text/plain version ≥ 1.0.0 entry
    wins, with its `escaping` parameter; anything else gets the text format 0.0.4."""
    for accepted in (accept or "").split(","):
        tokens = accepted.split(";")
        media = tokens[0].strip()
        params: dict[str, str] = {}
        for token in tokens[1:]:
            if "=" in token:
                key, value = token.strip().split("=", 1)
                params.setdefault(key, value)
        version = params.get("version", "")
        escaping = params.get("escaping", UNDERSCORES)
        if escaping not in ESCAPINGS:
            escaping = UNDERSCORES
        try:
            new_enough = bool(version) and _version_tuple(version) >= (1, 0, 0)
        except TypeError:  # a version such as "1.a": compared like prometheus_client, never newer
            new_enough = False
        if media == "application/openmetrics-text":
            if not version:
                return Format(OPENMETRICS), CONTENT_TYPE_OPENMETRICS
            if new_enough:
                return (Format(OPENMETRICS, escaping, version),
                        f"application/openmetrics-text; version={version}; charset=utf-8; escaping={escaping}")
        elif media == "text/plain" and new_enough:
            return Format(PROMETHEUS, escaping), f"{CONTENT_TYPE_TEXT_1_0_0}; escaping={escaping}"
    return Format(PROMETHEUS), CONTENT_TYPE_TEXT_0_0_4


# ---- names, label values, numbers -------------------------------------------------------------------

def legacy_metric_name(name: str) -> bool:
    """True for names in Prometheus' classic character set (`[a-zA-Z_:][a-zA-Z0-9_:]*`)."""
    return _LEGACY_METRIC_NAME.match(name) is not None


def legacy_label_name(name: str) -> bool:
    """True for classic label names (`[a-zA-Z_][a-zA-Z0-9_]*`, not reserved `__...`)."""
    return _LEGACY_LABEL_NAME.match(name) is not None and not name.startswith("__")


def label_value(value: str) -> str:
    """A label value escaped for both formats: backslash, newline and double quote."""
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _rune_ok(ch: str, i: int, metric: bool) -> bool:
    return ("a" <= ch <= "z") or ("A" <= ch <= "Z") or ch == "_" or ("0" <= ch <= "9" and i > 0) \
        or (metric and ch == ":")


def _escape(s: str, escaping: str, metric: bool) -> str:
    """The character-level escaping of names (what each escaping scheme does to a name)."""
    if escaping == ALLOW_UTF8:
        return label_value(s)
    if escaping == UNDERSCORES:
        return "".join(ch if _rune_ok(ch, i, metric) else "_" for i, ch in enumerate(s))
    if escaping == DOTS:
        out = []
        for i, ch in enumerate(s):
            if ch == "_":
                out.append("__")
            elif ch == ".":
                out.append("_dot_")
            else:
                out.append(ch if _rune_ok(ch, i, metric) else "__")
        return "".join(out)
    out = ["U__"]  # VALUES
    for i, ch in enumerate(s):
        if ch == "_":
            out.append("__")
        elif _rune_ok(ch, i, metric):
            out.append(ch)
        elif 0xD800 <= ord(ch) <= 0xDFFF:
            out.append("_FFFD_")
        else:
            out.append(f"_{ord(ch):x}_")
    return "".join(out)


@functools.lru_cache(maxsize=4096)  # names repeat on every sample: escaped once each
def _name(s: str, escaping: str, metric: bool) -> str:
    legacy = legacy_metric_name(s) if metric else legacy_label_name(s)
    if not s:
        return s
    if escaping == ALLOW_UTF8:
        return _escape(s, escaping, metric) if legacy else f'"{_escape(s, escaping, metric)}"'
    if escaping in (UNDERSCORES, VALUES) and legacy:
        return s
    return _escape(s, escaping, metric)


def metric_name(name: str, escaping: str = UNDERSCORES) -> str:
    """A metric name as written in `# HELP`/`# TYPE` lines under `escaping`."""
    return _name(name, escaping, True)


def label_name(name: str, escaping: str = UNDERSCORES) -> str:
    """A label name as written under `escaping`."""
    return _name(name, escaping, False)


def go_float(value: float) -> str:
    """A sample value as Go (and so Prometheus) writes floats: `1.0`, `1.5e+06`, `+Inf`, `NaN`."""
    if type(value) is int and 0 <= value < 1_000_000:  # counters, mostly: exact as a float, no exponent
        return f"{value}.0"
    d = float(value)
    if d == math.inf:
        return "+Inf"
    if d == -math.inf:
        return "-Inf"
    if math.isnan(d):
        return "NaN"
    s = repr(d)
    dot = s.find(".")
    if d > 0 and dot > 6:  # Go switches to exponents sooner than Python
        mantissa = f"{s[0]}.{s[1:dot]}{s[dot + 1:]}".rstrip("0.")
        return f"{mantissa}e+{dot - 1:02d}"
    return s


def value_lines(values: list, integers: bool) -> list[str]:
    """`go_float(v) + "\\n"` for each of `values`, in bulk: a column of integers that are all below 10^6
    (where Go writes `n.0`) is formatted by one C-level map; other columns value by value."""
    if integers and values and min(values) >= 0 and max(values) < 1_000_000:
        return list(map("{}.0\n".format, values))
    return [go_float(v) + "\n" for v in values]


def labels_text(labels: dict[str, str]) -> str:
    """`k="v",...` in label-name order, for legacy label names (the writer's fast path)."""
    return ",".join([f'{k}="{label_value(v)}"' for k, v in sorted(labels.items())])


# ---- families -----------------------------------------------------------------------------------------

class PrerenderedFamily(Metric):
    """A family whose sample lines were written in bulk by its producer (`lines`: every sample line,
    newline-terminated, with legacy names only, as `family_lines` would write them under any escaping
    but "dots"). `samples` are built on first access by `make_samples` (for collectors, tests, other
    writers); assigning `samples` drops `lines`, which then no longer describe them."""

    def __init__(self, name: str, documentation: str, typ: str, lines: str,
                 make_samples: Callable[[], list[Sample]], unit: str = ""):
        super().__init__(name, documentation, typ, unit)
        self._samples: list[Sample] | None = None
        self._make_samples: Callable[[], list[Sample]] | None = make_samples
        self.lines: str | None = lines

    @property
    def samples(self) -> list[Sample]:
        if self._samples is None:
            make, self._make_samples = self._make_samples, None
            self._samples = make() if make is not None else []
        return self._samples

    @samples.setter
    def samples(self, value: list[Sample]) -> None:
        self._samples = value
        self._make_samples = None
        self.lines = None


class NativeHistogramError(Exception):
    """A family holds a native histogram sample: written by prometheus_client instead."""


@functools.lru_cache(maxsize=4096)
def _sample_name(name: str, escaping: str) -> str:
    """A sample name as OpenMetrics writes it in front of the labels (escaped character by character,
    as a label name)."""
    return _escape(name, escaping, False)


def _sample_line_openmetrics(family: Metric, s: Sample, fmt: Format) -> str:
    escaping = fmt.escaping
    legacy_name = legacy_metric_name(s.name)
    labelstr = ""
    if escaping == ALLOW_UTF8 and not legacy_name:
        labelstr = metric_name(s.name, escaping) + ("," if s.labels else "")
    if s.labels:
        labelstr += ",".join([f'{label_name(k, escaping)}="{label_value(v)}"' for k, v in sorted(s.labels.items())])
    if labelstr:
        labelstr = "{" + labelstr + "}"
    exemplar = _exemplar(family, s) if s.exemplar else ""
    timestamp = f" {s.timestamp}" if s.timestamp is not None else ""
    if s.native_histogram:
        raise NativeHistogramError
    value = go_float(s.value) if s.value is not None else ""
    if escaping != ALLOW_UTF8 or legacy_name:
        return f"{_sample_name(s.name, escaping)}{labelstr} {value}{timestamp}{exemplar}\n"
    return f"{labelstr} {value}{timestamp}{exemplar}\n"


def _exemplar(family: Metric, s: Sample) -> str:
    ok = (family.type == "counter" and s.name.endswith("_total")) or \
         (family.type == "gaugehistogram" and s.name.endswith("_bucket")) or \
         (family.type == "histogram" and (s.name.endswith("_bucket") or s.name == family.name))
    if not ok:
        raise ValueError(f"Metric {family.name} has exemplars, but is not a histogram bucket or counter")
    ex = s.exemplar
    labels = "{" + ",".join([f'{k}="{label_value(v)}"' for k, v in sorted(ex.labels.items())]) + "}"
    if ex.timestamp is not None:
        return f" # {labels} {go_float(ex.value)} {ex.timestamp}"
    return f" # {labels} {go_float(ex.value)}"


def _sample_line_text(s: Sample, fmt: Format) -> str:
    escaping = fmt.escaping
    if s.native_histogram:
        raise NativeHistogramError
    labelstr = ",".join([f'{label_name(k, escaping)}="{label_value(v)}"' for k, v in sorted(s.labels.items())]) \
        if s.labels else ""
    timestamp = f" {int(float(s.timestamp) * 1000):d}" if s.timestamp is not None else ""
    value = go_float(s.value)
    if escaping != ALLOW_UTF8 or legacy_metric_name(s.name):
        labelstr = "{" + labelstr + "}" if labelstr else ""
        return f"{metric_name(s.name, escaping)}{labelstr} {value}{timestamp}\n"
    comma = "," if labelstr else ""
    return f"{{{metric_name(s.name, escaping)}{comma}{labelstr}}} {value}{timestamp}\n"


def _text_name_and_type(family: Metric) -> tuple[str, str]:
    """The text format's family name and type (it names counters after their `_total` sample)."""
    name, typ = family.name, family.type
    if typ == "counter":
        return name + "_total", typ
    if typ == "info":
        return name + "_info", "gauge"
    return name, {"stateset": "gauge", "gaugehistogram": "histogram", "unknown": "untyped"}.get(typ, typ)


def header(family: Metric, fmt: Format | str = OPENMETRICS) -> str:
    """`# HELP`, `# TYPE` (and OpenMetrics' `# UNIT`) lines of `family`."""
    fmt = as_format(fmt)
    if fmt.kind == OPENMETRICS:
        name = metric_name(family.name, fmt.escaping)
        out = f"# HELP {name} {label_value(family.documentation)}\n# TYPE {name} {family.type}\n"
        return out + (f"# UNIT {name} {family.unit}\n" if family.unit else "")
    text_name, typ = _text_name_and_type(family)
    name = metric_name(text_name, fmt.escaping)
    doc = family.documentation.replace("\\", "\\\\").replace("\n", "\\n")
    return f"# HELP {name} {doc}\n# TYPE {name} {typ}\n"


def family_lines(family: Metric, fmt: Format | str = OPENMETRICS) -> str:
    """The sample lines of `family` (no header). In the text format, `_created`/`_gsum`/`_gcount`
    samples are left out: `group_text` writes them in sections of their own."""
    fmt = as_format(fmt)
    if isinstance(family, PrerenderedFamily) and family.lines is not None and fmt.escaping != DOTS:
        return family.lines
    if fmt.kind == OPENMETRICS:
        two = _version_tuple(fmt.version) >= (2, 0, 0)
        return "".join([_sample_line_openmetrics(family, s, fmt) for s in family.samples
                        if two or not s.native_histogram])
    sections = {family.name + suffix for suffix in _TEXT_SECTIONS}
    return "".join([_sample_line_text(s, fmt) for s in family.samples if s.name not in sections])


def _text_sections(group: list[Metric], fmt: Format) -> str:
    """The text format's extra gauge sections for the OpenMetrics-only samples of a group."""
    first = group[0]
    found: dict[str, list[str]] = {}
    for family in group:
        if isinstance(family, PrerenderedFamily) and family.lines is not None:
            continue  # prerendered families never hold such samples
        for s in family.samples:
            for suffix in _TEXT_SECTIONS:
                if s.name == first.name + suffix:
                    found.setdefault(suffix, []).append(_sample_line_text(s, fmt))
                    break
    out = []
    doc = first.documentation.replace("\\", "\\\\").replace("\n", "\\n")
    for suffix, lines in sorted(found.items()):
        name = metric_name(first.name + suffix, fmt.escaping)
        out.append(f"# HELP {name} {doc}\n# TYPE {name} gauge\n")
        out.extend(lines)
    return "".join(out)


def group_text(group: list[Metric], fmt: Format | str = OPENMETRICS,
               lines: Callable[[Metric], str] | None = None) -> str:
    """One family in the exposition made of several families of one name and type (e.g. one per
    monitor), without the final `# EOF`: the first one's header, then every family's samples.
    `lines(family)` may supply sample lines kept from earlier (default: `family_lines`)."""
    fmt = as_format(fmt)
    get = lines or (lambda family: family_lines(family, fmt))
    try:
        parts = [header(group[0], fmt)]
        parts.extend(get(family) for family in group)
        if fmt.kind == PROMETHEUS:
            parts.append(_text_sections(group, fmt))
        return "".join(parts)
    except NativeHistogramError:
        return _by_prometheus_client(group, fmt)


def _by_prometheus_client(group: list[Metric], fmt: Format) -> str:
    """A group with native histograms, written by prometheus_client's public `generate_latest`."""
    from prometheus_client.exposition import generate_latest as generate_text
    from prometheus_client.openmetrics.exposition import generate_latest as generate_openmetrics

    merged = Metric(group[0].name, group[0].documentation, group[0].type, group[0].unit)
    merged.samples = [s for family in group for s in family.samples]

    class _One:
        def collect(self):
            return [merged]

    if fmt.kind == OPENMETRICS:
        text = generate_openmetrics(_One(), escaping=fmt.escaping, version=fmt.version).decode("utf-8")
        return text.removesuffix("# EOF\n")
    return generate_text(_One(), escaping=fmt.escaping).decode("utf-8")


def render(families: Iterable[Metric], fmt: Format | str = OPENMETRICS) -> bytes:
    """A whole exposition of `families` (each its own family in the text), ending with `# EOF` in
    OpenMetrics. Byte for byte what prometheus_client's `generate_latest` writes for them."""
    fmt = as_format(fmt)
    parts = [group_text([family], fmt) for family in families]
    parts.append(fmt.eof)
    return "".join(parts).encode("utf-8")


def exposition(families: Iterable[Metric], fmt: Format | str = OPENMETRICS) -> str:
    """`render` as text."""
    return render(families, fmt).decode("utf-8")

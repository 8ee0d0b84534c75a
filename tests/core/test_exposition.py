"""pynetmon.exposition, our writer of OpenMetrics and the Prometheus text format: byte for byte what
prometheus_client writes for the same families (every type, escaping, odd names, label values with
quotes, backslashes, newlines and UTF-8), parsed back by prometheus_client's parsers to the same samples,
accepted by `promtool check metrics`; and content negotiation as prometheus_client does it."""
from __future__ import annotations

import math
import shutil
import subprocess

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    InfoMetricFamily,
    Metric,
    Sample,
    StateSetMetricFamily,
    SummaryMetricFamily,
    UnknownMetricFamily,
)
from prometheus_client.exposition import choose_encoder
from prometheus_client.exposition import generate_latest as generate_text
from prometheus_client.openmetrics.exposition import generate_latest as generate_openmetrics
from prometheus_client.openmetrics.parser import text_string_to_metric_families as parse_openmetrics
from prometheus_client.parser import text_string_to_metric_families as parse_text
from prometheus_client.samples import Exemplar, Timestamp

from pynetmon import exposition as ex
from pynetmon.testing import IN_CI


class _Fams:
    def __init__(self, fams):
        self.fams = fams

    def collect(self):
        return self.fams


def _reference(fams, fmt: ex.Format) -> bytes:
    if fmt.kind == ex.OPENMETRICS:
        return generate_openmetrics(_Fams(fams), escaping=fmt.escaping, version=fmt.version)
    return generate_text(_Fams(fams), escaping=fmt.escaping)


LEGACY_NAME = st.from_regex(r"[a-zA-Z_][a-zA-Z0-9_]{0,12}", fullmatch=True).filter(lambda n: not n.startswith("__"))
ANY_NAME = st.one_of(LEGACY_NAME, st.from_regex(r"[a-z:][a-z0-9_:.]{0,8}", fullmatch=True),
                     st.text(st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=8))
LABEL_NAME = st.one_of(LEGACY_NAME, st.text(st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=6)
                       .filter(lambda n: not n.startswith("__")))
LABEL_VALUE = st.text(st.one_of(st.sampled_from('"\\\n{}=,# '), st.characters(blacklist_categories=("Cs",))),
                      max_size=12)
VALUE = st.one_of(st.integers(0, 2**64 - 1), st.integers(-10**9, 10**9),
                  st.floats(allow_nan=True, allow_infinity=True), st.sampled_from([0, 999_999, 1_000_000, 1e-7, 2.5]))
FORMATS = st.builds(ex.Format, st.sampled_from(ex.FORMATS), st.sampled_from(ex.ESCAPINGS),
                    st.sampled_from(["1.0.0", "2.0.0"]))


@st.composite
def families(draw, names=ANY_NAME, label_names=LABEL_NAME):
    """Arbitrary families: every type, raw samples with any names, labels, values, timestamps."""
    out = []
    for _ in range(draw(st.integers(1, 3))):
        name = draw(names)
        typ = draw(st.sampled_from(["counter", "gauge", "histogram", "summary", "unknown", "info", "stateset",
                                    "gaugehistogram"]))
        unit = draw(st.sampled_from(["", "", "seconds"]))
        fam = Metric(name, draw(LABEL_VALUE), typ, unit)
        keys = draw(st.lists(label_names, max_size=3, unique=True))
        for _ in range(draw(st.integers(0, 4))):
            suffix = draw(st.sampled_from(["", "_total", "_bucket", "_count", "_sum", "_created", "_gsum", "_x"]))
            labels = {k: draw(LABEL_VALUE) for k in keys}
            ts = draw(st.one_of(st.none(), st.floats(0, 2e9), st.builds(Timestamp, st.integers(0, 2**31),
                                                                         st.integers(0, 999_999_999))))
            fam.samples.append(Sample(fam.name + suffix, labels, draw(VALUE), ts))
        out.append(fam)
    return out


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(families(), FORMATS)
def test_any_family_is_written_as_prometheus_client_writes_it(fams, fmt):
    assert ex.render(fams, fmt) == _reference(fams, fmt)


@settings(max_examples=200)
@given(VALUE)
def test_values_are_written_as_go_does(value):
    from prometheus_client.utils import floatToGoString  # the reference only; the writer has its own
    assert ex.go_float(value) == floatToGoString(value)
    if isinstance(value, int) and 0 <= value < 1_000_000:
        assert ex.value_lines([value], True) == [floatToGoString(value) + "\n"]
    assert ex.value_lines([value], isinstance(value, int)) == [floatToGoString(value) + "\n"]


@st.composite
def typed_families(draw):
    """Families as collectors build them (add_metric), legacy names, arbitrary label values."""
    out, used = [], set()
    for i in range(draw(st.integers(1, 4))):
        name = draw(LEGACY_NAME) + f"_{i}"
        if name in used:
            continue
        used.add(name)
        labels = draw(st.lists(LEGACY_NAME, max_size=3, unique=True).filter(lambda ls: "le" not in ls
                                                                            and "quantile" not in ls))
        typ = draw(st.sampled_from(["counter", "gauge", "histogram", "summary", "unknown"]))
        help_text = draw(LABEL_VALUE)
        fam = {"counter": CounterMetricFamily, "gauge": GaugeMetricFamily, "histogram": HistogramMetricFamily,
               "summary": SummaryMetricFamily, "unknown": UnknownMetricFamily}[typ](name, help_text, labels=labels)
        seen = set()
        for _ in range(draw(st.integers(0, 4))):
            values = tuple(draw(LABEL_VALUE) for _ in labels)
            if values in seen:
                continue
            seen.add(values)
            number = draw(st.integers(0, 2**53))
            if typ == "histogram":
                fam.add_metric(list(values), [("1.0", number), ("+Inf", number + 1)], sum_value=number)
            elif typ == "summary":
                fam.add_metric(list(values), count_value=number, sum_value=number * 2)
            else:
                fam.add_metric(list(values), number)
        out.append(fam)
    return out


def _samples(parsed) -> dict:
    out = {}
    for fam in parsed:
        for s in fam.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def _expected(fams) -> dict:
    return {(s.name, tuple(sorted(s.labels.items()))): float(s.value) for fam in fams for s in fam.samples}


@settings(max_examples=150, suppress_health_check=[HealthCheck.too_slow])
@given(typed_families())
def test_parsed_back_by_prometheus_client(fams):
    om = ex.exposition(fams, "openmetrics")
    assert _samples(parse_openmetrics(om)) == _expected(fams)
    text = ex.exposition(fams, "prometheus")
    assert _samples(parse_text(text)) == _expected(fams)


def _promtool(text: str) -> subprocess.CompletedProcess:
    return subprocess.run(["promtool", "check", "metrics"], input=text, capture_output=True, text=True, check=False)


@pytest.fixture(scope="module")
def promtool():
    if not shutil.which("promtool"):
        if IN_CI:
            pytest.fail("promtool (Debian package prometheus) is not installed")
        pytest.skip("promtool (Debian package prometheus) not installed")


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(typed_families())
def test_promtool_accepts_both_formats(promtool, fams):
    proc = _promtool(ex.exposition(fams, "prometheus"))
    # Lint findings (exit 3: a counter without _total, missing help) are style; a parse error is exit 1.
    assert proc.returncode in (0, 3), proc.stdout + proc.stderr
    assert "error while linting" not in proc.stderr, proc.stderr
    # promtool 2.42 parses OpenMetrics with its text-format parser, which knows no `\"` in HELP (an
    # OpenMetrics escape) nor the type "unknown": the OpenMetrics check leaves those out.
    for fam in fams:
        fam.documentation = fam.documentation.replace('"', "'")
    proc = _promtool(ex.exposition([f for f in fams if f.type != "unknown"], "openmetrics"))
    assert proc.returncode in (0, 3), proc.stdout + proc.stderr
    assert "error while linting" not in proc.stderr, proc.stderr


def test_promtool_on_label_values_that_need_escaping(promtool):
    fam = CounterMetricFamily("odd_values", "help with \\ and \n and \"", labels=["v"])
    for v in ['"quoted"', "back\\slash", "new\nline", "ünïcødé ✓", "", "a=b,c{d}"]:
        fam.add_metric([v], 1)
    text = ex.exposition([fam], "prometheus")
    proc = _promtool(text)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    parsed = {s.labels["v"] for s in next(iter(parse_text(text))).samples}
    assert parsed == {'"quoted"', "back\\slash", "new\nline", "ünïcødé ✓", "", "a=b,c{d}"}


def test_the_other_family_kinds():
    info = InfoMetricFamily("build", "build info", value={"version": "1.2", "commit": 'a"b'})
    states = StateSetMetricFamily("state", "a state set", value={"up": True, "down": False})
    hist = HistogramMetricFamily("lat", "latency", buckets=[("0.5", 1), ("+Inf", 3)], sum_value=2.0)
    counter = CounterMetricFamily("req", "requests", value=3, created=1700000000.5)
    exemplar = CounterMetricFamily("ex", "exemplar", labels=[])
    exemplar.samples.append(Sample("ex_total", {}, 1, None, Exemplar({"trace": "x"}, 1.0, 12.5)))
    fams = [info, states, hist, counter, exemplar]
    for kind in ex.FORMATS:
        assert ex.render(fams, kind) == _reference(fams, ex.Format(kind))


def test_prerendered_family_uses_its_lines_and_builds_samples_on_demand():
    calls = []

    def make():
        calls.append(1)
        return [Sample("x_total", {"k": "1"}, 2)]

    fam = ex.PrerenderedFamily("x", "h", "counter", 'x_total{k="1"} 2.0\n', make)
    assert ex.render([fam]) == b'# HELP x h\n# TYPE x counter\nx_total{k="1"} 2.0\n# EOF\n'
    assert calls == []
    assert ex.render([fam]) == generate_openmetrics(_Fams([fam]))  # prometheus_client reads .samples
    assert calls == [1]
    fam.samples = [Sample("x_total", {"k": "1"}, 3)]  # samples changed: the lines no longer hold
    assert fam.lines is None and b"x_total{k=\"1\"} 3.0" in ex.render([fam])
    # "dots" escaping rewrites even legacy names: prerendered lines are not used for it.
    dots = ex.Format(ex.OPENMETRICS, ex.DOTS)
    fresh = ex.PrerenderedFamily("x_y", "h", "gauge", "x_y 1.0\n", lambda: [Sample("x_y", {}, 1)])
    assert ex.render([fresh], dots) == _reference([Metric("x_y", "h", "gauge")], dots).replace(
        b"# EOF", b"x__y 1.0\n# EOF")


def test_group_of_families_of_one_name():
    a = CounterMetricFamily("flows", "per flow", labels=["monitor"])
    a.add_metric(["m1"], 1, created=5.0)
    b = CounterMetricFamily("flows", "per flow", labels=["monitor"])
    b.add_metric(["m2"], 2, created=6.0)
    merged = Metric("flows", "per flow", "counter")
    merged.samples = a.samples + b.samples
    for kind in ex.FORMATS:
        fmt = ex.Format(kind)
        assert (ex.group_text([a, b], fmt) + fmt.eof).encode() == _reference([merged], fmt)


ACCEPTS = ["", "text/plain", "text/plain; version=0.0.4", "text/plain;version=1.0.0;escaping=allow-utf-8",
           "application/openmetrics-text", "application/openmetrics-text; version=1.0.0",
           "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5",
           "application/openmetrics-text; version=0.0.1", "application/openmetrics-text; version=2.0.0; escaping=dots",
           "application/openmetrics-text; version=1.0.0; escaping=values", "application/openmetrics-text; escaping=bogus",
           "application/json, */*", "text/plain;version=1.0.0;escaping=nonsense"]


@pytest.mark.parametrize("accept", ACCEPTS)
def test_negotiation_matches_prometheus_client(accept):
    encoder, content_type = choose_encoder(accept)
    fmt, ours = ex.negotiate(accept)
    assert ours == content_type
    fam = GaugeMetricFamily("a.b_c", "h", value=1)
    assert ex.render([fam], fmt) == encoder(_Fams([fam]))


def test_bad_format_names_the_choices():
    with pytest.raises(ValueError, match="openmetrics, prometheus"):
        ex.render([], "json")
    assert math.isnan(float(ex.go_float(float("nan"))))

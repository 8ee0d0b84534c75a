"""deploy/grafana/pynetmon.json: an importable dashboard whose every PromQL expression names only metrics
pynetmon exports, taken from a real daemon's /metrics with every ready monitor kind and a Dynmon
dataplane running (not from a list kept by hand), and which a real Prometheus evaluates, with the
`node` label set as a target label."""
from __future__ import annotations

import json
import re
import time
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from service.daemon import Daemon
from service.dataplanes import UDP_PORT, counter_config
from service.test_prometheus import _query, prometheus  # noqa: F401 - the fixture is used by name

DASHBOARD = Path(__file__).resolve().parents[2] / "deploy" / "grafana" / "pynetmon.json"
# What Grafana puts in place of the dashboard's variables when the query runs ("All" is the allValue).
VARIABLES = {"$__rate_interval": "1m", "$node": ".*", "$monitor": ".+", "$dynmon_metric": "udp_packets_total"}
# Words of PromQL that are not metric names (aggregation modifiers, set operators, literals).
KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "bool", "offset", "and", "or",
            "unless", "inf", "nan"}
# The sample names each family type writes (OpenMetrics).
SUFFIXES = {"counter": ("_total", "_created"), "gauge": ("",), "histogram": ("_bucket", "_count", "_sum", "_created"),
            "summary": ("", "_count", "_sum", "_created"), "info": ("_info",), "stateset": ("",),
            "gaugehistogram": ("_bucket", "_gcount", "_gsum"), "unknown": ("",)}


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression selects: bare selectors and `__name__="..."` matchers
    (a `__name__=~` regex is a choice left to the user: not a name)."""
    names = set(re.findall(r'__name__\s*=\s*"([^"]*)"', expr))
    text = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)  # strings: label values, regexes
    text = re.sub(r"\{[^}]*\}", "", text)  # label matchers
    text = re.sub(r"\[[^\]]*\]", "", text)  # ranges and subqueries
    text = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", text)  # label lists
    for match in re.finditer(r"(?<![\w.$])[A-Za-z_:][A-Za-z0-9_:]*", text):
        word = match.group()
        if text[match.end():].lstrip().startswith("(") or word.lower() in KEYWORDS:
            continue  # a function or an aggregation, or a keyword
        names.add(word)
    return names


def test_metric_names_of_promql():
    assert metric_names('sum by (node, le) (rate(a_bucket{node=~"$node", x="by(y)"}[$__rate_interval]))') == {"a_bucket"}
    assert metric_names("histogram_quantile(0.99, x) / on (node) group_left (pod) y_total > 1e6") == {"x", "y_total"}
    assert metric_names('topk(10, {__name__="flow_bytes_total"}) or absent(up)') == {"flow_bytes_total", "up"}
    assert metric_names('rate({__name__=~"$m", monitor="m"}[5m] offset 1h)') == set()


def _dashboard() -> dict:
    return json.loads(DASHBOARD.read_text())


def _expressions(dashboard: dict) -> list[str]:
    exprs = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
    exprs += [v["query"]["query"] for v in dashboard["templating"]["list"] if v["type"] == "query"]
    return exprs


def _promql(expr: str) -> str:
    """A variable query (`label_values(SELECTOR, label)`) becomes its selector; variables get values."""
    match = re.fullmatch(r"label_values\((.*?)(?:,\s*\w+)?\)", expr)
    if match:
        expr = match.group(1)
    for name, value in sorted(VARIABLES.items(), key=lambda kv: -len(kv[0])):
        expr = expr.replace(name, value)
    return expr


def test_dashboard_is_importable():
    dashboard = _dashboard()
    assert dashboard["title"] and dashboard["uid"] and isinstance(dashboard["schemaVersion"], int)
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    variables = {v["name"] for v in dashboard["templating"]["list"]}
    for v in dashboard["templating"]["list"]:
        if v.get("includeAll"):
            assert VARIABLES["$" + v["name"]] == v["allValue"], v["name"]
    for panel in dashboard["panels"]:
        if panel["type"] == "row":
            continue
        assert panel["targets"], panel["title"]
        assert panel["datasource"]["uid"] == "${datasource}"
        for target in panel["targets"]:
            assert "by (node" in target["expr"], f"{panel['title']}: not by node: {target['expr']}"
            used = set(re.findall(r"\$(\w+)", target["expr"])) - {"__rate_interval"}
            assert used <= variables, f"{panel['title']}: unknown variables {used - variables}"


def _exported(text: str) -> set[str]:
    """The sample names a /metrics text can carry, by family type (families without samples too)."""
    names = set()
    for family in text_string_to_metric_families(text):
        names |= {family.name + suffix for suffix in SUFFIXES[family.type]}
        names |= {s.name for s in family.samples}
    return names


def test_dashboard_uses_only_exported_metrics(hosts, prometheus, tmp_path):  # noqa: F811 - the fixture
    a, b = hosts
    d = Daemon("--netns", b.netns, log_path=tmp_path / "serve.log")
    try:
        _check_against(d, a, b, prometheus)
    finally:
        assert d.stop() == 0, d.log()


def _check_against(d: Daemon, a, b, prometheus) -> None:  # noqa: F811 - the fixture's function
    by_kind: dict[str, set[str]] = {}
    seen = _exported(d.client.get("/metrics").text)
    # The daemon's kinds (its own registry; a test process may have registered test-only kinds in its own).
    for kind in sorted(d.client.get("/monitors/kinds").json()):
        r = d.client.post(f"/monitors/{kind}", json={"kind": kind, "interface": "eth0"})
        assert r.status_code == 201, r.text
        now = _exported(d.client.get("/metrics").text)
        by_kind[kind], seen = now - seen, now
    d.client.post("/polycube/v1/dynmon/dyn", json={"dataplane-config": counter_config()}).raise_for_status()
    d.client.post("/polycube/v1/attach", json={"cube": "dyn", "port": "eth0"}).raise_for_status()
    assert a.send_udp(b.ip, UDP_PORT, 50) == 50
    exported = _exported(d.client.get("/metrics").text)
    assert "udp_packets_total" in exported

    dashboard = _dashboard()
    used = set().union(*(metric_names(_promql(e)) for e in _expressions(dashboard)))
    assert used, "no metric names found in the dashboard"
    assert used <= exported, f"not exported by pynetmon: {sorted(used - exported)}"
    for kind, names in by_kind.items():
        assert names & used, f"no panel for the {kind} monitor (it exports {sorted(names)})"

    # A real Prometheus, the node as a target label (what the ServiceMonitor's relabelling sets).
    url = prometheus(d.port, {"node": "node-b"})
    flows = next(t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])
                 if "flow_packets_total" in t["expr"])
    deadline, result = time.monotonic() + 60, []
    while time.monotonic() < deadline and not result:
        try:
            result = _query(url, _promql(flows))
        except httpx.HTTPError:
            pass  # still starting
        time.sleep(0.5)
    assert result and {r["metric"]["node"] for r in result} == {"node-b"}, result
    dynmon = next(t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])
                  if "dynmon_metric" in t["expr"] and "rate(" not in t["expr"])
    assert [(r["metric"]["monitor"], float(r["value"][1])) for r in _query(url, _promql(dynmon))] == [("dyn", 50.0)]
    for expr in _expressions(dashboard):
        try:
            _query(url, _promql(expr))  # 400 on a PromQL syntax error
        except httpx.HTTPStatusError as exc:
            pytest.fail(f"Prometheus refuses {expr!r}: {exc.response.text}")

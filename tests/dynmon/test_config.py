"""The dataplane-config model: Polycube's format accepted as is, every problem reported with its JSON path."""
from __future__ import annotations

import json
import math

import pytest

from pynetmon.dynmon.config import histogram_bounds, parse_config
from pynetmon.errors import ConfigError

from .helpers import EXAMPLES

CODE = "BPF_ARRAY(C, u64, 1);"


def problems(source) -> dict[str, str]:
    with pytest.raises(ConfigError) as info:
        parse_config(source)
    return dict(info.value.problems)


def test_published_examples_parse(tmp_path):
    for path in EXAMPLES.glob("*.json"):
        cfg = parse_config(path)  # a path
        assert cfg.ingress_path and not cfg.ingress_path.empty
        assert cfg.egress_path is not None and cfg.egress_path.empty
        assert parse_config(path.read_text()) == cfg  # JSON text
        assert parse_config(json.loads(path.read_text())) == cfg  # dict


def test_full_path_and_metric_fields():
    cfg = parse_config({"ingress-path": {"name": "n", "code": CODE, "metric-configs": [
        {"name": "c_total", "map-name": "C",
         "extraction-options": {"swap-on-read": False, "empty-on-read": True},
         "open-metrics-metadata": {"help": "h", "type": "COUNTER", "labels": [{"name": "a", "value": "b"}]}}]}})
    m = cfg.ingress_path.metric_configs[0]
    assert (m.name, m.map_name, m.extraction_options.empty_on_read) == ("c_total", "C", True)
    assert m.open_metrics_metadata.type == "counter"  # any case
    assert cfg.egress_path is None  # absent: keep what runs
    assert cfg.to_json()["ingress-path"]["metric-configs"][0]["open-metrics-metadata"]["labels"] == \
        [{"name": "a", "value": "b"}]


def test_older_published_shapes():
    # "metrics" instead of "metric-configs", and a bare path object at the top level (ingress).
    cfg = parse_config({"name": "old", "code": CODE, "metrics": [{"name": "x", "map-name": "C"}]})
    assert cfg.ingress_path.metric_configs[0].map_name == "C"
    # The body of Polycube's dynmon resource.
    assert parse_config({"dataplane-config": {"ingress-path": {"code": CODE}}}).ingress_path.code == CODE


def test_every_problem_with_its_json_path():
    found = problems({
        "ingress-path": {"name": "n", "code": CODE, "metric-configs": [
            {"name": "ok", "map-name": "C"},
            {"name": "no_map"},
            {"name": "t", "map-name": "C", "open-metrics-metadata": {"type": "histogramm"}},
            {"name": "bad name", "map-name": "C", "open-metrics-metadata": {"type": "gauge"}},
        ]},
        "egress-path": {"name": "e", "metric-configs": []},
        "ingres-path": {},
    })
    assert found["ingress-path.metric-configs[1].map-name"] == "field required"
    assert "'histogramm' is not a metric type" in found["ingress-path.metric-configs[2].open-metrics-metadata.type"]
    assert "not a valid OpenMetrics name" in found["ingress-path.metric-configs[3]"]
    assert '"code" is required' in found["egress-path"]
    assert found["ingres-path"] == "unknown field"
    assert len(found) == 5


@pytest.mark.parametrize("source, where, words", [
    ('{"ingress-path": {', "", "not valid JSON"),
    ("[1, 2]", "", "must be a JSON object"),
    ({"ingress-path": {"code": CODE, "metric-configs": [{"name": "a", "map-name": "C"},
                                                        {"name": "a", "map-name": "C"}]}},
     "ingress-path", "used more than once"),
    ({"ingress-path": {"code": CODE, "metric-configs": [{"name": "a", "map-name": "C", "open-metrics-metadata":
                                                         {"labels": [{"name": "__x", "value": "1"}]}}]}},
     "ingress-path.metric-configs[0].open-metrics-metadata.labels[0].name", "not a valid label name"),
    ({"ingress-path": {"code": CODE, "metric-configs": [{"name": "a", "map-name": "C", "extraction-options":
                                                         {"empty-on-read": "sometimes"}}]}},
     "ingress-path.metric-configs[0].extraction-options.empty-on-read", "boolean"),
    ({"ingress-path": {"code": CODE, "object": "/x.o"}}, "ingress-path", "not both"),
    ("/nonexistent/dataplane.json", "", "cannot read dataplane-config file"),
])
def test_bad_configs(source, where, words):
    found = problems(source)
    assert where in found, found
    assert words in found[where]


def test_error_message_lists_paths():
    with pytest.raises(ConfigError) as info:
        parse_config({"ingress-path": {"code": CODE, "metric-configs": [{"name": "x"}]}})
    assert "ingress-path.metric-configs[0].map-name: field required" in str(info.value)


def test_histogram_bounds():
    from pynetmon.dynmon.config import OpenMetricsMetadata
    assert histogram_bounds(OpenMetricsMetadata(type="histogram"), 4) == [0.0, 1.0, 3.0, math.inf]
    meta = OpenMetricsMetadata(type="histogram", buckets=[10, 100])
    assert histogram_bounds(meta, 3) == [10, 100, math.inf]
    with pytest.raises(ValueError):
        OpenMetricsMetadata(type="histogram", buckets=[5, 1])

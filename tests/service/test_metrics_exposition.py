"""`GET /metrics` in-process (the app in Starlette's test client, real monitors and maps): the body is
byte for byte what prometheus_client writes for the whole scrape, also when it is put together from
renderings kept since the previous scrape; and a dynmon cube reports the dataplane that actually runs."""
from __future__ import annotations

import json

import pytest
from prometheus_client.exposition import generate_latest as generate_text
from prometheus_client.openmetrics.exposition import generate_latest as generate_openmetrics
from starlette.testclient import TestClient

from pynetmon.service import ServiceConfig, create_app, operations
from pynetmon.service.collector import DaemonCollector
from pynetmon.service.routes.metrics import _exposition_of

from .dataplanes import counter_config

OPENMETRICS = {"Accept": "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5"}
TEXT = {"Accept": "text/plain; version=0.0.4"}


@pytest.fixture
def service(bpf, tmp_path):
    app = create_app(ServiceConfig(port=0, state_file=tmp_path / "state.json"), restore=False)
    with TestClient(app) as client:
        yield client, app.state.service.registry


def test_metrics_body_is_prometheus_clients_rendering_and_reuses_unchanged_families(service):
    client, registry = service
    flows = []
    for i in range(3):  # three monitors exporting the same metric names: one family per name
        cube = operations.create_dynmon(registry, f"mon{i}", {"dataplane-config": counter_config()})
        flows.append(cube.monitor.path_dataplane("ingress").maps["FLOWS"])
        flows[-1].update_batch([(k, {"packets": k + i, "bytes": 64 * k}) for k in range(1, 51)])
    exposition = _exposition_of(registry)

    def check(headers, generate):
        body = client.get("/metrics", headers=headers).content
        assert body == generate(DaemonCollector(registry))
        return body

    body = check(OPENMETRICS, generate_openmetrics)
    assert body.count(b"# TYPE flows_packets counter") == 1
    assert b'flows_packets_total{key="7",monitor="mon2"} 9.0' in body
    rendered = exposition.rendered
    check(OPENMETRICS, generate_openmetrics)
    assert exposition.rendered == rendered  # nothing changed: every family's text was reused
    flows[1][3] = {"packets": 1000, "bytes": 1}
    body = check(OPENMETRICS, generate_openmetrics)
    assert b'flows_packets_total{key="3",monitor="mon1"} 1000.0' in body
    assert exposition.rendered == rendered + 2  # only the families of the map that changed: mon1 FLOWS (2 fields)
    check(TEXT, generate_text)
    check(TEXT, generate_text)
    operations.create_dynmon(registry, "mon3", {})  # a monitor without dataplane: only its up metric
    body = check(OPENMETRICS, generate_openmetrics)
    assert b'pynetmon_monitor_up{monitor="mon3"} 1.0' in body


def test_a_partial_config_keeps_the_other_path_in_answers_and_state_file(service, tmp_path):
    """Polycube semantics: a path left out of a config keeps its program; the cube reports the dataplane
    that runs (both paths), in GET answers and in the state file."""
    client, registry = service
    both = counter_config()
    both["egress-path"] = dict(both["ingress-path"], name="egress counter", **{"metric-configs": []})
    assert client.post("/polycube/v1/dynmon/m", json={"dataplane-config": both}).status_code == 201
    ingress_only = {"ingress-path": dict(counter_config()["ingress-path"], name="new ingress")}
    assert client.put("/polycube/v1/dynmon/m/dataplane-config", json=ingress_only).status_code == 200
    shown = client.get("/polycube/v1/dynmon/m/dataplane-config").json()
    assert shown["ingress-path"]["name"] == "new ingress"
    assert shown["egress-path"]["name"] == "egress counter"
    assert client.get("/polycube/v1/dynmon/m").json()["dataplane-config"] == shown
    (saved,) = json.loads((tmp_path / "state.json").read_text())["cubes"]
    assert saved["dataplane-config"] == shown
    assert registry.get("m", "dynmon").monitor.path_dataplane("egress") is not None

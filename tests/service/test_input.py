"""Input checking on every route of a real daemon: strict JSON types (no "96" for 96, no true for 1, no
96.0 for 96), unknown fields refused, and the cube-name pattern on every route that names a cube; each
refusal is a 422 naming the JSON path."""
from __future__ import annotations

import urllib.parse

import pytest


def _paths(r) -> dict[str, str]:
    assert r.status_code == 422, r.text
    return {p["path"]: p["reason"] for p in r.json()["problems"]}


@pytest.mark.parametrize(("body", "path"), [
    ({"snaplen": True}, "snaplen"),
    ({"snaplen": "96"}, "snaplen"),
    ({"snaplen": 96.0}, "snaplen"),
    ({"snaplen": 96.5}, "snaplen"),
    ({"networkmode": "true"}, "networkmode"),
    ({"networkmode": 1}, "networkmode"),
    ({"filter": 5}, "filter"),
    ({"capture": 3}, "capture"),
    ({"dump": ["x"]}, "dump"),
    ({"snaplen": 96, "snaplenn": 64}, "snaplenn"),
])
def test_capture_body_is_strict(daemon, body, path):
    r = daemon.client.post("/polycube/v1/packetcapture/c", json=body)
    problems = _paths(r)
    assert path in problems, problems
    if path == "snaplenn":
        assert "unknown field" in problems[path] and "snaplen" in problems[path]
    # PATCH of a missing capture: the body is checked first, so the answer is about the body too.
    assert daemon.client.get("/polycube/v1/packetcapture/c").status_code == 404


def test_attach_and_dynmon_bodies_are_strict(daemon):
    c = daemon.client
    assert "position" in _paths(c.post("/polycube/v1/attach", json={"cube": "m", "port": "lo", "position": 1}))
    assert "prot" in _paths(c.post("/polycube/v1/attach", json={"cube": "m", "port": "lo", "prot": "lo"}))
    assert "type" in _paths(c.post("/polycube/v1/dynmon/m", json={"type": 1}))
    assert "dataplane-config" in _paths(c.post("/polycube/v1/dynmon/m", json={"dataplane-config": "x"}))
    problems = _paths(c.post("/polycube/v1/dynmon/m", json={"dataplane-config": {
        "ingress-path": {"name": 7, "code": "int x;"}}}))
    assert "dataplane-config.ingress-path.name" in problems, problems
    problems = _paths(c.post("/polycube/v1/dynmon/m", json={"dataplane-config": {
        "ingress-path": {"code": "int x;", "metric-configs": [{"name": "n", "map-name": "M", "colour": 1}]}}}))
    assert "dataplane-config.ingress-path.metric-configs[0].colour" in problems, problems
    assert c.get("/polycube/v1/cubes").json() == {}  # nothing was created


def test_polycube_read_only_fields_are_accepted(daemon):
    # Polycube's tools send back what they read: name, uuid, parent, ... are ignored, not refused.
    r = daemon.client.post("/polycube/v1/dynmon/ro", json={"name": "ro", "uuid": "x", "parent": "", "shadow": False,
                                                           "service-name": "dynmon", "type": "TC"})
    assert r.status_code == 201, r.text
    assert daemon.client.delete("/polycube/v1/dynmon/ro").status_code == 204


BAD_NAMES = ["bad name", "-x", ".hidden", "x" * 65, "a$b", "é"]


def test_cube_name_pattern_on_every_route(daemon):
    doc = daemon.client.get("/openapi.json").json()
    named = [(method.upper(), path) for path, ops in doc["paths"].items() if "{name}" in path for method in ops]
    assert len(named) >= 15, named
    for bad in BAD_NAMES:
        quoted = urllib.parse.quote(bad, safe="")
        for method, path in named:
            url = path.replace("{name}", quoted).replace("{kind}", "ingress-metrics") \
                .replace("{metric}", "m").replace("{leaf}", "filter")
            body = {} if method in ("POST", "PUT", "PATCH") else None
            r = daemon.client.request(method, url, json=body)
            problems = _paths(r)
            assert "name" in problems and "pattern" in problems["name"], (method, url, problems)
    assert daemon.client.get("/polycube/v1/cubes").json() == {}

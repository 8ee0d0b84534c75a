"""Polycube clients against `pynetmon serve`: plain `requests` calls with polycubed's paths and bodies, and the
status codes, error bodies and headers polycubed answers them with."""
from __future__ import annotations

import json
import time

import requests

from pynetmon import __version__
from pynetmon.link import tc_programs

from .daemon import Daemon
from .dataplanes import UDP_PORT, counter_config

BASE = "/polycube/v1"


def _error(resp: requests.Response, status: int) -> str:
    """Check an error answer's shape (polycubed's `message`, pynetmon's `error` and `problems`); its text."""
    assert resp.status_code == status, (resp.status_code, resp.text)
    body = resp.json()
    assert body["message"] == body["error"] and body["message"], body
    assert isinstance(body["problems"], list), body
    return body["message"]


def test_status_codes_and_error_bodies_as_polycubed(daemon):
    url = daemon.url + BASE
    # Creating a cube twice: 409 (polycubed: "Cube with name ... already exists"), the first cube untouched.
    assert requests.post(f"{url}/dynmon/mon1", timeout=30).status_code == 201
    assert "mon1" in _error(requests.post(f"{url}/dynmon/mon1", timeout=30), 409)
    assert requests.get(f"{url}/dynmon/mon1", timeout=30).json()["name"] == "mon1"
    # Missing cube, missing metric list, unknown endpoint: 404 with a message.
    assert "nope" in _error(requests.get(f"{url}/dynmon/nope", timeout=30), 404)
    assert "nope" in _error(requests.delete(f"{url}/dynmon/nope", timeout=30), 404)
    _error(requests.get(f"{url}/dynmon/mon1/metrics/ingress-metrics/absent", timeout=30), 404)
    assert "no such endpoint" in _error(requests.get(f"{url}/no-such-service/x", timeout=30), 404)
    # A body polycubed's models reject (unknown field): an error with a message naming the field.
    assert "bogus" in _error(requests.post(f"{url}/dynmon/mon2", data='{"bogus": 1}', timeout=30), 422)
    # 405: Allow lists every method of the path, not only the first route's.
    resp = requests.put(f"{url}/dynmon/mon1", data="{}", timeout=30)
    _error(resp, 405)
    assert sorted(m.strip() for m in resp.headers["Allow"].split(",")) == ["DELETE", "GET", "HEAD", "PATCH", "POST"]
    resp = requests.delete(f"{url}/cubes", timeout=30)
    _error(resp, 405)
    assert sorted(m.strip() for m in resp.headers["Allow"].split(",")) == ["GET", "HEAD"]
    assert requests.delete(f"{url}/dynmon/mon1", timeout=30).status_code == 204
    _error(requests.get(f"{url}/dynmon/mon1", timeout=30), 404)


def test_every_error_of_the_guards_has_a_message(tmp_path):
    token_file = tmp_path / "token"
    token_file.write_text("s3cret-s3cret-s3cret\n")
    token_file.chmod(0o600)
    with Daemon("--max-body", "1024", "--token-file", str(token_file), token="s3cret-s3cret-s3cret") as d:
        _error(requests.post(d.url + BASE + "/dynmon/m", timeout=30), 401)  # writes need the token
        big = requests.post(d.url + BASE + "/dynmon/m", data="x" * 5000, timeout=30,
                            headers={"Authorization": "Bearer s3cret-s3cret-s3cret"})
        assert "--max-body" in _error(big, 413)


def test_missing_polycube_routes_and_fields(host_daemon):
    """The routes Polycube clients use besides the injector's and extractor's, with real programs and packets."""
    d, a, b = host_daemon
    url = d.url + BASE
    config = counter_config()
    cube = requests.post(f"{url}/dynmon/mon/", json.dumps({"dataplane-config": config}), timeout=30)
    assert cube.status_code == 201, cube.text
    info = cube.json()
    assert info["service-name"] == "dynmon" and info["type"] == "TC" and info["loglevel"] == "INFO"
    assert info["shadow"] is False and info["span"] is False and len(info["uuid"]) == 36
    requests.post(f"{url}/attach", json.dumps({"cube": "mon", "port": "eth0"}), timeout=5).raise_for_status()

    # /cubes/ and /cubes/{name}: the same cube, the same uuid; /netdevs/ lists the daemon's interfaces.
    assert requests.get(f"{url}/cubes/", timeout=5).json()["dynmon"][0]["uuid"] == info["uuid"]
    assert requests.get(f"{url}/cubes/mon/", timeout=5).json()["uuid"] == info["uuid"]
    _error(requests.get(f"{url}/cubes/nope/", timeout=5), 404)
    assert {"eth0", "lo"} <= {n["name"] for n in requests.get(f"{url}/netdevs/", timeout=5).json()}
    assert requests.get(f"{url}/version", timeout=5).json()["polycubed"]["version"] == __version__

    # ingress-path alone: read, replace (egress untouched), metric leaves value/timestamp/name.
    path = requests.get(f"{url}/dynmon/mon/dataplane-config/ingress-path/", timeout=5).json()
    assert path["name"] == config["ingress-path"]["name"]
    assert requests.get(f"{url}/dynmon/mon/dataplane-config/egress-path/", timeout=5).json() == {}
    a.send_udp(b.ip, UDP_PORT, 7)
    time.sleep(0.1)  # the peer's softirq counts right after sendto
    leaf = f"{url}/dynmon/mon/metrics/ingress-metrics/udp_packets_total"
    assert requests.get(f"{leaf}/value", timeout=5).json() == [7]
    assert requests.get(f"{leaf}/name", timeout=5).json() == "udp_packets_total"
    assert isinstance(requests.get(f"{leaf}/timestamp", timeout=5).json(), int)
    _error(requests.get(f"{leaf}/bogus", timeout=5), 404)  # no such route
    renamed = {**config["ingress-path"], "name": "renamed", "metric-configs": []}  # same names: not yet (issue 15)
    r = requests.put(f"{url}/dynmon/mon/dataplane-config/egress-path/", json.dumps(renamed), timeout=30)
    assert r.status_code == 200, r.text
    assert r.json()["dataplane-config"]["ingress-path"]["name"] == config["ingress-path"]["name"]
    assert len(tc_programs("eth0", "egress", netns=b.netns)) == 1
    # A bad path config: 400 naming the path, the running program stays.
    bad = requests.put(f"{url}/dynmon/mon/dataplane-config/ingress-path/", json.dumps({"name": "x"}), timeout=30)
    assert bad.status_code in (400, 422) and bad.json()["message"]
    assert requests.delete(f"{url}/dynmon/mon/dataplane-config/egress-path/", timeout=30).status_code == 204
    assert tc_programs("eth0", "egress", netns=b.netns) == []
    assert len(tc_programs("eth0", "ingress", netns=b.netns)) == 1

    # PATCH of the cube: a new dataplane-config; the type cannot change (409).
    r = requests.patch(f"{url}/dynmon/mon/", json.dumps({"dataplane-config": {"egress-path": renamed}}), timeout=30)
    assert r.status_code == 200, r.text
    assert len(tc_programs("eth0", "egress", netns=b.netns)) == 1
    assert "type" in _error(requests.patch(f"{url}/dynmon/mon/", json.dumps({"type": "XDP_SKB"}), timeout=5), 409)


def test_cli_extract_and_inject_as_polycube_tools(host_daemon, tmp_path):
    """`pynetmon extract -n` prints one value bare (dynmon_extractor.py prints `res[0]`); `pynetmon inject -t
    egress` replaces the whole dataplane-config, so the ingress path injected before is removed."""
    d, a, b = host_daemon
    both = tmp_path / "both.json"
    config = counter_config()
    egress = {**config["ingress-path"], "name": "egress counter", "metric-configs": []}
    both.write_text(json.dumps({"ingress-path": config["ingress-path"], "egress-path": egress}))
    d.cli("inject", "mon", "eth0", str(both))
    assert len(tc_programs("eth0", "ingress", netns=b.netns)) == 1
    assert len(tc_programs("eth0", "egress", netns=b.netns)) == 1
    assert a.send_udp(b.ip, UDP_PORT, 8) == 8
    time.sleep(0.1)  # the peer's softirq counts right after sendto
    out = d.cli("extract", "mon", "-t", "ingress", "-n", "udp_packets_total").stdout
    assert out.strip() == "8"
    # A hash metric with one entry: the entry itself, not a one-element list.
    flow = json.loads(d.cli("extract", "mon", "-t", "ingress", "-n", "flows").stdout)
    assert flow["value"]["packets"] == 8

    d.cli("inject", "mon", "eth0", str(both), "-t", "egress")
    assert tc_programs("eth0", "ingress", netns=b.netns) == []
    assert len(tc_programs("eth0", "egress", netns=b.netns)) == 1
    running = requests.get(f"{d.url}{BASE}/dynmon/mon/dataplane-config", timeout=5).json()
    assert running["ingress-path"] == {} and running["egress-path"]["name"] == "egress counter"

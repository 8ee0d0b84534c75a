"""The daemon's front door, without BPF: start-up checks, the bearer token, body limits, error shapes,
path normalisation, the OpenAPI description and the CLI's message when no daemon runs."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import pytest

from pynetmon.errors import ConfigError
from pynetmon.service.config import ServiceConfig, parse_listen, read_token_file

from .daemon import REPO, Daemon

TOKEN = "s3cret-token-for-tests-0123456789"


@pytest.fixture
def token_file(tmp_path):
    path = tmp_path / "token"
    path.write_text(TOKEN + "\n")
    path.chmod(0o600)
    return path


def test_parse_listen():
    assert parse_listen("127.0.0.1:9000") == ("127.0.0.1", 9000)
    assert parse_listen(":8080") == ("127.0.0.1", 8080)
    assert parse_listen("[::1]:7") == ("::1", 7)
    assert parse_listen("0.0.0.0") == ("0.0.0.0", 9000)
    with pytest.raises(ConfigError, match="port 'x' is not a number"):
        parse_listen("1.2.3.4:x")


def test_non_loopback_needs_a_token():
    with pytest.raises(ConfigError, match="requires --token-file"):
        ServiceConfig(host="0.0.0.0")
    ServiceConfig(host="0.0.0.0", token=TOKEN)
    ServiceConfig(host="::1")


def test_token_file_must_be_private(tmp_path):
    path = tmp_path / "token"
    path.write_text(TOKEN)
    path.chmod(0o644)
    with pytest.raises(ConfigError, match="has mode 0644: group or others may access it"):
        read_token_file(path)
    path.chmod(0o600)
    assert read_token_file(path) == TOKEN


def test_serve_refuses_public_address_without_token():
    proc = subprocess.run([sys.executable, "-m", "pynetmon", "serve", "--listen", "0.0.0.0:0"],
                          cwd=REPO, capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 1
    assert "--listen" in proc.stderr and "requires --token-file" in proc.stderr


def test_openapi_describes_polycube_routes(daemon):
    doc = daemon.client.get("/openapi.json").json()
    assert doc["openapi"].startswith("3.1")
    paths = doc["paths"]
    for path, method in [("/polycube/v1/dynmon/{name}", "post"), ("/polycube/v1/dynmon/{name}", "delete"),
                         ("/polycube/v1/dynmon/{name}/dataplane-config", "put"),
                         ("/polycube/v1/attach", "post"), ("/polycube/v1/detach", "post"),
                         ("/polycube/v1/dynmon/{name}/metrics/{kind}/{metric}/value", "get"),
                         ("/polycube/v1/dynmon/{name}/open-metrics", "get"),
                         ("/polycube/v1/packetcapture/{name}", "patch"),
                         ("/polycube/v1/packetcapture/{name}/pcap", "get"),
                         ("/polycube/v1/cubes", "get"), ("/metrics", "get")]:
        assert method in paths.get(path, {}), f"{method.upper()} {path} missing from /openapi.json"
    assert "DataplaneConfig" in doc["components"]["schemas"]


def test_errors_name_the_json_path(daemon):
    r = daemon.client.post("/polycube/v1/attach", content=b'{"cube": 7}')
    assert r.status_code == 422
    problems = {p["path"]: p["reason"] for p in r.json()["problems"]}
    assert set(problems) == {"cube", "port"}, problems
    r = daemon.client.post("/polycube/v1/dynmon/m1", content=b'{"dataplane-config": {"ingress-path": 5}}')
    assert r.status_code == 422
    assert r.json()["problems"][0]["path"].startswith("dataplane-config.ingress-path"), r.json()
    r = daemon.client.post("/polycube/v1/packetcapture/c1", content=b'{"capture": "sideways", "snaplen": -1}')
    assert r.status_code == 422
    assert {p["path"] for p in r.json()["problems"]} == {"capture", "snaplen"}
    r = daemon.client.put("/polycube/v1/dynmon/m1/dataplane-config", content=b"{not json")
    assert r.status_code in (400, 404)
    r = daemon.client.post("/polycube/v1/attach", content=b"{not json")
    assert r.status_code == 400 and "not valid JSON" in r.json()["error"]
    r = daemon.client.get("/polycube/v1/dynmon/nobody/metrics")
    assert r.status_code == 404 and "nobody" in r.json()["error"]
    r = daemon.client.request("PATCH", "/polycube/v1/cubes")
    assert r.status_code == 405


def test_polycube_path_spellings(daemon):
    # Polycube's tools ask for `metrics//`, `cubes/`, `packet/`: the same resources.
    assert daemon.client.get("/polycube/v1/cubes/").json() == {}
    assert daemon.client.get("/polycube/v1/cubes").text == "{}"  # what Polycube's capture client tests for
    assert daemon.client.get("/polycube/v1/dynmon/x/metrics//").status_code == 404


def test_body_size_limit(daemon):
    big = json.dumps({"cube": "x" * (2 << 20), "port": "eth0"}).encode()
    r = daemon.client.post("/polycube/v1/attach", content=big)
    assert r.status_code == 413, r.text

    def chunks():  # no Content-Length: the limit is enforced while reading
        for _ in range(40):
            yield b" " * 65536

    r = daemon.client.post("/polycube/v1/attach", content=chunks())
    assert r.status_code == 413, r.text
    assert daemon.client.get("/polycube/v1/cubes").status_code == 200  # still serving


def test_token_required_for_everything_but_metrics(token_file):
    with Daemon("--token-file", str(token_file), token=TOKEN) as d:
        import httpx
        anon = httpx.Client(base_url=d.url, timeout=30)
        body = {"dataplane-config": {"ingress-path": {"name": "x", "code": "int x;"}}}
        for method, path, payload in [("POST", "/polycube/v1/dynmon/m", body),
                                      ("PUT", "/polycube/v1/dynmon/m/dataplane-config", body),
                                      ("POST", "/polycube/v1/attach", {"cube": "m", "port": "lo"}),
                                      ("POST", "/polycube/v1/packetcapture/c", {"capture": "ingress"}),
                                      ("PATCH", "/polycube/v1/packetcapture/c", {"filter": "udp"}),
                                      ("DELETE", "/polycube/v1/dynmon/m", None),
                                      ("GET", "/polycube/v1/cubes", None)]:
            r = anon.request(method, path, json=payload)
            assert r.status_code == 401, (method, path, r.status_code)
            assert r.headers["www-authenticate"].startswith("Bearer")
            r = anon.request(method, path, json=payload, headers={"Authorization": "Bearer wrong-token-xxxxxxx"})
            assert r.status_code == 401
        assert anon.get("/metrics").status_code == 200
        assert anon.get("/openapi.json").status_code == 200
        assert d.client.get("/polycube/v1/cubes").json() == {}  # nothing was created
        anon.close()


def test_protect_metrics(token_file):
    with Daemon("--token-file", str(token_file), "--protect-metrics", token=TOKEN) as d:
        import httpx
        assert httpx.get(d.url + "/metrics").status_code == 401
        assert d.client.get("/metrics").status_code == 200


def test_cli_says_when_the_daemon_is_not_running():
    proc = subprocess.run([sys.executable, "-m", "pynetmon", "extract", "m", "-p", "1"], cwd=REPO, check=False,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1
    assert "cannot reach the pynetmon daemon at http://localhost:1" in proc.stderr
    assert "pynetmon serve" in proc.stderr


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_stops_cleanly_on_signals(sig):
    d = Daemon()
    assert d.client.get("/polycube/v1/cubes").status_code == 200
    assert d.stop(sig) == 0, d.log()
    assert "shutting down" in d.log()


def test_token_file_errors_are_clear(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "pynetmon", "serve", "--token-file", str(tmp_path / "none")],
                          cwd=REPO, capture_output=True, text=True, timeout=60,
                          env={**os.environ}, check=False)
    assert proc.returncode == 1 and "--token-file: cannot read" in proc.stderr

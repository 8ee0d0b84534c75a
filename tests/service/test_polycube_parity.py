"""Polycube clients against `pynetmon serve`: plain `requests` calls with polycubed's paths and bodies, and the
status codes, error bodies and headers polycubed answers them with."""
from __future__ import annotations

import requests

from .daemon import Daemon

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
    assert sorted(m.strip() for m in resp.headers["Allow"].split(",")) == ["DELETE", "GET", "HEAD", "POST"]
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

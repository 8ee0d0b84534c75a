"""`/healthz` and `/readyz` on a real `pynetmon serve`: open without the token (kubelet probes carry
none) while everything else still needs it; ready only when BPF programs load for the daemon."""
from __future__ import annotations

import shutil

import httpx
import pytest

from .daemon import Daemon

TOKEN = "probe-test-token-0123456789abcdef"


def _setpriv_without_bpf() -> tuple[str, ...]:
    if shutil.which("setpriv") is None:
        pytest.fail("setpriv (util-linux) is required to start the daemon without CAP_BPF")
    keep = "-all,+net_admin,+perfmon"
    return ("setpriv", f"--inh-caps={keep}", f"--ambient-caps={keep}", f"--bounding-set={keep}", "--")


def test_probes_answer_without_the_token(bpf, tmp_path):
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN)
    token_file.chmod(0o600)
    d = Daemon("--token-file", str(token_file), token=TOKEN, log_path=tmp_path / "serve.log")
    try:
        anonymous = httpx.Client(base_url=d.url, timeout=60)
        with anonymous:
            health = anonymous.get("/healthz")
            assert health.status_code == 200, health.text
            assert health.json() == {"status": "alive"}
            ready = anonymous.get("/readyz")
            assert ready.status_code == 200, ready.text
            body = ready.json()
            assert body["status"] == "ready"
            assert {c["name"]: c["ok"] for c in body["checks"]} == {
                "monitor registry": True, "state restored": True, "not stopping": True, "BPF usable": True}
            # The probes open nothing else: the API still wants the token.
            assert anonymous.get("/monitors").status_code == 401
        assert d.client.get("/monitors").status_code == 200
        paths = d.client.get("/openapi.json").json()["paths"]
        assert "/healthz" in paths and "/readyz" in paths
    finally:
        assert d.stop() == 0, d.log()


def test_not_ready_without_cap_bpf_but_alive(bpf, tmp_path):
    d = Daemon(prefix=_setpriv_without_bpf(), log_path=tmp_path / "serve.log")
    try:
        assert d.client.get("/healthz").status_code == 200
        ready = d.client.get("/readyz")
        assert ready.status_code == 503, ready.text
        body = ready.json()
        assert body["status"] == "not ready"
        failed = [c for c in body["checks"] if not c["ok"]]
        assert [c["name"] for c in failed] == ["BPF usable"]
        assert "Operation not permitted" in failed[0]["detail"] or "EPERM" in failed[0]["detail"], failed
        # Asked again within the cache period: the same verdict, no second load.
        assert d.client.get("/readyz").json() == body
    finally:
        assert d.stop() == 0, d.log()

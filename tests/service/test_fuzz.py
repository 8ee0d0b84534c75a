"""Fuzzing the OpenAPI description with schemathesis against a running daemon: whatever a client sends,
valid by the schema or not, the answer is never a 5xx and the daemon stays up.

The daemon attaches in a test host's namespace, so a fuzzed attach can only reach that namespace's
interfaces. Examples are bounded (per operation and mode) to keep this well under a minute.
(schemathesis's own pytest plugin does not run under pytest 9, so the operations are driven through
its Python API: one hypothesis run per operation and generation mode.)
"""
from __future__ import annotations

import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis.generation import GenerationMode

from .daemon import Daemon
from .dataplanes import counter_config

MAX_EXAMPLES = 12


def _fuzz(operation, mode: GenerationMode, base_url: str, seen: list, failures: list,
          path_parameters: dict | None = None) -> None:
    @settings(max_examples=MAX_EXAMPLES, deadline=None, derandomize=True, database=None,
              suppress_health_check=list(HealthCheck))
    @given(case=operation.as_strategy(generation_mode=mode, path_parameters=path_parameters))
    def run(case):
        # Fuzzed names never name an existing capture, so even the streaming /pcap answers at once.
        response = case.call(base_url=base_url, timeout=60)
        status = response.status_code
        seen.append(status)
        if status >= 500:
            failures.append(f"{mode.value} {case.method} {case.formatted_path} body={case.body!r:.300} "
                            f"→ {status}: {response.text[:300]}")

    try:
        run()
    except Unsatisfiable:
        # An operation without parameters or body has nothing to make invalid.
        assert mode is GenerationMode.NEGATIVE, operation.label


def test_no_request_makes_a_server_error(hosts):
    _, b = hosts
    d = Daemon("--netns", b.netns)
    try:
        schema = schemathesis.openapi.from_url(d.url + "/openapi.json")
        seen: list[int] = []
        failures: list[str] = []
        operations = [result.ok() for result in schema.get_all_operations()]
        assert len(operations) >= 24
        for operation in operations:
            for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
                _fuzz(operation, mode, d.url, seen, failures)
                assert d.proc.poll() is None, f"the daemon died on {operation.label}:\n{d.log()[-3000:]}"
            # Again against a real, attached monitor, so that bodies reach a live cube.
            if "{name}" in operation.path and operation.path.startswith("/polycube/v1/dynmon"):
                if d.client.get("/polycube/v1/dynmon/live").status_code == 404:
                    d.client.post("/polycube/v1/dynmon/live", json={"dataplane-config": counter_config()})
                    d.client.post("/polycube/v1/attach", json={"cube": "live", "port": "eth0"})
                _fuzz(operation, GenerationMode.POSITIVE, d.url, seen, failures, {"name": "live"})
                _fuzz(operation, GenerationMode.NEGATIVE, d.url, seen, failures, {"name": "live"})
        assert not failures, "\n".join(failures[:10])
        assert len(seen) > 10 * len(operations)
        assert any(400 <= s < 500 for s in seen) and any(s < 300 for s in seen)
    finally:
        assert d.stop() == 0, d.log()
    assert "Traceback" not in d.log(), d.log()[-3000:]

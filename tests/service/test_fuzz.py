"""Fuzzing the OpenAPI description with schemathesis against a running daemon: whatever a client sends,
valid by the schema or not, the answer is never a 5xx and the daemon stays up.

The daemon attaches in a test host's namespace, so a fuzzed attach can only reach that namespace's
interfaces. Examples are bounded (per operation and mode) to keep this well under a minute. Every
operation is fuzzed on random names, then again on a live, attached monitor and capture; a stateful run
follows the document's links (create, then act on what was created).
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
            # Again against a real, attached monitor and capture, so that bodies reach a live cube (not
            # the capture's stream, which answers for as long as the capture runs).
            for prefix, name, body in [("/polycube/v1/dynmon", "live", {"dataplane-config": counter_config()}),
                                       ("/polycube/v1/packetcapture", "cap", {"capture": "ingress"})]:
                if "{name}" not in operation.path or not operation.path.startswith(prefix) \
                        or operation.path.endswith("/pcap"):
                    continue
                if d.client.get(f"{prefix}/{name}").status_code == 404:
                    d.client.post(f"{prefix}/{name}", json=body)
                    d.client.post("/polycube/v1/attach", json={"cube": name, "port": "eth0"})
                _fuzz(operation, GenerationMode.POSITIVE, d.url, seen, failures, {"name": name})
                _fuzz(operation, GenerationMode.NEGATIVE, d.url, seen, failures, {"name": name})
        assert not failures, "\n".join(failures[:10])
        assert len(seen) > 10 * len(operations)
        assert any(400 <= s < 500 for s in seen) and any(s < 300 for s in seen)
    finally:
        assert d.stop() == 0, d.log()
    assert "Traceback" not in d.log(), d.log()[-3000:]


def _delete_everything(d: Daemon) -> None:
    for service, cubes in d.client.get("/polycube/v1/cubes").json().items():
        for cube in cubes:
            prefix = "/monitors" if service == "monitor" else f"/polycube/v1/{service}"
            d.client.delete(f"{prefix}/{cube['name']}")


def test_stateful_links_make_no_server_error(hosts, tmp_path):
    """schemathesis' state machine over the document's links: create a cube, then call what applies to it
    (its settings, metrics, config, delete) with generated bodies; never a 5xx."""
    _, b = hosts
    d = Daemon("--netns", b.netns, "--capture-dir", str(tmp_path), log_path=tmp_path / "serve.log")
    try:
        schema = schemathesis.openapi.from_url(d.url + "/openapi.json")
        links = [op for op in schema.get_all_operations() if op.ok().method.upper() == "POST"
                 and any("links" in r for r in op.ok().definition.raw["responses"].values())]
        assert len(links) >= 3, "the create operations must link to what follows them"
        failures: list[str] = []
        calls: list[tuple[str, int]] = []
        base = d.url

        # The live stream answers for as long as the capture runs: not a step that ends.
        machine = schema.exclude(path_regex=r"/pcap$").as_state_machine()

        class Links(machine):  # type: ignore[misc,valid-type]
            def get_call_kwargs(self, case):
                return {"base_url": base, "timeout": 30}

            def teardown(self):
                # Each example starts from an empty daemon (what a run creates must not change the next).
                _delete_everything(d)

            def validate_response(self, response, case, **kwargs):
                calls.append((case.method, response.status_code))
                if response.status_code >= 500:
                    failures.append(f"{case.method} {case.formatted_path} body={case.body!r:.300} → "
                                    f"{response.status_code}: {response.text[:300]}")

        Links.run(settings=settings(max_examples=25, stateful_step_count=4, deadline=None, derandomize=True,
                                    database=None, suppress_health_check=list(HealthCheck)))
        assert not failures, "\n".join(failures[:10])
        assert d.proc.poll() is None
        # It did go somewhere: cubes were created, and operations on them answered.
        assert ("POST", 201) in calls, calls
        assert any(method != "POST" and status < 300 for method, status in calls), calls
    finally:
        assert d.stop() == 0, d.log()
    assert "Traceback" not in d.log(), d.log()[-3000:]

"""`GET /healthz` (the process answers) and `GET /readyz` (it can do its job): what kubelet's liveness
and readiness probes ask, without the bearer token (probes carry none). pynetmon/service/probes.py says
what each checks and why."""
from __future__ import annotations

from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.responses import JSONResponse

from ..routing import Call, RouteTable

table = RouteTable("probes")


@table.get("/healthz", "Liveness: 200 while the daemon's event loop answers", answer=dict[str, Any])
async def healthz(call: Call) -> dict[str, Any]:
    # Async and touching nothing that blocks: it answers exactly when the event loop does.
    return {"status": "alive"}


@table.get("/readyz", "Readiness: 200 when monitor kinds are loaded, the state is restored and BPF "
           "programs load; 503 naming the failed checks otherwise", answer=dict[str, Any])
async def readyz(call: Call) -> JSONResponse:
    state = call.state
    checks = await run_in_threadpool(state.readiness.checks, state.stopping.is_set())
    ready = all(c["ok"] for c in checks)
    return JSONResponse({"status": "ready" if ready else "not ready", "checks": checks},
                        status_code=200 if ready else 503)

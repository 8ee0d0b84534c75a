"""`GET /metrics`: every monitor's metrics for Prometheus, in the format the `Accept` header asks for
(OpenMetrics, which Prometheus prefers, or the Prometheus text format), written by prometheus_client;
families unchanged since the previous scrape reuse their rendering (pynetmon/service/metrics_exposition.py)."""
from __future__ import annotations

import threading
import weakref

from starlette.responses import Response

from ..collector import DaemonCollector
from ..metrics_exposition import MetricsExposition
from ..routing import Call, RouteTable

table = RouteTable("metrics")
_expositions: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # registry → its MetricsExposition
_lock = threading.Lock()


def _exposition_of(registry) -> MetricsExposition:
    with _lock:
        exposition = _expositions.get(registry)
        if exposition is None:
            exposition = _expositions[registry] = MetricsExposition()
        return exposition


@table.get("/metrics", "Every monitor's metrics (OpenMetrics or Prometheus text, by Accept)",
           media_type="text/plain", answer=str)
def metrics(call: Call) -> Response:
    exposition = _exposition_of(call.registry)
    body, content_type = exposition.response(DaemonCollector(call.registry, call.state.reconciler), call.request.headers.get("accept", ""))
    return Response(body, media_type=content_type)

"""`GET /metrics`: every monitor's metrics for Prometheus, in the format the `Accept` header asks for
(OpenMetrics, which Prometheus prefers, or the Prometheus text format), written by prometheus_client."""
from __future__ import annotations

from prometheus_client.exposition import choose_encoder
from starlette.responses import Response

from ..collector import DaemonCollector
from ..routing import Call, RouteTable

table = RouteTable("metrics")


@table.get("/metrics", "Every monitor's metrics (OpenMetrics or Prometheus text, by Accept)",
           media_type="text/plain", answer={"type": "string"})
def metrics(call: Call):
    encoder, content_type = choose_encoder(call.request.headers.get("accept", ""))
    return Response(encoder(DaemonCollector(call.registry)), media_type=content_type)

"""`GET /metrics`: every monitor's metrics for Prometheus."""
from __future__ import annotations

from ..routing import RouteTable

table = RouteTable("metrics")

"""The API's endpoints, one module per service (Polycube's URL layout), plus /metrics."""
from __future__ import annotations

from ..routing import Endpoint
from . import capture, config, cubes, dynmon, metrics, monitors, probes

TABLES = [cubes.table, dynmon.table, capture.table, monitors.table, config.table, metrics.table, probes.table]


def endpoints() -> list[Endpoint]:
    """Every endpoint, in documentation order."""
    return [e for t in TABLES for e in t.endpoints]

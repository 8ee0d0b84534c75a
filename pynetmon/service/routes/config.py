"""`GET /config`: the declarative config file (`pynetmon serve --config`) as the daemon sees it: its
hash, the last reload (when, why, success, the error with its JSON paths), the entries applied and the
cubes they made. pynetmon/service/reconciler.py says how a reload works."""
from __future__ import annotations

from typing import Any

from ..problems import ApiError
from ..routing import Call, RouteTable

table = RouteTable("config")


@table.get("/config", "The config file's status: hash, last reload (success, error with JSON paths), the "
           "applied entries and the cubes they run (404 without --config)", answer=dict[str, Any])
def show_config(call: Call) -> dict[str, Any]:
    reconciler = call.state.reconciler
    if reconciler is None:
        raise ApiError(404, "the daemon runs without a config file (pynetmon serve --config FILE)")
    return reconciler.status()

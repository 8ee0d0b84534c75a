"""Ready monitors (pynetmon.monitors) in the daemon: `/monitors/{name}` creates, reads (the snapshot),
changes (live options) and deletes one; `/monitors` lists them, `/monitors/kinds` lists what there is.
Their metrics are on /metrics with `monitor="NAME"`."""
from __future__ import annotations

from typing import Annotated, Any

from pydantic import Field
from starlette.concurrency import run_in_threadpool

from ...monitors import available
from .. import models, operations
from ..models import parse_json
from ..routing import Call, RouteTable

table = RouteTable("monitors")
BASE = "/monitors"
Snapshot = Annotated[dict[str, Any], Field(description="the kind's snapshot (docs/monitors.md), plus `monitor`: what it is")]


def _cube(call: Call):
    return call.registry.get(call.params["name"], "monitor")


@table.get(BASE, "List the running monitors (name, kind, interface, netns, options)",
           answer=list[models.MonitorDescription])
def list_monitors(call: Call) -> list[dict[str, Any]]:
    return [c.describe() for c in sorted(call.registry.cubes("monitor"), key=lambda c: c.name)]


@table.get(BASE + "/kinds", "The monitor kinds there are, each with one line of what it does",
           answer=dict[str, str])
def list_kinds(call: Call) -> dict[str, str]:
    return available()


@table.get(BASE + "/{name}", "A monitor's snapshot (the schema of its kind, docs/monitors.md)", answer=Snapshot)
async def show_monitor(call: Call) -> dict[str, Any]:
    cube = await run_in_threadpool(_cube, call)
    return await run_in_threadpool(cube.read)


@table.post(BASE + "/{name}", "Start a monitor of `kind` (on `interface`, in or filtered by `netns`)",
            body=models.MonitorBody, status=201, answer=models.MonitorDescription)
def create_monitor(call: Call) -> dict[str, Any]:
    return operations.create_monitor(call.registry, call.params["name"], parse_json(call.body)).describe()


@table.put(BASE + "/{name}", "Change options the monitor can change while running (others: 400 naming them)",
           body=models.MonitorUpdateBody, answer=models.MonitorDescription)
def update_monitor(call: Call) -> dict[str, Any]:
    operations.update_monitor(call.registry, call.params["name"], parse_json(call.body))
    return _cube(call).describe()


@table.post(BASE + "/{name}/{action}", "Run one of the monitor's actions (ddos: block {cidr, seconds}, unblock, "
            "allow, disallow {cidr}); a restart keeps its effect", body=dict[str, Any], answer=dict[str, Any])
def monitor_action(call: Call) -> dict[str, Any]:
    action = call.params["action"]
    result = operations.monitor_action(call.registry, call.params["name"], action, parse_json(call.body))
    return {"action": action, "result": result}


@table.delete(BASE + "/{name}", "Stop a monitor: detach and free everything it added", status=204)
def delete_monitor(call: Call) -> None:
    call.registry.delete(call.params["name"], "monitor")

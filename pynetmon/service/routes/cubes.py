"""Polycube's service-independent routes: the list of cubes, attach and detach."""
from __future__ import annotations

from typing import Any

from .. import models, operations
from ..models import parse_json
from ..routing import Call, RouteTable

table = RouteTable("cubes")


@table.get("/polycube/v1/cubes", "Every cube by service (services without cubes are left out, as in Polycube)",
           answer=dict[str, list[models.CubeInfo]])
def list_cubes(call: Call) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list] = {}
    for cube in sorted(call.registry.cubes(), key=lambda c: (c.service, c.name)):
        out.setdefault(cube.service, []).append(cube.info())
    return out


@table.post("/polycube/v1/attach", "Attach a cube to a network interface (`port`)", body=models.AttachBody)
def attach(call: Call) -> dict[str, str]:
    operations.attach(call.registry, parse_json(call.body))
    return {"status": "attached"}


@table.post("/polycube/v1/detach", "Detach a cube from its network interface", body=models.AttachBody)
def detach(call: Call) -> dict[str, str]:
    operations.detach(call.registry, parse_json(call.body))
    return {"status": "detached"}

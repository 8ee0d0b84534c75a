"""Polycube's service-independent routes: the list of cubes, attach and detach."""
from __future__ import annotations

import socket
from typing import Any

from ... import __version__, netns
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


@table.get("/polycube/v1/cubes/{name}", "One cube by name, whatever its service", answer=models.CubeInfo)
def show_cube(call: Call) -> dict[str, Any]:
    return call.registry.get(call.params["name"]).info()


@table.get("/polycube/v1/netdevs", "The network interfaces cubes can attach to (in the daemon's namespace)",
           answer=list[dict[str, str]])
def list_netdevs(call: Call) -> list[dict[str, str]]:
    with netns.enter(call.registry.netns):
        names = sorted(name for _, name in socket.if_nameindex())
    return [{"name": name} for name in names]


@table.get("/polycube/v1/version", "The daemon's version, in polycubed's shape", answer=dict[str, dict[str, str]])
def version(call: Call) -> dict[str, dict[str, str]]:
    return {"polycubed": {"version": __version__}, "pynetmon": {"version": __version__}}


@table.post("/polycube/v1/attach", "Attach a cube to a network interface (`port`)", body=models.AttachBody)
def attach(call: Call) -> dict[str, str]:
    operations.attach(call.registry, parse_json(call.body))
    return {"status": "attached"}


@table.post("/polycube/v1/detach", "Detach a cube from its network interface", body=models.AttachBody)
def detach(call: Call) -> dict[str, str]:
    operations.detach(call.registry, parse_json(call.body))
    return {"status": "detached"}

"""Polycube's dynmon service: `/polycube/v1/dynmon/...`, the routes dynmon_injector.py and
dynmon_extractor.py use, and the rest of the read side (dataplane-config, metrics by direction and name,
open-metrics)."""
from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field
from starlette.responses import PlainTextResponse, Response

from ...dynmon.config import DataplaneConfig, PathConfig
from ...dynmon.json_text import dumps
from .. import models, operations
from ..dynmon_cube import DynmonCube
from ..models import parse_json
from ..problems import ApiError, not_found
from ..routing import Call, RouteTable

BASE = "/polycube/v1/dynmon"
KINDS = {"ingress-metrics": "ingress", "egress-metrics": "egress"}
PATHS = ("ingress-path", "egress-path")
FIELDS = ("value", "timestamp", "name")  # a metric's leaves, each its own URL in Polycube's model
table = RouteTable("dynmon", params={"kind": Literal[tuple(KINDS)],  # from KINDS
                                     "metric": Annotated[str, Field(min_length=1)],
                                     "path": Literal[PATHS]})  # from PATHS
JSON = "application/json"


def _links(call: Call) -> list[dict]:
    # Polycube answers carry HATEOAS links; dynmon_extractor.py deletes the key, so it must exist.
    base = str(call.request.url.path)
    return [{"rel": "self", "href": base}] + [{"rel": kind, "href": f"{base}/{kind}"} for kind in KINDS]


def _kind(call: Call) -> str:
    kind = call.params["kind"]
    if kind not in KINDS:
        raise not_found(f"metric list {kind!r} (use ingress-metrics or egress-metrics)")
    return KINDS[kind]


def _cube(call: Call) -> DynmonCube:
    """The dynmon cube the path names (404 when there is none)."""
    return call.registry.get(call.params["name"], "dynmon")

@table.get(BASE, "List the dynmon cubes", answer=list[models.CubeInfo])
def list_dynmon(call: Call) -> list[dict[str, Any]]:
    return [c.info() for c in call.registry.cubes("dynmon")]


@table.get(BASE + "/{name}", "Show a dynmon cube (its type, interface and dataplane-config)", answer=models.CubeInfo)
def show_dynmon(call: Call) -> dict[str, Any]:
    return _cube(call).info()


@table.post(BASE + "/{name}", "Create a dynmon cube, optionally with its dataplane-config",
            body=models.DynmonBody, body_required=False, status=201, answer=models.CubeInfo, heavy=True)
def create_dynmon(call: Call) -> dict[str, Any]:
    cube = operations.create_dynmon(call.registry, call.params["name"], parse_json(call.body, allow_empty=True))
    return cube.info()


@table.delete(BASE + "/{name}", "Detach and delete a dynmon cube", status=204)
def delete_dynmon(call: Call) -> None:
    call.registry.delete(call.params["name"], "dynmon")


@table.get(BASE + "/{name}/dataplane-config", "The running dataplane-config", answer=DataplaneConfig)
def show_dataplane_config(call: Call) -> dict[str, Any]:
    return _cube(call).config or {}


@table.put(BASE + "/{name}/dataplane-config",
           "Replace the dataplane; on a bad config the running one keeps running (400 names the problem)",
           body=DataplaneConfig, status=200, answer=models.CubeInfo, heavy=True)
def replace_dataplane_config(call: Call) -> dict[str, Any]:
    operations.set_dataplane_config(call.registry, call.params["name"], parse_json(call.body))
    return _cube(call).info()


@table.patch(BASE + "/{name}", "Change a dynmon cube: a `dataplane-config` given replaces the running one "
             "(Polycube's PATCH of the cube)", body=models.DynmonBody, status=200, answer=models.CubeInfo, heavy=True)
def patch_dynmon(call: Call) -> dict[str, Any]:
    cube = _cube(call)
    body = models.validate(models.DynmonBody, parse_json(call.body))
    if "type" in body.model_fields_set and body.type != cube.cube_type:
        raise ApiError(409, f"dynmon {cube.name!r} is {cube.cube_type.value}; the type is fixed at creation "
                            "(delete and create the cube again)", [("type", "cannot change")])
    if body.dataplane_config is not None:
        operations.set_dataplane_config(call.registry, cube.name, body.dataplane_config)
    return cube.info()


def _path(call: Call) -> str:
    if call.params["path"] not in PATHS:
        raise not_found(f"dataplane-config path {call.params['path']!r} (use ingress-path or egress-path)")
    return call.params["path"]


@table.get(BASE + "/{name}/dataplane-config/{path}", "One path of the running dataplane-config ({} when the "
           "path runs no program)", answer=PathConfig, operation_id="get_dataplane_path")
def show_dataplane_path(call: Call) -> dict[str, Any]:
    path = _path(call)
    return (_cube(call).config or {}).get(path) or {}


def _replace_path(call: Call, path_config: Any) -> dict[str, Any]:
    cube = _cube(call)
    path = _path(call)
    config = {**(cube.config or {}), path: path_config}  # the other path stays as it runs
    operations.set_dataplane_config(call.registry, cube.name, config)
    return cube.info()


@table.put(BASE + "/{name}/dataplane-config/{path}", "Replace one path's program and metrics; the other path "
           "keeps running (on a bad config the running one stays)", body=PathConfig, status=200,
           answer=models.CubeInfo, heavy=True, operation_id="put_dataplane_path")
def replace_dataplane_path(call: Call) -> dict[str, Any]:
    return _replace_path(call, parse_json(call.body))


@table.delete(BASE + "/{name}/dataplane-config/{path}", "Remove one path's program (the other path keeps running)",
              status=204, heavy=True, operation_id="delete_dataplane_path")
def delete_dataplane_path(call: Call) -> None:
    _replace_path(call, {})


def _raw(call: Call) -> bool:
    """`?raw=true`: Polycube's numbers (`__be` fields and addresses as the native integers of their bytes,
    per-CPU values unsummed) instead of pynetmon's (docs/polycube.md, "Where pynetmon differs")."""
    value = call.request.query_params.get("raw", "false").lower()
    if value not in ("true", "false", "1", "0"):
        raise ApiError(400, f"raw must be true or false, not {value!r}", [("raw", "not a boolean")])
    return value in ("true", "1")


@table.get(BASE + "/{name}/metrics", "All metrics, ingress and egress (`?raw=true`: Polycube's numbers)",
           answer=models.Metrics)
def all_metrics(call: Call) -> Response:
    if _raw(call):
        return Response(dumps({**_cube(call).metrics(raw=True), "_links": _links(call)}), media_type=JSON)
    body = _cube(call).metrics_json()  # written in bulk (Dynmon.metrics_json); the links appended
    return Response(body[:-1] + b',"_links":' + dumps(_links(call)).encode() + b"}", media_type=JSON)


@table.get(BASE + "/{name}/metrics/{kind}", "The metrics of one direction (`?raw=true`: Polycube's numbers)",
           answer=list[models.Metric],
           operation_id="get_direction_metrics")
def direction_metrics(call: Call) -> Response:
    if _raw(call):
        return Response(dumps(_cube(call).metrics(_kind(call), raw=True)), media_type=JSON)
    return Response(_cube(call).metrics_json(_kind(call)), media_type=JSON)


def _metric(call: Call) -> dict:
    cube = _cube(call)
    direction, wanted = _kind(call), call.params["metric"]
    # Read only this metric: reading the others would empty the ones configured empty-on-read.
    return cube.metrics(direction, wanted, raw=_raw(call))


@table.get(BASE + "/{name}/metrics/{kind}/{metric}", "One metric (`?raw=true`: Polycube's numbers)",
           answer=models.Metric)
def one_metric(call: Call) -> Response:
    if _raw(call):
        return Response(dumps(_metric(call)), media_type=JSON)
    # Read only this metric: reading the others would empty the ones configured empty-on-read.
    return Response(_cube(call).metrics_json(_kind(call), call.params["metric"]), media_type=JSON)


def _metric_leaf(field: str) -> None:
    """`.../{metric}/value`, `/timestamp`, `/name`: one literal route each, as Polycube's model has them."""
    def metric_leaf(call: Call) -> Any:
        return _metric(call)[field]
    table.get(BASE + "/{name}/metrics/{kind}/{metric}/" + field, f"One metric's {field}", answer=Any,
              operation_id=f"get_metric_{field}")(metric_leaf)


for _field in FIELDS:
    _metric_leaf(_field)


OPEN_METRICS_FORMATS = {"openmetrics": "application/openmetrics-text; version=1.0.0",
                        "prometheus": "text/plain; version=0.0.4", "polycube": "text/plain"}


@table.get(BASE + "/{name}/open-metrics", "All metrics in the OpenMetrics text format (`?format=prometheus`: "
           "Prometheus' text format; `?format=polycube`: Polycube's text, byte for byte)",
           media_type="text/plain", answer=str)
def open_metrics(call: Call) -> PlainTextResponse:
    fmt = call.request.query_params.get("format", "openmetrics")
    if fmt not in OPEN_METRICS_FORMATS:
        raise ApiError(400, f"format must be one of {', '.join(OPEN_METRICS_FORMATS)}, not {fmt!r}",
                       [("format", "unknown format")])
    cube = _cube(call)
    return PlainTextResponse(cube.open_metrics(fmt), media_type=OPEN_METRICS_FORMATS[fmt])

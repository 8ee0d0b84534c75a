"""The OpenAPI 3.1 description, built from the route table and the pydantic models (never by hand)."""
from __future__ import annotations

import re
from typing import Any

from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from .. import __version__
from ..dynmon.config import DataplaneConfig
from . import models
from .models import NAME_PATTERN
from .routing import Endpoint

REF = "#/components/schemas/{model}"
PARAM_SCHEMAS = {
    "name": {"type": "string", "pattern": NAME_PATTERN},
    "kind": {"type": "string", "enum": ["ingress-metrics", "egress-metrics"]},
    "metric": {"type": "string", "minLength": 1},
    "leaf": {"type": "string", "enum": ["capture", "filter", "snaplen", "dump", "networkmode"]},
}
ALWAYS_DOCUMENTED: list[type[BaseModel]] = [DataplaneConfig, models.ErrorBody, models.CubeInfo, models.Metric, models.Metrics]


def _schema(thing: type[BaseModel] | dict | None) -> dict | None:
    if thing is None:
        return None
    if isinstance(thing, dict):
        return thing
    return {"$ref": REF.format(model=thing.__name__)}


def _error(description: str) -> dict:
    return {"description": description,
            "content": {"application/json": {"schema": {"$ref": REF.format(model="ErrorBody")}}}}


def build(endpoints: list[Endpoint], *, token: bool) -> dict[str, Any]:
    """The document for `endpoints`; `token` says whether the daemon requires a bearer token."""
    used: set[type[BaseModel]] = {e.body for e in endpoints if isinstance(e.body, type)} | \
           {e.answer for e in endpoints if isinstance(e.answer, type)} | set(ALWAYS_DOCUMENTED)
    _, top = models_json_schema([(m, "validation") for m in sorted(used, key=lambda m: m.__name__)],
                                ref_template=REF)
    paths: dict[str, dict] = {}
    for e in endpoints:
        op: dict[str, Any] = {"operationId": e.operation_id, "summary": e.summary, "tags": e.tags}
        names = re.findall(r"{(\w+)}", e.path)
        if names:
            op["parameters"] = [{"name": n, "in": "path", "required": True,
                                 "schema": PARAM_SCHEMAS.get(n, {"type": "string"})} for n in names]
        if e.body is not None:
            op["requestBody"] = {"required": e.body_required,
                                 "content": {"application/json": {"schema": _schema(e.body)}}}
        ok: dict[str, Any] = {"description": "success"}
        if e.status != 204 and e.answer is not None:
            ok["content"] = {e.media_type: {"schema": _schema(e.answer)}}
        op["responses"] = {str(e.status): ok}
        if e.body is not None:
            op["responses"]["400"] = _error("invalid request: `problems` lists each JSON path and reason")
            op["responses"]["413"] = _error("the request body is too large")
        if e.body is not None or "name" in names:
            op["responses"]["422"] = _error("a field has the wrong type, an unknown field, or a bad cube name")
        if e.method in ("POST", "PUT", "PATCH"):
            op["responses"]["507"] = _error("a resource limit of the daemon would be exceeded (the answer "
                                            "names the limit and the `pynetmon serve` option that raises it)")
        if names:
            op["responses"]["404"] = _error("no such cube or metric")
        if e.method != "GET":
            op["responses"]["409"] = _error("conflicts with the cube's state")
        if token:
            op["responses"]["401"] = _error("the bearer token is missing or wrong")
        paths.setdefault(e.path, {})[e.method.lower()] = op
    doc: dict[str, Any] = {
        "openapi": "3.1.0",
        "info": {"title": "pynetmon", "version": __version__,
                 "description": "eBPF network monitoring and packet capture daemon; Polycube-compatible "
                                "dynmon and packetcapture routes under /polycube/v1."},
        "paths": paths,
        "components": {"schemas": top.get("$defs", {})},
    }
    if token:
        doc["components"]["securitySchemes"] = {"bearer": {"type": "http", "scheme": "bearer"}}
        doc["security"] = [{"bearer": []}]
    return doc

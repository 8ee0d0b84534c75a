"""Request and response bodies, as pydantic models: they validate what clients send and describe it in
the OpenAPI document. Field names follow Polycube's REST API (kebab-case), so its tools work unchanged.

The dataplane configuration itself is validated by `pynetmon.Dynmon` (which knows what the C code
must define); the models here describe it for clients and reject what is structurally wrong.
"""
from __future__ import annotations

import json
from enum import Enum
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, WithJsonSchema, field_validator

from ..validation import problems_of
from .problems import ApiError

NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"
MAX_SNAPLEN = 262144


class CubeType(str, Enum):
    """How a dynmon cube hooks into an interface (Polycube's cube types)."""

    TC = "TC"
    XDP_SKB = "XDP_SKB"
    XDP_DRV = "XDP_DRV"

    @property
    def attach_mode(self) -> str:
        """The `mode` argument of `Dynmon.attach`."""
        return self.value.lower()


# The dataplane-config is validated by pynetmon.dynmon (which also takes Polycube's older shapes);
# the OpenAPI document shows pynetmon.dynmon.config.DataplaneConfig's schema for it.
DATAPLANE_CONFIG_REF = {"$ref": "#/components/schemas/DataplaneConfig"}
DataplaneConfigJson = Annotated[dict[str, Any], WithJsonSchema(DATAPLANE_CONFIG_REF)]


class DynmonBody(BaseModel):
    """Body of `POST /polycube/v1/dynmon/{name}`: Polycube also sends read-only fields back; they are ignored."""

    model_config = ConfigDict(extra="ignore", populate_by_name=True)
    dataplane_config: DataplaneConfigJson | None = Field(None, alias="dataplane-config")
    type: CubeType = CubeType.TC


class Capture(str, Enum):
    """Which direction a packet capture records."""

    bidirectional = "bidirectional"
    ingress = "ingress"
    egress = "egress"
    off = "off"


def _capture(value: Any) -> Any:
    # Polycube's YANG spells the enum in upper case, polycubectl in lower case: accept both.
    return value.lower() if isinstance(value, str) else value


class PacketCaptureBody(BaseModel):
    """Body of `POST`/`PATCH /polycube/v1/packetcapture/{name}` (PATCH: only the fields to change)."""

    model_config = ConfigDict(extra="ignore", populate_by_name=True)
    capture: Capture | None = None
    filter: str | None = Field(None, max_length=4096, description="tcpdump filter expression")
    snaplen: int | None = Field(None, ge=1, le=MAX_SNAPLEN)
    dump: str | None = Field(None, max_length=4096, description="path prefix of the pcap files written")
    networkmode: bool | None = Field(None, description="packets are kept for clients instead of a file")
    anonimize: Literal[False] | None = Field(None, description="not supported: only false is accepted")

    _lower_capture = field_validator("capture", mode="before")(staticmethod(_capture))


class AttachBody(BaseModel):
    """Body of `POST /polycube/v1/attach` and `/detach`: `port` is an interface name."""

    model_config = ConfigDict(extra="ignore")
    cube: str = Field(pattern=NAME_PATTERN)
    port: str = Field(min_length=1, max_length=15, pattern=r"^[^/\s:]+$")
    position: str | None = None


class Problem(BaseModel):
    path: str
    reason: str


class ErrorBody(BaseModel):
    """Every error answer."""

    error: str
    problems: list[Problem] = []


class Metric(BaseModel):
    name: str
    value: Any
    timestamp: int


class Metrics(BaseModel):
    ingress_metrics: list[Metric] = Field([], alias="ingress-metrics")
    egress_metrics: list[Metric] = Field([], alias="egress-metrics")


class CubeInfo(BaseModel):
    """What `GET /polycube/v1/{service}/{name}` answers (besides the service's own fields)."""

    model_config = ConfigDict(extra="allow")
    name: str
    service_name: str = Field(alias="service-name")
    type: str
    parent: str = Field(description="interface the cube is attached to, '' when detached")


class GlobalHeader(BaseModel):
    magic: int
    version_major: int
    version_minor: int
    thiszone: int
    sigfigs: int
    snaplen: int
    linktype: int


class Packet(BaseModel):
    """One captured packet; `rawdata` holds its bytes as latin-1 text ('' when no packet is waiting)."""

    capturelen: int = 0
    packetlen: int = 0
    timestamp_seconds: int = Field(0, alias="timestamp-seconds")
    timestamp_microseconds: int = Field(0, alias="timestamp-microseconds")
    rawdata: str = ""


def parse_json(body: bytes, *, allow_empty: bool = False) -> Any:
    """The request body as JSON (clients such as Polycube's tools send no Content-Type, so none is required)."""
    if not body.strip():
        if allow_empty:
            return None
        raise ApiError(400, "the request body is empty; a JSON document is required", [("", "empty body")])
    try:
        return json.loads(body)
    except UnicodeDecodeError:
        raise ApiError(400, "the request body is not UTF-8", [("", "not UTF-8")]) from None
    except json.JSONDecodeError as exc:
        reason = f"not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}"
        raise ApiError(400, f"the request body is {reason}", [("", reason)]) from None
    except RecursionError:
        raise ApiError(400, "the request body is nested too deeply", [("", "nested too deeply")]) from None


def validate(model: type[BaseModel], data: Any, prefix: str = "") -> BaseModel:
    """`model` built from `data`, or an ApiError(400) listing every problem with its JSON path."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        problems = problems_of(exc, prefix)
        text = "; ".join(f"{p}: {r}" if p else r for p, r in problems)
        raise ApiError(400, f"invalid request: {text}", problems) from None

"""Request and response bodies, as pydantic models: they validate what clients send and describe it in
the OpenAPI document. Field names follow Polycube's REST API (kebab-case), so its tools work unchanged.

The dataplane configuration itself is validated by `pynetmon.Dynmon` (which knows what the C code
must define); the models here describe it for clients and reject what is structurally wrong.
"""
from __future__ import annotations

import json
import re
from enum import Enum
from typing import Annotated, Any, Literal, TypeVar

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    WithJsonSchema,
    field_validator,
    model_validator,
)
from typing_extensions import TypedDict

from ..filter.cbpf import MAX_SNAPLEN
from ..validation import problems_of
from .problems import ApiError

NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"
NAME_RE = re.compile(NAME_PATTERN)
CubeName = Annotated[str, Field(pattern=NAME_PATTERN)]  # a cube's name, as a path parameter
# Fields Polycube shows on every cube and its tools send back unchanged: accepted and ignored. Any other
# unknown field is an error (a misspelt "snaplen" must not be silently ignored).
POLYCUBE_READ_ONLY = frozenset({"name", "uuid", "service-name", "type-name", "loglevel", "parent", "shadow", "span",
                                "ports", "status", "_links"})


def check_name(name: str, path: str = "name") -> str:
    """`name` if it is a valid cube name, else ApiError(422) naming the pattern."""
    if not isinstance(name, str) or not NAME_RE.match(name):
        reason = f"{name!r} is not a valid cube name (pattern {NAME_PATTERN}: letters, digits, '_', '.', '-', " \
                 "at most 64 characters, starting with a letter or digit)"
        raise ApiError(422, f"{path}: {reason}", [(path, reason)])
    return name


class StrictBody(BaseModel):
    """Base of every request body: strict types (no "96" for 96, no true for 1, no 1.0 for 1) and unknown
    fields refused, so that a client's mistake is a 422 naming the field instead of a silent surprise."""

    model_config = ConfigDict(strict=True, extra="forbid", populate_by_name=True)

    @model_validator(mode="before")
    @classmethod
    def _drop_read_only(cls, data: Any) -> Any:
        if isinstance(data, dict) and POLYCUBE_READ_ONLY & data.keys():
            data = {k: v for k, v in data.items() if k not in POLYCUBE_READ_ONLY or k in cls.model_fields}
        return data


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


class DynmonBody(StrictBody):
    """Body of `POST /polycube/v1/dynmon/{name}`: Polycube's read-only fields are ignored, others refused."""

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


class PacketCaptureBody(StrictBody):
    """Body of `POST`/`PATCH /polycube/v1/packetcapture/{name}` (PATCH: only the fields to change)."""

    capture: Capture | None = None
    filter: str | None = Field(None, max_length=4096,
                               description="tcpdump filter expression ('all': everything; none set: nothing)")
    snaplen: int | None = Field(None, ge=1, le=MAX_SNAPLEN)
    dump: str | None = Field(None, max_length=4096, description="the pcap file written, '.pcap' added (relative to the capture "
                      "directory; /tmp stands for it)")
    networkmode: bool | None = Field(None, description="packets are kept for clients instead of a file")
    anonimize: Literal[False] | None = Field(None, description="not supported: only false is accepted")

    _lower_capture = field_validator("capture", mode="before")(staticmethod(_capture))


class AttachBody(StrictBody):
    """Body of `POST /polycube/v1/attach` and `/detach`: `port` is an interface name, or Polycube's
    `cube:port` form naming a bridge's member interface (`br1:veth1`)."""

    cube: str = Field(pattern=NAME_PATTERN)
    port: str = Field(min_length=1, max_length=31, pattern=r"^[^/\s:]{1,15}(:[^/\s:]{1,15})?$")
    position: Literal["auto", "first", "last"] | None = Field(
        None, description="where among the programs already on the hooks: first, or last (auto: last)")
    before: str | None = Field(None, pattern=NAME_PATTERN, description="go before this dynmon cube's programs")
    after: str | None = Field(None, pattern=NAME_PATTERN, description="go after this dynmon cube's programs")


MONITOR_NETNS_PATTERN = r"^([A-Za-z0-9][A-Za-z0-9_.-]{0,63}|/proc/[0-9]{1,10}/ns/net|/run/netns/[A-Za-z0-9][A-Za-z0-9_.-]{0,63})$"


class MonitorBody(StrictBody):
    """Body of `POST /monitors/{name}`: a ready monitor of `kind` (see `GET /monitors/kinds`)."""

    kind: str = Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")
    interface: str | None = Field(None, min_length=1, max_length=15, pattern=r"^[^/\s:]+$",
                                  description="the interface packet monitors attach to")
    # Only namespace names and the two kinds of namespace paths: a client must not make the daemon (root)
    # open arbitrary files (a FIFO would block it).
    netns: str | None = Field(None, pattern=MONITOR_NETNS_PATTERN,
                              description="network namespace: name under /run/netns, /run/netns/NAME or "
                                          "/proc/PID/ns/net; tracepoint monitors count only its events")
    options: dict[str, Any] = Field(default_factory=dict, description="the kind's options (validated by it)")


class MonitorUpdateBody(StrictBody):
    """Body of `PUT /monitors/{name}`: new values of options the monitor can change while running."""

    options: dict[str, Any]


class Problem(BaseModel):
    path: str
    reason: str


class ErrorBody(BaseModel):
    """Every error answer (`message` repeats `error` under the key polycubed uses)."""

    error: str
    message: str
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
    uuid: str
    service_name: str = Field(alias="service-name")
    type: str
    loglevel: str = Field("INFO", description="Polycube's log level field (pynetmon logs through its own logger)")
    shadow: bool = False
    span: bool = False
    parent: str = Field(description="interface the cube is attached to (or waits for), '' when detached")
    status: Literal["attached", "detached", "waiting for interface"] = Field(
        "detached", description="'waiting for interface' while its interface does not exist: it is attached "
                                "again when the interface appears")


class MonitorDescription(TypedDict):
    """One running ready monitor, as `GET /monitors` lists it."""

    name: str
    kind: str
    interface: str | None
    netns: str | None
    options: dict[str, Any]


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


M = TypeVar("M", bound=BaseModel)


def validate(model: type[M], data: Any, prefix: str = "") -> M:
    """`model` built from `data` (JSON values) with JSON's strict rules, or an ApiError(422) listing every
    problem with its JSON path."""
    try:
        # Validated as JSON text: strict mode then takes "ingress" for an enum member, as a client sends it.
        return model.model_validate_json(json.dumps(data), strict=True)
    except (TypeError, ValueError) as exc:
        if not isinstance(exc, ValidationError):  # not JSON at all (NaN, ...): say so, as a client error
            raise ApiError(422, f"invalid request: {exc}", [(prefix, str(exc))]) from None
        known = ", ".join(sorted(f.alias or n for n, f in model.model_fields.items()))
        problems = [(path, f"{reason} (known: {known})" if reason == "unknown field" else reason)
                    for path, reason in problems_of(exc, prefix)]
        text = "; ".join(f"{p}: {r}" if p else r for p, r in problems)
        raise ApiError(422, f"invalid request: {text}", problems) from None

"""Polycube's dynmon `dataplane-config`, as a validated model.

The JSON is accepted as Polycube writes it::

    {"ingress-path": {"name": "...", "code": "C source",
                      "metric-configs": [{"name": "packets_total", "map-name": "PKT_COUNTER",
                                          "extraction-options": {"swap-on-read": false, "empty-on-read": false},
                                          "open-metrics-metadata": {"help": "...", "type": "counter",
                                                                    "labels": [{"name": "l", "value": "v"}]}}]},
     "egress-path": {}}

A path that is absent leaves that path as it is (Polycube's behaviour); an empty object removes its
program. Older published examples are accepted too: `"metrics"` for `"metric-configs"`, and a bare path
object (`{"name", "code", "metrics"}`) at the top level, which is the ingress path.

pynetmon extensions, all optional: `"object"` in a path (a precompiled eBPF object file instead of
`code`; the Python API also takes `code` as ELF bytes or a `pathlib.Path`), and `"buckets"` in
`open-metrics-metadata` (upper bounds of a histogram's buckets).

Every problem is reported at once, each with its JSON path, in a `ConfigError`.
"""
from __future__ import annotations

import json
import math
import os
import re
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from ..errors import ConfigError
from ..link.base import DIRECTIONS
from ..validation import problems_of

METRIC_TYPES = ("counter", "gauge", "histogram", "summary", "untyped")
_METRIC_NAME = re.compile(r"^[a-zA-Z_:][a-zA-Z0-9_:]*$")
_LABEL_NAME = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")
ELF_MAGIC = b"\x7fELF"


class _Model(BaseModel):
    # Unknown fields are errors: a misspelt "metric-config" must not silently export nothing.
    model_config = ConfigDict(extra="forbid", populate_by_name=True, frozen=True)


class Label(_Model):
    """A static label added to every sample of a metric."""

    name: str
    value: str

    @field_validator("name")
    @classmethod
    def _label_name(cls, v: str) -> str:
        if not _LABEL_NAME.match(v) or v.startswith("__"):
            raise ValueError(f"{v!r} is not a valid label name (letters, digits and _, not starting with a "
                             "digit or with __)")
        return v


class OpenMetricsMetadata(_Model):
    """How a metric is exported in the OpenMetrics exposition."""

    help: str = ""
    type: str = "untyped"
    labels: list[Label] = Field(default_factory=list)
    buckets: list[float] | None = None

    @field_validator("type", mode="before")
    @classmethod
    def _type(cls, v: Any) -> str:
        if not isinstance(v, str) or v.lower() not in METRIC_TYPES:
            raise ValueError(f"{v!r} is not a metric type; use one of {', '.join(METRIC_TYPES)} (any case)")
        return v.lower()

    @field_validator("labels")
    @classmethod
    def _unique_labels(cls, v: list[Label]) -> list[Label]:
        names = [label.name for label in v]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"label(s) {', '.join(dup)} given more than once")
        return v

    @field_validator("buckets")
    @classmethod
    def _sorted_buckets(cls, v: list[float] | None) -> list[float] | None:
        if v is not None and (not v or any(b >= a for a, b in zip(v[1:], v))):
            raise ValueError("bucket upper bounds must be a non-empty, strictly increasing list")
        return v


class ExtractionOptions(_Model):
    """How a map is read: `empty_on_read` clears what was read; `swap_on_read` reads a quiescent copy."""

    swap_on_read: bool = Field(False, alias="swap-on-read")
    empty_on_read: bool = Field(False, alias="empty-on-read")


class MetricConfig(_Model):
    """One exported metric: a name and the map it is read from."""

    name: str
    map_name: str = Field(alias="map-name")
    extraction_options: ExtractionOptions = Field(default_factory=ExtractionOptions, alias="extraction-options")
    open_metrics_metadata: OpenMetricsMetadata | None = Field(None, alias="open-metrics-metadata")

    @field_validator("name", "map_name")
    @classmethod
    def _not_empty(cls, v: str) -> str:
        if not v.strip():
            raise ValueError("must not be empty")
        return v

    @model_validator(mode="after")
    def _openmetrics_name(self) -> MetricConfig:
        if self.open_metrics_metadata is not None and not _METRIC_NAME.match(self.name):
            raise ValueError(f"metric name {self.name!r} is not a valid OpenMetrics name "
                             "(letters, digits, _ and :, not starting with a digit)")
        return self


class PathConfig(_Model):
    """The program of one direction. `code` is C (libbpf or Polycube/BCC style) or a compiled object."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True, frozen=True, arbitrary_types_allowed=True)

    name: str = ""
    code: str | bytes | Path | None = None
    object: str | None = None
    metric_configs: list[MetricConfig] = Field(default_factory=list, alias="metric-configs")

    @model_validator(mode="before")
    @classmethod
    def _legacy_metrics_key(cls, data: Any) -> Any:
        if isinstance(data, dict) and "metrics" in data:
            if "metric-configs" in data or "metric_configs" in data:
                raise ValueError('give "metric-configs" or the older "metrics", not both')
            data = dict(data)
            data["metric-configs"] = data.pop("metrics")
        return data

    @model_validator(mode="after")
    def _check(self) -> PathConfig:
        has_code = self.code is not None and self.code != ""
        if has_code and self.object:
            raise ValueError('give "code" or "object", not both')
        if not has_code and not self.object and (self.name or self.metric_configs):
            raise ValueError('"code" is required (C source of the program) unless the path is {} (no program)')
        if isinstance(self.code, bytes) and not self.code.startswith(ELF_MAGIC):
            raise ValueError('"code" given as bytes must be an ELF eBPF object')
        names = [m.name for m in self.metric_configs]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"metric name(s) {', '.join(dup)} used more than once in this path")
        return self

    @property
    def empty(self) -> bool:
        """True for `{}`: no program on this path."""
        return not self.code and not self.object

    def metric(self, name: str) -> MetricConfig:
        for m in self.metric_configs:
            if m.name == name:
                return m
        raise KeyError(name)

    @property
    def swap_on_read(self) -> bool:
        """True when any metric of the path asks for swap-on-read (the path then needs two instances)."""
        return any(m.extraction_options.swap_on_read for m in self.metric_configs)

    def to_json(self) -> dict:
        """The path in Polycube's JSON shape (bytes code is not representable and is left out)."""
        out = self.model_dump(by_alias=True, exclude_none=True, exclude={"code"})
        if isinstance(self.code, str):
            out["code"] = self.code
        elif isinstance(self.code, Path):
            out["object"] = str(self.code)
        if self.empty:
            return {}
        return out


class DataplaneConfig(_Model):
    """Both paths. `None` means "not given" (keep what runs); an empty PathConfig means "no program"."""

    ingress_path: PathConfig | None = Field(None, alias="ingress-path")
    egress_path: PathConfig | None = Field(None, alias="egress-path")

    def path(self, direction: str) -> PathConfig | None:
        return self.ingress_path if direction == "ingress" else self.egress_path

    def to_json(self) -> dict:
        out = {}
        for direction in DIRECTIONS:
            path = self.path(direction)
            if path is not None:
                out[f"{direction}-path"] = path.to_json()
        return out


def _load_source(source: Any) -> Any:
    """A dict from a dict, JSON text, or a path to a JSON file."""
    if isinstance(source, (DataplaneConfig, dict)):
        return source
    text = None
    where = "dataplane-config"
    if isinstance(source, (bytes, bytearray)):
        text = bytes(source).decode("utf-8", "replace")
    elif isinstance(source, os.PathLike) or (isinstance(source, str) and not source.lstrip().startswith(("{", "["))):
        where = os.fspath(source)
        try:
            text = Path(source).read_text()
        except OSError as exc:
            raise ConfigError([("", f"cannot read dataplane-config file {where!r}: {exc.strerror}")]) from None
    elif isinstance(source, str):
        text = source
    else:
        raise ConfigError([("", (f"a dataplane-config must be a dict, JSON text or a file path, not "
                                 f"{type(source).__name__}"))])
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError([("", f"{where} is not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}")]) \
            from None


def parse_config(source: Any, *, strict: bool = False) -> DataplaneConfig:
    """Validate a dataplane-config (dict, JSON text, or path of a JSON file). `strict` refuses values of
    the wrong JSON type that would otherwise be converted ("true" for true, 1 for true, 5 for "5").

    >>> parse_config({"ingress-path": {"name": "n", "code": "...", "metric-configs": []}}).ingress_path.name
    'n'

    Raises ConfigError listing every problem with its JSON path.
    """
    data = _load_source(source)
    if isinstance(data, DataplaneConfig):
        return data
    if not isinstance(data, dict):
        raise ConfigError([("", f"a dataplane-config must be a JSON object, not {type(data).__name__}")])
    if "dataplane-config" in data and len(data) == 1:
        data = data["dataplane-config"]  # the body of Polycube's `dynmon` resource
    if "code" in data and not ({"ingress-path", "egress-path"} & set(data)):
        data = {"ingress-path": data}  # the oldest published examples: one path, which is ingress
    try:
        return DataplaneConfig.model_validate(data, strict=strict)
    except ValidationError as exc:
        problems = problems_of(exc)
        raise ConfigError(problems) from None


def histogram_bounds(meta: OpenMetricsMetadata, nbuckets: int) -> list[float]:
    """Upper bounds for `nbuckets` bucket counts: the configured `buckets`, else BCC's log2 convention
    (slot 0 holds 0, slot i holds [2^(i-1), 2^i - 1]); the last bound is always +Inf."""
    if meta.buckets:
        bounds = list(meta.buckets)[:nbuckets]
        if len(bounds) == nbuckets - 1:
            bounds.append(math.inf)  # the last bucket is the implicit +Inf one
        if len(bounds) < nbuckets:
            raise ValueError(f"{len(meta.buckets)} bucket bounds given for {nbuckets} buckets")
    else:
        bounds = [float(2 ** i - 1) for i in range(nbuckets)]
    bounds[-1] = math.inf
    return bounds


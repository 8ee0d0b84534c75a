"""One home for turning pydantic's validation errors into pynetmon's: every problem with its JSON path.

Used by every validated input (Dynmon configs, REST bodies, monitor options), so that a user sees the
same `path: reason` form wherever the input came from.
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from .errors import ConfigError

M = TypeVar("M", bound=BaseModel)


def json_path(loc: tuple) -> str:
    """pydantic's error location as a JSON path: ('ingress-path', 'metric-configs', 1, 'map-name') →
    'ingress-path.metric-configs[1].map-name'. Validator wrappers pydantic puts in the location
    ('function-after', 'union[...]') are not part of the document and are left out."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif str(part).startswith(("function-", "union[")):
            continue
        else:
            out += ("." if out else "") + str(part)
    return out


def message(err: Mapping[str, Any]) -> str:
    """pydantic's message for one error, in our words where pydantic's are unclear."""
    kind = err.get("type")
    if kind == "missing":
        return "field required"
    if kind == "extra_forbidden":
        return "unknown field"
    return str(err.get("msg", "invalid")).removeprefix("Value error, ")


def problems_of(exc: ValidationError, prefix: str = "") -> list[tuple[str, str]]:
    """Every problem of `exc` as (json_path, reason), paths under `prefix` when given."""
    problems = []
    for e in exc.errors(include_url=False):
        path = json_path(e["loc"])
        if prefix:
            path = f"{prefix}.{path}" if path and not path.startswith("[") else prefix + path
        problems.append((path, message(e)))
    return problems


def validate(model: type[M], data: Any, prefix: str = "") -> M:
    """`model` built from `data`, or a ConfigError listing every problem with its JSON path."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(problems_of(exc, prefix)) from None

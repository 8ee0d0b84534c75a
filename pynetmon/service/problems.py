"""Turning failures into HTTP answers: every error body is JSON
`{"error": text, "message": text, "problems": [{path, reason}]}` (`message` is the key polycubed's
error bodies use, so Polycube clients show our text).

What the client sent wrong is a 4xx naming the JSON path and the reason; clang's diagnostics and the
verifier's log travel in the text unchanged, because they are what the user needs to fix the code.
"""
from __future__ import annotations

import errno
import logging

from starlette.responses import JSONResponse

from .. import errors
from .config import Limits

log = logging.getLogger(__name__)


class ApiError(Exception):
    """An error with an HTTP status, raised by route handlers."""

    def __init__(self, status: int, message: str, problems: list[tuple[str, str]] | None = None,
                 headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.problems = list(problems or [])
        self.headers = headers


def not_found(what: str) -> ApiError:
    return ApiError(404, f"{what} does not exist")


def bad_request(path: str, reason: str) -> ApiError:
    return ApiError(400, f"{path}: {reason}" if path else reason, [(path, reason)])


def _prefixed(prefix: str, path: str) -> str:
    if not prefix:
        return path
    if not path:
        return prefix
    return f"{prefix}{path}" if path.startswith("[") else f"{prefix}.{path}"


def from_exception(exc: BaseException, path_prefix: str = "") -> ApiError:
    """The HTTP answer for an exception raised while serving a request.

    `path_prefix` locates the part of the body the library looked at (for example "dataplane-config"),
    so that a ConfigError's paths are paths into the request body.
    """
    if isinstance(exc, ApiError):
        return exc
    if isinstance(exc, errors.ResourceLimitError):
        return limit_error(exc)
    if isinstance(exc, errors.ConfigError):
        problems = [(_prefixed(path_prefix, p), r) for p, r in exc.problems]
        return ApiError(400, "; ".join(f"{p}: {r}" if p else r for p, r in problems), problems)
    if isinstance(exc, KeyError) and isinstance(exc, errors.Error):  # MetricNotFoundError, MapKeyError
        return ApiError(404, str(exc))
    if isinstance(exc, errors.CompileError):
        return ApiError(400, str(exc), [(_prefixed(path_prefix, "code"), "clang: " + (exc.diagnostics or str(exc)))])
    if isinstance(exc, errors.VerifierError):
        return ApiError(400, str(exc), [(_prefixed(path_prefix, "code"), f"verifier rejected {exc.program!r}")])
    if isinstance(exc, errors.FilterError):
        return ApiError(400, str(exc), [(_prefixed(path_prefix, "filter"), str(exc))])
    if isinstance(exc, errors.InterfaceNotFoundError):
        # Requests fail fast on a missing interface (only restored cubes wait for theirs to appear).
        return ApiError(404, str(exc), [("port", str(exc))])
    if isinstance(exc, errors.NotSupportedError):
        return ApiError(501, str(exc))
    if isinstance(exc, errors.PermissionDeniedError):
        # The daemon lacks a privilege: not the client's fault, and retrying will not help.
        return ApiError(503, str(exc))
    if isinstance(exc, errors.BPFError):
        if exc.errno in (errno.ENODEV, errno.ENXIO, errno.ENOLINK):  # the interface went away meanwhile
            return ApiError(409, f"{exc} (the interface is gone; the cube waits for it)", [("port", str(exc))])
        if exc.errno in (errno.EBUSY, errno.EEXIST):
            return ApiError(409, str(exc))
        if exc.errno in (errno.EINVAL, errno.ERANGE, errno.E2BIG, errno.EOPNOTSUPP):
            return ApiError(400, str(exc))
        return ApiError(500, str(exc))
    if isinstance(exc, errors.Error):
        return ApiError(400, str(exc))
    if isinstance(exc, (ValueError, TypeError)):
        # The libraries raise these for bad arguments that came from the request.
        return ApiError(400, str(exc) or type(exc).__name__)
    log.exception("internal error", exc_info=exc)
    return ApiError(500, f"internal error: {type(exc).__name__}: {exc}")


# What one request asks for alone (retrying will never help): 422; what the daemon has run out of (it
# may fit after something is deleted): 507.
_REQUEST_LIMITS = {"kernel memory per monitor", "ring buffer size"}


def limit_error(exc: errors.ResourceLimitError) -> ApiError:
    """The answer for a resource limit: names the limit and the `pynetmon serve` option that raises it."""
    option = Limits.option_of(exc.limit)
    hint = f"raise it with `pynetmon serve {option}`" if option else f"raise it with {exc.setting}"
    if exc.limit == "open files":
        hint += " (or the service's LimitNOFILE)"
    text = f"{exc.describe()}; {hint}"
    return ApiError(422 if exc.limit in _REQUEST_LIMITS else 507, text, [("", text)])


def error_body(text: str, problems: list[tuple[str, str]] | None = None) -> dict:
    """The JSON of every error answer; without `problems`, one problem at the root naming `text`."""
    pairs = problems if problems is not None else [("", text)]
    return {"error": text, "message": text, "problems": [{"path": p, "reason": r} for p, r in pairs]}


def response(err: ApiError) -> JSONResponse:
    return JSONResponse(error_body(err.message, err.problems), status_code=err.status, headers=err.headers)

"""Routes as data: each endpoint is declared once (method, path, body model, answer, summary) and that one
declaration serves both the router and the OpenAPI document, so the two cannot disagree.

Handlers are plain functions `handler(call) -> answer`, run in a worker thread because they compile,
load and read maps; an answer that is not a Response is sent as JSON. Handlers that compile (`heavy`)
share a few threads of their own, so that a burst of slow or hostile compiles waits on the event loop
(holding no thread) and can never take the threads that reads such as `GET /dynmon` need.
"""
from __future__ import annotations

import inspect
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import anyio
import anyio.to_thread
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from .guards import BodyTooLarge
from .models import CubeName, check_name
from .problems import ApiError, from_exception, response

if TYPE_CHECKING:
    from .registry import Registry


@dataclass
class Call:
    """One request as a handler sees it."""

    request: Request
    params: dict[str, str]
    body: bytes
    state: Any  # the app's ServiceState

    @property
    def registry(self) -> Registry:
        return self.state.registry


@dataclass
class Endpoint:
    """One operation of the API."""

    method: str
    path: str
    handler: Callable[[Call], Any]
    summary: str
    # Request body and 2xx body: Python types pydantic describes (a model, `list[Model]`, `str`, `bytes`,
    # `dict[str, str]`, `Any`...); the OpenAPI document's schemas are generated from them.
    body: Any = None
    answer: Any = None
    status: int = 200
    media_type: str = "application/json"
    tags: list[str] = field(default_factory=list)
    body_required: bool = True
    operation_id: str = ""
    params: dict[str, Any] = field(default_factory=dict)  # path parameter → its type (default: str)
    heavy: bool = False  # compiles or loads code: runs on the app's small heavy-work limiter

    def route(self) -> Route:
        return Route(self.path, self._endpoint, methods=[self.method], name=self.operation_id or None)

    async def _endpoint(self, request: Request) -> Response:
        try:
            if "name" in request.path_params:  # every route that creates or names a cube
                check_name(request.path_params["name"])
            body = await request.body() if self.method in ("POST", "PUT", "PATCH") else b""
            call = Call(request, dict(request.path_params), body, request.app.state.service)
            if inspect.iscoroutinefunction(self.handler):
                answer = await self.handler(call)
            elif self.heavy:
                answer = await anyio.to_thread.run_sync(self.handler, call, limiter=_heavy_limiter(request))
            else:
                answer = await run_in_threadpool(self.handler, call)
        except BodyTooLarge as exc:
            return response(ApiError(413, str(exc), [("", str(exc))]))
        except Exception as exc:  # noqa: BLE001 - every failure becomes a JSON answer, never a dead server
            return response(from_exception(exc))
        if isinstance(answer, Response):
            return answer
        if answer is None and self.status == 204:
            return Response(status_code=204)
        return JSONResponse(answer, status_code=self.status)


HEAVY_THREADS = 4  # compiles themselves are bounded by pynetmon.sandbox (one per CPU at a time)


def _heavy_limiter(request: Request) -> anyio.CapacityLimiter:
    state = request.app.state
    limiter = getattr(state, "heavy_limiter", None)
    if limiter is None:  # made on first use: a limiter belongs to the event loop that runs the app
        limiter = state.heavy_limiter = anyio.CapacityLimiter(HEAVY_THREADS)
    return limiter


class RouteTable:
    """Collects endpoints with a decorator: `@table.get("/x", "summary")`."""

    def __init__(self, tag: str, params: dict[str, Any] | None = None):
        """`params`: the types of this table's path parameters (`{"kind": Literal[...]}`), for the
        OpenAPI document; `{name}` is always a cube name (models.CubeName)."""
        self.tag = tag
        self.params = {"name": CubeName, **(params or {})}
        self.endpoints: list[Endpoint] = []

    def add(self, method: str, path: str, summary: str, **kw: Any) -> Callable:
        def register(handler: Callable) -> Callable:
            op = kw.pop("operation_id", "") or f"{method.lower()}_{handler.__name__}"
            names = re.findall(r"{(\w+)}", path)
            self.endpoints.append(Endpoint(method, path, handler, summary, tags=[self.tag], operation_id=op,
                                           params={n: self.params.get(n, str) for n in names}, **kw))
            return handler
        return register

    def get(self, path: str, summary: str, **kw: Any) -> Callable:
        return self.add("GET", path, summary, **kw)

    def post(self, path: str, summary: str, **kw: Any) -> Callable:
        return self.add("POST", path, summary, **kw)

    def put(self, path: str, summary: str, **kw: Any) -> Callable:
        return self.add("PUT", path, summary, **kw)

    def patch(self, path: str, summary: str, **kw: Any) -> Callable:
        return self.add("PATCH", path, summary, **kw)

    def delete(self, path: str, summary: str, **kw: Any) -> Callable:
        return self.add("DELETE", path, summary, **kw)


_SLASHES = re.compile(r"//+")


class NormalizePath:
    """ASGI middleware: '/a//b/' is '/a/b'. Polycube's tools ask for `metrics//` and `packet/`, and
    Polycube answers them; so must we."""

    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            path = scope["path"]
            fixed = _SLASHES.sub("/", path)
            if len(fixed) > 1:
                fixed = fixed.rstrip("/") or "/"
            if fixed != path:
                scope = dict(scope, path=fixed, raw_path=fixed.encode())
        await self.app(scope, receive, send)


POLYCUBE = "/polycube/v1/"
SERVICE_BASES = {"dynmon": "/polycube/v1/dynmon/", "packetcapture": "/polycube/v1/packetcapture/",
                 "monitor": "/monitors/"}


class CubePaths:
    """ASGI middleware: Polycube's generic form `/polycube/v1/{cube}/...`, a cube addressed by its own name
    as polycubectl does (`polycubectl mysniffer set filter=tcp` is `PATCH /polycube/v1/mysniffer/` with
    `{"filter": "tcp"}`), is served as `/polycube/v1/{service}/{cube}/...` (a monitor: `/monitors/{cube}/...`).

    A first segment that is one of the API's own (`dynmon`, `cubes`, `attach`...) keeps its meaning, so a
    cube named like one can only be reached through its service's path, as in polycubed.
    """

    def __init__(self, app: ASGIApp, registry_of: Callable[[], Registry], reserved: set[str]):
        self.app = app
        self._registry_of = registry_of
        self.reserved = reserved

    def rewrite(self, path: str) -> str:
        """`path` with a leading cube name replaced by the cube's service path; unchanged otherwise."""
        if not path.startswith(POLYCUBE):
            return path
        first, _, rest = path[len(POLYCUBE):].partition("/")
        if not first or first in self.reserved:
            return path
        try:
            cube = self._registry_of().get(first)
        except ApiError:  # no such cube: the 404 names the path as it was asked for
            return path
        if cube.service not in SERVICE_BASES:
            return path
        return SERVICE_BASES[cube.service] + first + ("/" + rest if rest else "")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            path = scope["path"]
            fixed = self.rewrite(path)
            if fixed != path:
                scope = dict(scope, path=fixed, raw_path=fixed.encode())
        await self.app(scope, receive, send)


def reserved_segments(paths: list[str]) -> set[str]:
    """The first segments after /polycube/v1/ of `paths` that are literal (not a `{parameter}`)."""
    out = set()
    for path in paths:
        if path.startswith(POLYCUBE):
            first = path[len(POLYCUBE):].split("/", 1)[0]
            if first and not first.startswith("{"):
                out.add(first)
    return out

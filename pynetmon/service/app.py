"""The ASGI application: route table + guards + lifecycle (restore at start, detach everything at stop)."""
from __future__ import annotations

import contextlib
import logging
import threading
import time
from dataclasses import dataclass, field

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Match, Route

from . import openapi, operations, state_file
from .config import ServiceConfig
from .guards import BearerAuth, BodyLimit
from .link_watch import LinkWatcher
from .probes import Readiness
from .problems import error_body
from .registry import Registry
from .routes import endpoints
from .routing import CubePaths, NormalizePath, reserved_segments

log = logging.getLogger("pynetmon.service")


@dataclass
class ServiceState:
    """Everything the handlers share: settings, the cubes, and the "shutting down" flag streams watch."""

    config: ServiceConfig
    registry: Registry
    stopping: threading.Event = field(default_factory=threading.Event)
    started: float = field(default_factory=time.time)
    restore_problems: list[str] = field(default_factory=list)
    readiness: Readiness = field(default_factory=Readiness)


def allowed_methods(request: Request) -> list[str]:
    """Every method some route answers on the request's path (HEAD wherever GET is)."""
    methods: set[str] = set()
    for route in request.app.routes:
        if isinstance(route, Route) and route.methods and route.matches(request.scope)[0] != Match.NONE:
            methods |= route.methods
    return sorted(methods)


def create_app(config: ServiceConfig, *, restore: bool = True) -> Starlette:
    """The daemon's ASGI app. `restore=False` ignores the state file (it is still written)."""
    state = ServiceState(config, Registry(config.netns, config.state_file, config.capture_dir, config.limits))
    table = endpoints()
    document = openapi.build(table, token=config.token is not None)

    async def openapi_json(request):
        return JSONResponse(document)

    async def http_error(request, exc: HTTPException):
        reason = exc.detail if isinstance(exc.detail, str) else str(exc.detail)
        if exc.status_code == 404:
            reason = f"no such endpoint: {request.method} {request.url.path} (see /openapi.json)"
        headers = exc.headers
        if exc.status_code == 405:
            reason = f"{request.method} is not allowed on {request.url.path} (see /openapi.json)"
            # Starlette's Allow names only the first route matching the path; each method is its own route.
            headers = {**(headers or {}), "Allow": ", ".join(allowed_methods(request))}
        return JSONResponse(error_body(reason), status_code=exc.status_code, headers=headers)

    @contextlib.asynccontextmanager
    async def lifespan(app):
        if restore and config.state_file is not None:
            saved = state_file.load(config.state_file)
            if saved:
                log.info("restoring %d cube(s) from %s", len(saved), config.state_file)
                state.restore_problems = operations.restore(state.registry, saved)
        watcher = LinkWatcher(config.netns, state.registry.interface_changed, state.registry.sweep).start()
        state.readiness.restored.set()
        yield
        state.stopping.set()
        watcher.stop()
        log.info("shutting down: detaching %d cube(s)", len(state.registry.cubes()))
        state.registry.close_all()

    routes = [Route("/openapi.json", openapi_json, methods=["GET"])] + [e.route() for e in table]
    app = Starlette(routes=routes, lifespan=lifespan, exception_handlers={HTTPException: http_error})  # type: ignore[dict-item]  # starlette types handlers loosely
    app.state.service = state
    app.state.endpoints = table
    # Outermost first: the token is checked before a byte of the body is read.
    app.add_middleware(CubePaths, registry_of=lambda: state.registry,
                       reserved=reserved_segments([e.path for e in table]))
    app.add_middleware(BodyLimit, max_body=config.max_body)
    app.add_middleware(BearerAuth, token=config.token, protect_metrics=config.protect_metrics)
    app.add_middleware(NormalizePath)
    return app

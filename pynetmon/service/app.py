"""The ASGI application: route table + guards + lifecycle (restore at start, detach everything at stop)."""
from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
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
from .reconciler import Reconciler
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
    reconciler: Reconciler | None = None  # with `--config`: applies and re-applies the file


def allowed_methods(request: Request) -> list[str]:
    """Every method some route answers on the request's path (HEAD wherever GET is)."""
    methods: set[str] = set()
    for route in request.app.routes:
        if isinstance(route, Route) and route.methods and route.matches(request.scope)[0] != Match.NONE:
            methods |= route.methods
    return sorted(methods)


def _on_link(state: ServiceState):
    """Link events go to the cubes (detach, re-attach) and then to the config's patterns."""
    def on_event(ifname: str, present: bool) -> None:
        state.registry.interface_changed(ifname, present)
        if state.reconciler is not None:
            state.reconciler.link_event(ifname, present)
    return on_event


def _on_sweep(state: ServiceState):
    def on_sweep() -> None:
        state.registry.sweep()
        if state.reconciler is not None:
            state.reconciler.sweep()
    return on_sweep


def create_app(config: ServiceConfig, *, restore: bool = True) -> Starlette:
    """The daemon's ASGI app. `restore=False` ignores the state file (it is still written)."""
    state = ServiceState(config, Registry(config.netns, config.state_file, config.capture_dir, config.limits))
    if config.config_file is not None:
        state.reconciler = Reconciler(state.registry, config.config_file, poll_interval=config.config_poll)
        state.readiness.reconciler = state.reconciler
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
        reconciler = state.reconciler
        if reconciler is not None:
            # After the state file: REST-made cubes keep their names; a config entry that wants one fails.
            reconciler.reload("start")
        watcher = LinkWatcher(config.netns, _on_link(state), _on_sweep(state)).start()
        if reconciler is not None:
            reconciler.start()
            try:
                asyncio.get_running_loop().add_signal_handler(signal.SIGHUP, reconciler.request_reload, "SIGHUP")
            except (ValueError, RuntimeError):  # not the main thread (an app run by a test client)
                log.warning("SIGHUP does not reload %s here (not the main thread)", config.config_file)
        state.readiness.restored.set()
        yield
        state.stopping.set()
        if reconciler is not None:
            with contextlib.suppress(ValueError, RuntimeError):
                asyncio.get_running_loop().remove_signal_handler(signal.SIGHUP)
            reconciler.stop()
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

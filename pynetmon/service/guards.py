"""What stands between the network and the kernel: the bearer token and the body size limit.

Injecting eBPF code is root-equivalent, so with a token configured every request must carry it except
the ones an operator explicitly leaves open (`GET /metrics` by default), the OpenAPI description and
the probes `/healthz` and `/readyz`.
"""
from __future__ import annotations

import hmac
import json
from collections.abc import Sequence

from starlette.types import ASGIApp, Receive, Scope, Send

from .problems import error_body

# Kubelet probes carry no token; they say only whether the daemon is alive and ready.
OPEN_ALWAYS = {("GET", "/openapi.json"), ("GET", "/healthz"), ("GET", "/readyz")}
METRICS = ("GET", "/metrics")


class BodyTooLarge(Exception):
    """The request body is over the limit."""


def _send_json(status: int, body: dict, headers: Sequence[tuple[bytes, bytes]] = ()):
    payload = json.dumps(body).encode()
    start = {"type": "http.response.start", "status": status,
             "headers": [(b"content-type", b"application/json"),
                         (b"content-length", str(len(payload)).encode()), *headers]}
    return start, {"type": "http.response.body", "body": payload}


class BodyLimit:
    """ASGI middleware: refuses bodies over `max_body` bytes (413), by Content-Length up front and by
    counting when the client streams without one."""

    def __init__(self, app: ASGIApp, max_body: int):
        self.app = app
        self.max_body = max_body

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        for name, value in scope["headers"]:
            if name == b"content-length":
                try:
                    length = int(value)
                except ValueError:
                    length = -1
                if length < 0 or length > self.max_body:
                    reason = (f"the request body ({value.decode(errors='replace')} bytes) is over the "
                              f"limit of {self.max_body} bytes; raise it with `pynetmon serve --max-body`"
                              if length >= 0 else "bad Content-Length")
                    start, body = _send_json(413 if length >= 0 else 400,
                                             error_body(reason))
                    await send(start)
                    await send(body)
                    return
        seen = 0
        limit = self.max_body

        async def counting_receive():
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    raise BodyTooLarge(f"the request body is over the limit of {limit} bytes; raise it with "
                                       "`pynetmon serve --max-body`")
            return message

        await self.app(scope, counting_receive, send)


class BearerAuth:
    """ASGI middleware: with a token, requests must say `Authorization: Bearer TOKEN` (401 otherwise)."""

    def __init__(self, app: ASGIApp, token: str | None, protect_metrics: bool = False):
        self.app = app
        self.token = token.encode() if token else None
        self.protect_metrics = protect_metrics

    def needs_token(self, method: str, path: str) -> bool:
        if self.token is None:
            return False
        if (method, path) in OPEN_ALWAYS or method == "HEAD" and ("GET", path) in OPEN_ALWAYS:
            return False
        if (method, path) == METRICS or (method == "HEAD" and path == METRICS[1]):
            return self.protect_metrics
        return True

    def authorized(self, headers: Sequence[tuple[bytes, bytes]]) -> bool:
        for name, value in headers:
            if name == b"authorization":
                scheme, _, given = value.partition(b" ")
                if scheme.lower() == b"bearer" and hmac.compare_digest(given.strip(), self.token):
                    return True
        return False

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and self.needs_token(scope["method"], scope["path"]) \
                and not self.authorized(scope["headers"]):
            reason = "this request needs the daemon's bearer token (Authorization: Bearer TOKEN)"
            start, body = _send_json(401, error_body(reason),
                                     [(b"www-authenticate", b'Bearer realm="pynetmon"')])
            await send(start)
            await send(body)
            return
        await self.app(scope, receive, send)

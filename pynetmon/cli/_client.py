"""The CLI's side of the REST API: one small HTTP client (standard library only) shared by `inject`,
`extract`, `top` and `capture-client`, with the -a/-p/--token-file options they all take.

Errors come out as `pynetmon.Error` with a message a person can act on: the daemon is not running,
the token is missing, or what the daemon said was wrong with the request.
"""
from __future__ import annotations

import argparse
import http.client
import json
import os
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

from ..errors import Error

DEFAULT_ADDRESS = "localhost"
DEFAULT_PORT = 9000
TIMEOUT = 30.0  # seconds; compiling and loading a dataplane takes a few


class DaemonUnreachableError(Error):
    """Nothing answers at the daemon's address."""


class ApiRequestError(Error):
    """The daemon refused a request; `.status` is the HTTP status, `.problems` its (path, reason) list."""

    def __init__(self, status: int, message: str, problems: list[tuple[str, str]]):
        super().__init__(message)
        self.status = status
        self.problems = problems


def add_connection_arguments(parser: argparse.ArgumentParser) -> None:
    """-a/--address, -p/--port and --token-file, as in Polycube's dynmon tools."""
    parser.add_argument("-a", "--address", default=DEFAULT_ADDRESS,
                        help=f"the pynetmon daemon's address (default {DEFAULT_ADDRESS})")
    parser.add_argument("-p", "--port", type=int, default=DEFAULT_PORT,
                        help=f"the pynetmon daemon's port (default {DEFAULT_PORT})")
    parser.add_argument("--token-file", metavar="PATH",
                        help="file holding the daemon's bearer token (default: $PYNETMON_TOKEN, if set)")


def read_token(token_file: str | None) -> str | None:
    """The bearer token: the first line of `token_file` if given, else $PYNETMON_TOKEN (None if neither)."""
    if token_file:
        try:
            with open(token_file) as f:
                return f.readline().strip() or None
        except OSError as exc:
            raise Error(f"cannot read the token file {token_file!r}: {exc.strerror}") from None
    return os.environ.get("PYNETMON_TOKEN", "").strip() or None


class Client:
    """Talks to one daemon. `Client.from_args(args)` builds it from the common options."""

    def __init__(self, address: str = DEFAULT_ADDRESS, port: int = DEFAULT_PORT, token: str | None = None,
                 timeout: float = TIMEOUT):
        host = f"[{address}]" if ":" in address and not address.startswith("[") else address
        self.base = f"http://{host}:{port}"
        self.token = token
        self.timeout = timeout

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> Client:
        return cls(args.address, args.port, read_token(getattr(args, "token_file", None)))

    # -- requests ------------------------------------------------------------------------------
    def _open(self, method: str, path: str, body: Any = None, headers: dict | None = None,
              timeout: float | None = None):
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(self.base + path, data=data, method=method)
        if data is not None:
            request.add_header("Content-Type", "application/json")
        if self.token:
            request.add_header("Authorization", f"Bearer {self.token}")
        for name, value in (headers or {}).items():
            request.add_header(name, value)
        try:
            return urllib.request.urlopen(request, timeout=timeout or self.timeout)
        except urllib.error.HTTPError as exc:
            raise self._api_error(exc) from None
        except http.client.InvalidURL as exc:  # a malformed -a/--address
            raise Error(f"bad daemon address {self.base!r}: {exc}") from None
        except (TimeoutError, urllib.error.URLError, ConnectionError) as exc:
            reason = getattr(exc, "reason", exc)
            raise DaemonUnreachableError(
                f"cannot reach the pynetmon daemon at {self.base}: {reason}. Is it running? "
                "Start it with `pynetmon serve` (or pass -a/--address and -p/--port)") from None

    def _api_error(self, exc: urllib.error.HTTPError) -> ApiRequestError:
        raw = exc.read()
        try:
            doc = json.loads(raw)
            message = doc.get("error") or raw.decode(errors="replace")
            problems = [(p.get("path", ""), p.get("reason", "")) for p in doc.get("problems", [])]
        except (ValueError, AttributeError):
            message, problems = raw.decode(errors="replace") or exc.reason, []
        if exc.code == 401:
            message += " (give it with --token-file or $PYNETMON_TOKEN)"
        return ApiRequestError(exc.code, f"the daemon answered {exc.code}: {message}", problems)

    def request(self, method: str, path: str, body: Any = None) -> Any:
        """Send a request; the answer's JSON (None for an empty answer)."""
        with self._open(method, path, body) as response:
            raw = response.read()
            if not raw:
                return None
            if "json" in (response.headers.get("Content-Type") or ""):
                return json.loads(raw)
            return raw.decode()

    def get(self, path: str) -> Any:
        return self.request("GET", path)

    def post(self, path: str, body: Any = None) -> Any:
        return self.request("POST", path, body)

    def put(self, path: str, body: Any) -> Any:
        return self.request("PUT", path, body)

    def patch(self, path: str, body: Any) -> Any:
        return self.request("PATCH", path, body)

    def delete(self, path: str) -> Any:
        return self.request("DELETE", path)

    def text(self, path: str, accept: str = "text/plain") -> str:
        with self._open("GET", path, headers={"Accept": accept}) as response:
            return response.read().decode()

    def stream(self, path: str, chunk: int = 65536) -> Iterator[bytes]:
        """The answer's bytes as they arrive (for the pcap stream)."""
        response = self._open("GET", path, timeout=3600)
        with response:
            while True:
                data = response.read1(chunk) if hasattr(response, "read1") else response.read(chunk)
                if not data:
                    return
                yield data

    def exists(self, path: str) -> bool:
        try:
            self.get(path)
            return True
        except ApiRequestError as exc:
            if exc.status == 404:
                return False
            raise

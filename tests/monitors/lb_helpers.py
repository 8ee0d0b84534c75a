"""What the lb tests share: HTTP backends that answer with their own name (so a client knows which
backend served it), and clients that talk to the VIP from another namespace."""
from __future__ import annotations

import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from pynetmon.testhosts import Host

from .http_helpers import read_message

VIP = "192.0.2.80"  # TEST-NET-1: routed to the balancer by the client's default route, owned by nobody


class NamedBackend:
    """An HTTP/1.1 server in `host`'s namespace on `port`: every GET answers 200 with `name` as the body
    (keep-alive). `stop()` closes the listening socket (new connections are refused, connections already
    accepted go on being served), `start()` listens again. With `flaky`, GET /health answers 200 and 503
    in turn (a backend that fails every other health check)."""

    def __init__(self, host: Host, port: int, name: str, flaky: bool = False):
        self.host, self.port, self.name, self.flaky = host, port, name, flaky
        self.health_calls = 0
        self._server: ThreadingHTTPServer | None = None
        self.start()

    def start(self) -> None:
        name = self.name.encode()
        backend = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:
                if self.path == "/health" and backend.flaky:
                    backend.health_calls += 1
                    if backend.health_calls % 2 == 0:
                        self.send_response(503)
                        self.send_header("Content-Length", "0")
                        self.end_headers()
                        return
                self.send_response(200)
                self.send_header("Content-Length", str(len(name)))
                self.end_headers()
                self.wfile.write(name)

            def log_message(self, *args: object) -> None:
                pass

        server = ThreadingHTTPServer(("0.0.0.0", self.port), Handler, bind_and_activate=False)
        server.daemon_threads = True
        server.socket.close()
        server.socket = self.host.socket(socket.AF_INET, socket.SOCK_STREAM)
        server.socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        server.server_bind()
        server.server_activate()
        threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
        self._server = server

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None


class Client:
    """A keep-alive HTTP connection from `host` to `addr`:`port`; `get()` returns the serving backend's name."""

    def __init__(self, host: Host, addr: str = VIP, port: int = 80, timeout: float = 5):
        self.sock = host.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.settimeout(timeout)
        self.sock.connect((addr, port))

    def get(self) -> str:
        self.sock.sendall(b"GET / HTTP/1.1\r\nHost: vip\r\n\r\n")
        status, body, _ = read_message(self.sock)
        assert status == 200, status
        return body.decode()

    def peer(self) -> tuple[str, int]:
        return self.sock.getpeername()

    def close(self) -> None:
        self.sock.close()


def one_request(host: Host, addr: str = VIP, port: int = 80) -> str:
    """A new connection, one GET, closed: the name of the backend that served it."""
    c = Client(host, addr, port)
    try:
        return c.get()
    finally:
        c.close()


def spread(host: Host, n: int, addr: str = VIP, port: int = 80) -> dict[str, int]:
    """`n` new connections to addr:port: how many each backend served."""
    got: dict[str, int] = {}
    for _ in range(n):
        name = one_request(host, addr, port)
        got[name] = got.get(name, 0) + 1
    return got

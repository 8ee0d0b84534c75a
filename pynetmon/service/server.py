"""Running the app: a uvicorn server on a socket we bind ourselves (so port 0 works and the real port is
printed), whose SIGTERM/SIGINT handling also ends the open capture streams, so that shutdown is prompt:
streams stop, then every cube is detached and every capture file flushed."""
from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import sys
from collections.abc import Callable

import uvicorn

from .. import limits
from ..errors import Error
from .app import create_app
from .config import ServiceConfig

log = logging.getLogger("pynetmon.service")
SHUTDOWN_GRACE = 0.2  # seconds open connections get to finish after SIGTERM/SIGINT


class _Server(uvicorn.Server):
    def __init__(self, config: uvicorn.Config, state):
        super().__init__(config)
        self._service_state = state

    @contextlib.contextmanager
    def capture_signals(self):
        # uvicorn re-raises the signal after shutdown, so the process would die of it; a daemon that
        # stopped cleanly on request should exit 0.
        with super().capture_signals():
            yield
            if isinstance(getattr(self, "_captured_signals", None), list):
                self._captured_signals.clear()

    def handle_exit(self, sig, frame) -> None:
        self._service_state.stopping.set()  # capture streams end, so uvicorn is not kept waiting on them
        super().handle_exit(sig, frame)

    async def shutdown(self, sockets=None) -> None:
        # A stream whose client stopped reading waits in its send for a drain that never comes, and
        # uvicorn would wait --timeout-graceful-shutdown for it. Connections still open shortly after the
        # signal are aborted instead (their request cannot finish in time anyway), so that the daemon
        # stops well within a second, with every cube detached by the lifespan shutdown that follows.
        asyncio.get_running_loop().call_later(SHUTDOWN_GRACE, self._abort_connections)
        await super().shutdown(sockets)

    def _abort_connections(self) -> None:
        for connection in list(self.server_state.connections):
            transport = getattr(connection, "transport", None)
            if transport is not None and not transport.is_closing():
                transport.abort()


def bind(host: str, port: int) -> socket.socket:
    """A listening socket on host:port (IPv4 or IPv6); Error naming the address if it is taken."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise Error(f"cannot listen on {host}:{port}: {exc.strerror}") from None
    sock.listen(128)
    sock.set_inheritable(True)
    return sock


def serve(config: ServiceConfig, *, announce: Callable[[str], object] = print) -> int:
    """Run the daemon until SIGTERM/SIGINT. `announce` gets the "listening on URL" line."""
    # Every map and program is a descriptor: take what the hard limit allows (or what --max-open-files
    # says); loads that would leave too few free are refused (pynetmon.limits.check_fds).
    try:
        nofile = limits.raise_fd_limit(config.limits.open_files)
    except (ValueError, OSError) as exc:
        raise Error(f"--max-open-files: cannot set RLIMIT_NOFILE to {config.limits.open_files}: {exc}") from None
    log.info("RLIMIT_NOFILE: %d descriptors", nofile)
    sock = bind(config.host, config.port)
    host, port = sock.getsockname()[:2]
    app = create_app(config)
    uv_config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="on",
                               timeout_graceful_shutdown=5, server_header=False)
    server = _Server(uv_config, app.state.service)
    url = f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"
    log.info("listening on %s%s%s", url, " (bearer token required)" if config.token else "",
             f", attaching in netns {config.netns}" if config.netns else "")
    announce(f"pynetmon serve: listening on {url}")
    sys.stdout.flush()
    try:
        server.run(sockets=[sock])
    finally:
        sock.close()
    log.info("stopped")
    return 0 if server.started else 1

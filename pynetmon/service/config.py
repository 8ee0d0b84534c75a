"""The daemon's settings, checked once at start-up so that a bad command line never half-starts a server."""
from __future__ import annotations

import ipaddress
import os
import stat
from dataclasses import dataclass
from pathlib import Path

from ..errors import ConfigError

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 9000
DEFAULT_MAX_BODY = 1 << 20  # 1 MiB: a dataplane config with its C code is a few KiB; this leaves room


@dataclass(frozen=True)
class ServiceConfig:
    """How `pynetmon serve` runs.

    `token` is the bearer token mutating requests must carry (None: no token, loopback only);
    `protect_metrics` also requires it for `GET /metrics`; `netns` is the network namespace whose
    interfaces `attach` refers to (None: the daemon's own); `state_file` keeps configs and attachments
    across restarts (None: nothing is kept); packet captures write their files inside `capture_dir`.
    """

    host: str = DEFAULT_HOST
    port: int = DEFAULT_PORT
    token: str | None = None
    protect_metrics: bool = False
    max_body: int = DEFAULT_MAX_BODY
    netns: str | None = None
    state_file: Path | None = None
    capture_dir: Path = Path("/tmp/pynetmon")

    def __post_init__(self):
        problems = []
        if not 0 <= self.port <= 65535:
            problems.append(("--listen", f"port {self.port} is not in 0..65535"))
        if self.max_body < 1024:
            problems.append(("--max-body", f"{self.max_body} bytes is too small for any request (minimum 1024)"))
        if self.token is None and not is_loopback(self.host):
            reason = (f"listening on {self.host} (not loopback) requires --token-file: "
                      "whoever can reach the daemon can inject kernel code")
            problems.append(("--listen", reason))
        if self.token is not None and len(self.token) < 16:
            problems.append(("--token-file", "the token is shorter than 16 characters"))
        if self.protect_metrics and self.token is None:
            problems.append(("--protect-metrics", "needs --token-file"))
        if problems:
            raise ConfigError(problems)

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"


def is_loopback(host: str) -> bool:
    """True for addresses only this machine can reach (127.0.0.0/8, ::1, "localhost")."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def parse_listen(text: str) -> tuple[str, int]:
    """'HOST:PORT', '[V6]:PORT', 'HOST' or ':PORT' → (host, port)."""
    host, port = DEFAULT_HOST, DEFAULT_PORT
    text = text.strip()
    if text.startswith("["):
        end = text.find("]")
        if end < 0:
            raise ConfigError([("--listen", f"{text!r}: missing ']' after the IPv6 address")])
        host, rest = text[1:end], text[end + 1:]
        if rest:
            if not rest.startswith(":"):
                raise ConfigError([("--listen", f"{text!r}: expected ':PORT' after ']'")])
            port = _port(rest[1:], text)
    elif text.count(":") == 1:
        h, p = text.split(":")
        host = h or DEFAULT_HOST
        port = _port(p, text)
    elif text:
        host = text
    return host, port


def _port(text: str, whole: str) -> int:
    try:
        port = int(text)
    except ValueError:
        raise ConfigError([("--listen", f"{whole!r}: port {text!r} is not a number")]) from None
    if not 0 <= port <= 65535:
        raise ConfigError([("--listen", f"{whole!r}: port {port} is not in 0..65535")])
    return port


def read_token_file(path: str | os.PathLike) -> str:
    """The bearer token kept in `path` (first line, whitespace stripped). The file must not be world-readable."""
    path = Path(path)
    try:
        st = path.stat()
        text = path.read_text()
    except OSError as exc:
        raise ConfigError([("--token-file", f"cannot read {str(path)!r}: {exc.strerror}")]) from None
    if st.st_mode & stat.S_IROTH:
        raise ConfigError([("--token-file", f"{str(path)!r} is readable by every user; chmod 600 it")])
    lines = text.strip().splitlines()
    token = lines[0].strip() if lines else ""
    if not token:
        raise ConfigError([("--token-file", f"{str(path)!r} is empty")])
    return token

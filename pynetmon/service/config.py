"""The daemon's settings, checked once at start-up so that a bad command line never half-starts a server."""
from __future__ import annotations

import ipaddress
import os
import re
import stat
from dataclasses import dataclass, field, fields
from pathlib import Path

from ..errors import ConfigError

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 9000
DEFAULT_MAX_BODY = 1 << 20  # 1 MiB: a dataplane config with its C code is a few KiB; this leaves room


@dataclass(frozen=True)
class Limits:
    """Every resource the daemon bounds. Each field's metadata holds its `pynetmon serve` option and the
    name the library's ResourceLimitError uses for it (docs/security.md lists them with their defaults)."""

    kernel_memory: int = field(default=1 << 30, metadata={
        "option": "--max-kernel-memory", "limit": "kernel memory in total", "size": True,
        "help": "estimated kernel memory of every BPF map the daemon loads, together"})
    monitor_memory: int = field(default=256 << 20, metadata={
        "option": "--max-monitor-memory", "limit": "kernel memory per monitor", "size": True,
        "help": "estimated kernel memory of the BPF maps of one monitor or capture (old and new dataplane "
                "together while a config is replaced)"})
    monitors: int = field(default=64, metadata={
        "option": "--max-monitors", "limit": "monitors", "help": "monitors (dynmon and other cubes that are "
                                                                  "not packet captures)"})
    captures: int = field(default=16, metadata={"option": "--max-captures", "limit": "captures",
                                                "help": "packet captures"})
    ring_bytes: int = field(default=4 << 20, metadata={
        "option": "--max-ring-bytes", "limit": "ring buffer size", "size": True,
        "help": "size of every BPF ring buffer: each capture's, and the largest one a monitor may declare "
                "(a power of two)"})
    capture_buffer_bytes: int = field(default=8 << 20, metadata={
        "option": "--capture-buffer-bytes", "limit": "capture buffer", "size": True,
        "help": "packets a network-mode capture keeps for its reader (what does not fit is dropped and "
                "counted)"})
    open_files: int | None = field(default=None, metadata={
        "option": "--max-open-files", "limit": "open files",
        "help": "RLIMIT_NOFILE set at start; loads that would leave fewer than 64 descriptors free are "
                "refused"})

    def problems(self) -> list[tuple[str, str]]:
        out = []
        for f in fields(self):
            value = getattr(self, f.name)
            if value is not None and (not isinstance(value, int) or value < 1):
                out.append((f.metadata["option"], f"must be a positive number, not {value!r}"))
        if self.ring_bytes >= 1 and (self.ring_bytes < 4096 or self.ring_bytes & (self.ring_bytes - 1)):
            out.append(("--max-ring-bytes", f"must be a power of two of at least 4096, not {self.ring_bytes}"))
        if self.monitor_memory > self.kernel_memory:
            out.append(("--max-monitor-memory", "is larger than --max-kernel-memory"))
        return out

    @staticmethod
    def option_of(limit: str) -> str | None:
        """The `pynetmon serve` option of a limit, by the name errors use for it ("open files", ...)."""
        for f in fields(Limits):
            if f.metadata.get("limit") == limit:
                return f.metadata["option"]
        return {"request body": "--max-body"}.get(limit)


def parse_size(text: str) -> int:
    """'1048576', '512K', '256M', '1G' (binary units, case-insensitive) → bytes."""
    m = re.fullmatch(r"\s*(\d+)\s*([kmgt]?)(i?b)?\s*", str(text), re.IGNORECASE)
    if not m:
        raise ValueError(f"{text!r} is not a size (a number of bytes, optionally with K, M or G)")
    return int(m.group(1)) << {"": 0, "k": 10, "m": 20, "g": 30, "t": 40}[m.group(2).lower()]


@dataclass(frozen=True)
class ServiceConfig:
    """How `pynetmon serve` runs.

    `token` is the bearer token mutating requests must carry (None: no token, loopback only);
    `protect_metrics` also requires it for `GET /metrics`; `netns` is the network namespace whose
    interfaces `attach` refers to (None: the daemon's own); `state_file` keeps configs and attachments
    across restarts (None: nothing is kept); packet captures write their files inside `capture_dir`;
    `limits` bounds every resource the daemon uses; `config_file` declares the cubes this node runs
    (re-applied on SIGHUP and when its content changes, looked at every `config_poll` seconds).
    """

    host: str = DEFAULT_HOST
    port: int = DEFAULT_PORT
    token: str | None = None
    protect_metrics: bool = False
    max_body: int = DEFAULT_MAX_BODY
    netns: str | None = None
    state_file: Path | None = None
    capture_dir: Path = Path("/tmp/pynetmon")
    limits: Limits = field(default_factory=Limits)
    config_file: Path | None = None
    config_poll: float = 2.0

    def __post_init__(self):
        problems = self.limits.problems()
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
        if not 0.1 <= self.config_poll <= 3600:
            problems.append(("--config-poll", f"{self.config_poll} is not in 0.1..3600 seconds"))
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
    """The bearer token kept in `path` (first line, whitespace stripped). The file must belong to the user
    the daemon runs as and give group and others no access at all (mode 0600 or 0400)."""
    path = Path(path)
    try:
        with open(path) as f:  # one open: the checks apply to the file read, even if the path is swapped
            st = os.fstat(f.fileno())
            text = f.read()
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else "not text"
        raise ConfigError([("--token-file", f"cannot read {str(path)!r}: {reason}")]) from None
    if st.st_uid != os.geteuid():
        reason = f"{str(path)!r} belongs to uid {st.st_uid}, not to the user the daemon runs as (uid {os.geteuid()}); " \
                 "chown it"
        raise ConfigError([("--token-file", reason)])
    if st.st_mode & 0o077:
        reason = f"{str(path)!r} has mode {stat.S_IMODE(st.st_mode):04o}: group or others may access it; chmod 600 it"
        raise ConfigError([("--token-file", reason)])
    lines = text.strip().splitlines()
    token = lines[0].strip() if lines else ""
    if not token:
        raise ConfigError([("--token-file", f"{str(path)!r} is empty")])
    return token

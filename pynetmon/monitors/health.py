"""Active health checks of backends, run from Python in the balancer's network namespace: TCP connect,
HTTP GET with an expected status, ICMP echo (a raw socket: needs root or CAP_NET_RAW).

A target is healthy after `rise` consecutive successes and unhealthy after `fall` consecutive failures
(HAProxy's meaning). Checks start every `interval` seconds, at a fixed rate, and each ends after
`timeout` at the latest, so a backend that dies is declared down at most `interval * fall + timeout`
seconds later. State changes are handed to a callback (the `lb` monitor rebuilds that service's table).

>>> hc = HealthChecker(netns="lb0", on_change=print)
>>> hc.set_targets({"web1": Check("http", "10.0.0.1", 80, path="/health")})
>>> hc.check_now(["web1"]); hc.start()
"""
from __future__ import annotations

import concurrent.futures
import functools
import logging
import os
import socket
import struct
import threading
import time
from collections import deque
from collections.abc import Callable, Hashable, Iterable
from dataclasses import dataclass, field

from .. import netns as _netns

log = logging.getLogger(__name__)

MAX_WORKERS = 16
"""Checks running at once: bounds the threads (and sockets) however many backends there are."""


@dataclass(frozen=True)
class Check:
    """How to check one target."""

    kind: str  # "tcp", "http", "icmp" or "none"
    address: str
    port: int
    interval: float = 2.0
    timeout: float = 1.0
    rise: int = 2
    fall: int = 3
    path: str = "/"
    expect_status: int = 200
    window: int = 0  # > 0: keep a score, the share of the last `window` checks that passed


@dataclass
class TargetState:
    """What the checker knows of one target."""

    check: Check
    healthy: bool = True
    streak: int = 0  # consecutive results that disagree with `healthy`
    ok: int = 0
    failed: int = 0
    last_error: str | None = None
    next_due: float = field(default=0.0)
    running: bool = False
    recent: deque = field(default_factory=deque)  # results of the last `window` checks (True: passed)

    @property
    def score(self) -> float:
        """The share of the last `window` checks that passed (1.0 without a window or a check yet)."""
        if not self.check.window or not self.recent:
            return 1.0
        return sum(self.recent) / len(self.recent)

    def record(self, passed: bool) -> None:
        if self.check.window:
            if len(self.recent) >= self.check.window:
                self.recent.popleft()
            self.recent.append(passed)


def _socket(netns: str | None, family: int, kind: int, proto: int = 0) -> socket.socket:
    with _netns.enter(netns):
        return socket.socket(family, kind, proto)


def _tcp(check: Check, netns: str | None) -> socket.socket:
    s = _socket(netns, socket.AF_INET, socket.SOCK_STREAM)
    s.settimeout(check.timeout)
    try:
        s.connect((check.address, check.port))
    except BaseException:
        s.close()
        raise
    return s


def _http(check: Check, netns: str | None) -> None:
    deadline = time.monotonic() + check.timeout
    with _tcp(check, netns) as s:
        s.sendall(f"GET {check.path} HTTP/1.0\r\nHost: {check.address}\r\nUser-Agent: pynetmon-lb\r\n"
                  "Connection: close\r\n\r\n".encode("ascii"))
        head = b""
        while b"\r\n" not in head and len(head) < 4096:
            s.settimeout(max(0.001, deadline - time.monotonic()))
            chunk = s.recv(4096)
            if not chunk:
                break
            head += chunk
    line = head.split(b"\r\n", 1)[0].decode("latin-1")
    parts = line.split(" ", 2)
    if len(parts) < 2 or not parts[0].startswith("HTTP/") or not parts[1].isdigit():
        raise OSError(f"not an HTTP response: {line[:80]!r}")
    if int(parts[1]) != check.expect_status:
        raise OSError(f"HTTP status {parts[1]}, expected {check.expect_status}")


def _checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    total = (total >> 16) + (total & 0xFFFF)
    total += total >> 16
    return ~total & 0xFFFF


def _icmp(check: Check, netns: str | None) -> None:
    ident, seq = os.getpid() & 0xFFFF, int.from_bytes(os.urandom(2), "big")
    payload = b"pynetmon-lb-health"
    header = struct.pack("!BBHHH", 8, 0, 0, ident, seq)
    packet = struct.pack("!BBHHH", 8, 0, _checksum(header + payload), ident, seq) + payload
    deadline = time.monotonic() + check.timeout
    with _socket(netns, socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP) as s:
        s.sendto(packet, (check.address, 0))
        while True:  # a raw socket sees every ICMP message of the namespace: wait for our reply
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("no echo reply")
            s.settimeout(left)
            try:
                data, (src, _) = s.recvfrom(2048)
            except TimeoutError:
                raise TimeoutError("no echo reply") from None
            ihl = (data[0] & 0x0F) * 4
            if src != check.address or len(data) < ihl + 8:
                continue
            kind, _, _, rid, rseq = struct.unpack_from("!BBHHH", data, ihl)
            if kind == 0 and rid == ident and rseq == seq:
                return


def probe(check: Check, netns: str | None = None) -> str | None:
    """Run `check` once: None when it passed, else why it failed (in words)."""
    try:
        if check.kind == "tcp":
            _tcp(check, netns).close()
        elif check.kind == "http":
            _http(check, netns)
        elif check.kind == "icmp":
            _icmp(check, netns)
        elif check.kind != "none":
            return f"unknown check {check.kind!r}"
    except (OSError, TimeoutError) as exc:
        return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    return None


class HealthChecker:
    """Checks targets (any hashable keys) in a thread of its own. `on_change(key, healthy)` is called from
    that thread when a target crosses `rise` or `fall`, `on_score(key)` when the score of a healthy
    target with a window changed; neither may call back into the checker."""

    def __init__(self, netns: str | None, on_change: Callable[[Hashable, bool], None],
                 on_score: Callable[[Hashable], None] | None = None):
        self.netns = netns
        self.on_change = on_change
        self.on_score = on_score
        self.targets: dict[Hashable, TargetState] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._pool = concurrent.futures.ThreadPoolExecutor(MAX_WORKERS, thread_name_prefix="pynetmon-health")
        self._thread: threading.Thread | None = None

    def set_targets(self, checks: dict[Hashable, Check]) -> list[Hashable]:
        """Check exactly these targets from now on. A target whose check is unchanged keeps its state;
        returns the keys that are new (or whose check changed): they start healthy until checked."""
        with self._lock:
            fresh = []
            kept = {}
            for key, check in checks.items():
                old = self.targets.get(key)
                if old is not None and old.check == check:
                    kept[key] = old
                else:
                    kept[key] = TargetState(check, next_due=time.monotonic() + check.interval)
                    fresh.append(key)
            self.targets = kept
        self._wake.set()
        return fresh

    def check_now(self, keys: Iterable[Hashable]) -> None:
        """Check `keys` once, in parallel, and take the results as their state (no rise/fall: the state
        of a target nobody has checked before is whatever its first check says)."""
        with self._lock:
            states = {k: self.targets[k] for k in keys if k in self.targets}
        if not states:
            return
        # a pool of its own: the caller may hold a lock that the checker's callbacks are waiting for
        with concurrent.futures.ThreadPoolExecutor(min(MAX_WORKERS, len(states)),
                                                   thread_name_prefix="pynetmon-health-now") as pool:
            futures = {k: pool.submit(probe, s.check, self.netns) for k, s in states.items()}
            errors = {k: f.result() for k, f in futures.items()}
        for key, error in errors.items():
            with self._lock:
                state = states[key]
                state.healthy, state.streak, state.last_error = error is None, 0, error
                state.record(error is None)
                if error is None:
                    state.ok += 1
                else:
                    state.failed += 1
            if error is not None:
                log.warning("lb: %s:%d is down from the start: %s", state.check.address, state.check.port, error)

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="pynetmon-health", daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join()
        self._pool.shutdown(wait=True, cancel_futures=True)

    @property
    def stopping(self) -> bool:
        """True once close() began: callbacks waiting for their owner's lock should give up."""
        return self._stop.is_set()

    def healthy(self, key: Hashable) -> bool:
        state = self.targets.get(key)
        return state is None or state.healthy

    def score(self, key: Hashable) -> float:
        state = self.targets.get(key)
        return 1.0 if state is None else state.score

    def _run(self) -> None:
        while not self._stop.is_set():
            now = time.monotonic()
            with self._lock:
                due = [(k, s) for k, s in self.targets.items() if s.next_due <= now and not s.running]
                for _, s in due:
                    s.running = True
                    # a fixed rate: the next check starts `interval` after this one was due
                    s.next_due = max(s.next_due + s.check.interval, now)
                wait = min((s.next_due for s in self.targets.values()), default=now + 1.0) - now
            for key, state in due:
                future = self._pool.submit(probe, state.check, self.netns)
                future.add_done_callback(functools.partial(self._result, key, state))
            self._wake.wait(max(0.005, min(wait, 1.0)))
            self._wake.clear()

    def _result(self, key: Hashable, state: TargetState, future: concurrent.futures.Future) -> None:
        if future.cancelled():
            return
        error = future.result()
        changed = None
        with self._lock:
            state.running = False
            state.last_error = error
            score = state.score
            state.record(error is None)
            rescored = state.score != score
            if error is None:
                state.ok += 1
            else:
                state.failed += 1
            if (error is None) == state.healthy:
                state.streak = 0
            else:
                state.streak += 1
                if state.streak >= (state.check.rise if not state.healthy else state.check.fall):
                    state.healthy = not state.healthy
                    state.streak = 0
                    changed = state.healthy
            current = self.targets.get(key) is state
        self._wake.set()
        if changed is None and rescored and state.healthy and current and self.on_score is not None \
                and not self._stop.is_set():
            try:
                self.on_score(key)
            except Exception:
                log.exception("lb: applying the health score of %s:%d failed", state.check.address, state.check.port)
        if changed is not None and current and not self._stop.is_set():
            c = state.check
            log.warning("lb: %s:%d is %s%s", c.address, c.port, "up" if changed else "down",
                        "" if changed else f" ({error})")
            try:
                self.on_change(key, changed)
            except Exception:  # the checker must go on checking
                log.exception("lb: applying the health change of %s:%d failed", c.address, c.port)

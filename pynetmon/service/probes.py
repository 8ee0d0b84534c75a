"""Liveness and readiness for kubelet probes and load balancers (`/healthz`, `/readyz`).

Liveness says only that the event loop answers: a probe that checked more would get a healthy daemon
restarted (and its counters lost) for a problem a restart cannot fix. Readiness says the daemon can do
its job: the monitor kinds are discovered, the state file is restored, and the kernel loads and runs a
BPF program for this process (capabilities, verifier, JIT). Both answer without the bearer token, so
the BPF check is cached: an anonymous caller can make the daemon load at most one program per
`ttl` seconds, however often it asks.
"""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Any

from ..doctor import OK, Check, check_load
from ..monitors import available

BPF_CHECK_TTL = 10.0  # seconds a BPF load verdict is reused (kubelet's default period is 10 s)


@dataclass
class Readiness:
    """What `/readyz` reads: `restored` is set by the app once the state file is applied."""

    ttl: float = BPF_CHECK_TTL
    restored: threading.Event = field(default_factory=threading.Event)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _bpf: Check | None = None
    _bpf_at: float = 0.0
    reconciler: Any = None  # with `--config`: ready once the file has been applied

    def bpf(self) -> Check:
        """The cached verdict of loading and running the packaged counter program (doctor's check)."""
        with self._lock:  # one load at a time; callers arriving meanwhile reuse its verdict
            now = time.monotonic()
            if self._bpf is None or now - self._bpf_at >= self.ttl:
                self._bpf, self._bpf_at = check_load(), now
            return self._bpf

    def checks(self, stopping: bool) -> list[dict[str, object]]:
        """Every readiness condition with its verdict and why (blocking: the BPF check loads a program)."""
        kinds = available()
        out = [
            {"name": "monitor registry", "ok": bool(kinds), "detail": f"{len(kinds)} monitor kinds"},
            {"name": "state restored", "ok": self.restored.is_set(),
             "detail": "state file applied" if self.restored.is_set() else "restoring the state file"},
            {"name": "not stopping", "ok": not stopping,
             "detail": "shutting down: detaching everything" if stopping else "serving"},
        ]
        if self.reconciler is not None:
            applied = self.reconciler.last_success > 0
            out.append({"name": "config applied", "ok": applied,
                        "detail": f"{self.reconciler.path} applied" if applied else
                        f"{self.reconciler.path} was never applied (GET /config says why)"})
        bpf = self.bpf()
        out.append({"name": "BPF usable", "ok": bpf.verdict == OK, "detail": bpf.detail})
        return out

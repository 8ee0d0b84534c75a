"""tcp: connection lifecycle and health from tracepoints (sock:inet_sock_set_state, tcp:tcp_probe,
tcp:tcp_retransmit_skb/synack, tcp:tcp_receive_reset/send_reset): connections with role, state, bytes,
srtt and cwnd; totals; connect latency; state changes, retransmits and resets as events.
Kernel side: bpf/monitors/tcp.bpf.c.

>>> with monitors.open("tcp", netns="h2") as m:
...     m.snapshot()["totals"]
{'opened': 3, 'closed': 3, 'active': 0, 'retransmits': 0, 'resets': 0, 'failed_connects': 0}
>>> for event in m.events(timeout=1.0):
...     print(event)   # {"type": "state", "src": ..., "oldstate": "SYN_SENT", "newstate": "ESTABLISHED", ...}
"""
from __future__ import annotations

import struct
import time
from collections.abc import Iterator
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from pydantic import Field

from .. import netns as _netns
from ..errors import ConfigError
from ..link import TracingLink, attach_tracing
from ..maps import Map
from ..object import BPFObject
from . import flowkey
from .base import Monitor, MonitorOptions
from .histogram import Histogram, family
from .registry import register
from .ringevents import RingEvents

_CONN = struct.Struct("=16s16sHHBBBxQQQQQQIIIIQ")  # struct tcpmon_conn
_EVENT = struct.Struct("=Q16s16sHHBBBBI4x")  # struct tcpmon_event
STATES = {1: "ESTABLISHED", 2: "SYN_SENT", 3: "SYN_RECV", 4: "FIN_WAIT1", 5: "FIN_WAIT2", 6: "TIME_WAIT",
          7: "CLOSE", 8: "CLOSE_WAIT", 9: "LAST_ACK", 10: "LISTEN", 11: "CLOSING", 12: "NEW_SYN_RECV"}
ROLES = {1: "client", 2: "server"}
EVENT_TYPES = {1: "state", 2: "retransmit", 3: "reset"}
CTR_OPENED, CTR_CLOSED, CTR_RETRANS, CTR_RESETS, CTR_FAILED, CTR_LOST_EVENTS, CTR_OVERFLOW = range(7)
HIST_SLOTS = 64


class TcpOptions(MonitorOptions):
    max_entries: int = Field(16384, ge=16, le=1 << 18, description="open connections tracked")
    keep_closed: int = Field(1024, ge=1, le=1 << 18,
                             description="closed connections kept until a snapshot reads them (oldest go first)")
    events: bool = Field(True, description="emit state changes, retransmits and resets to the event ring")
    live_stats: bool | None = Field(
        None, description="also refresh srtt, cwnd and bytes on every received segment (tcp_probe); the snapshot "
                          "always refreshes them with a socket iterator, which sees only the monitor's namespace. "
                          "None (default): only without netns, where the iterator cannot see every namespace")
    ring_bytes: int = Field(1 << 20, ge=1 << 12, le=1 << 26, description="event ring size (a power of two)")


def _state(value: int) -> str:
    return STATES.get(value, str(value))


def decode_conn(raw: bytes, now_ns: int) -> dict[str, Any]:
    """One `struct tcpmon_conn` as the snapshot shows it."""
    (saddr, daddr, sport, dport, fam, role, state, opened, established, closed, acked, received, sent,
     srtt, cwnd, ssthresh, retrans, _sk) = _CONN.unpack(raw)
    end = closed or now_ns
    return {"src": flowkey.address(saddr, fam), "dst": flowkey.address(daddr, fam), "sport": sport, "dport": dport,
            "role": ROLES.get(role, "unknown"), "state": _state(state), "opened_ns": opened,
            "established_ns": established or None, "closed_ns": closed or None,
            "duration_ms": round((end - opened) / 1e6, 3), "retransmits": retrans, "srtt_us": srtt,
            "bytes_acked": acked, "bytes_received": received, "bytes_sent": sent, "cwnd": cwnd,
            "ssthresh": ssthresh}


def decode_event(raw: bytes) -> dict[str, Any]:
    """One `struct tcpmon_event`."""
    ts, saddr, daddr, sport, dport, fam, kind, old, new, segs = _EVENT.unpack_from(raw)
    out: dict[str, Any] = {"type": EVENT_TYPES.get(kind, str(kind)), "ts_ns": ts,
                           "src": flowkey.address(saddr, fam), "dst": flowkey.address(daddr, fam),
                           "sport": sport, "dport": dport}
    if kind == 1:
        out.update(oldstate=_state(old), newstate=_state(new))
    elif kind == 2:
        out["segments"] = segs
    return out


@register
class TcpMonitor(Monitor):
    kind = "tcp"
    summary = "TCP connections (role, state, bytes, srtt, cwnd, retransmits), totals, connect latency, events"
    Options = TcpOptions
    needs_interface = False

    def _start(self) -> None:
        opts: TcpOptions = self.options  # type: ignore[assignment]
        if opts.ring_bytes & (opts.ring_bytes - 1):
            raise ConfigError([("options.ring_bytes", f"must be a power of two, not {opts.ring_bytes}")])
        obj = self._own(BPFObject.from_package("monitors/tcp"))
        obj.maps["tcp_conns"].set_max_entries(opts.max_entries)
        obj.maps["tcp_closed"].set_max_entries(opts.keep_closed)
        obj.maps["tcp_events"].set_max_entries(opts.ring_bytes)
        if not self.per_segment:
            obj.programs["tcp_probe"].set_autoload(False)
        obj.set_rodata(netns_inum=_netns.inode(self.netns) if self.netns else 0, emit_events=int(opts.events))
        obj.load()
        self._conns: Map = obj.maps["tcp_conns"]
        self._closed: Map = obj.maps["tcp_closed"]
        self._counters: Map = obj.maps["tcp_counters"]
        self._latency: Map = obj.maps["tcp_connect_latency"]
        self._events = RingEvents(obj.maps["tcp_events"])
        self._iter: TracingLink | None = None
        for name in obj.programs:  # (loaded programs only: tcp_probe is left out without live_stats)
            link = self._keep(attach_tracing(obj, name))
            if name == "tcp_iter":
                self._iter = link  # type: ignore[assignment]

    @property
    def per_segment(self) -> bool:
        """Whether tcp_probe refreshes connections on every received segment (option live_stats)."""
        live = self.options.live_stats  # type: ignore[attr-defined]
        return self.netns is None if live is None else live

    def _stop(self) -> None:
        events = getattr(self, "_events", None)  # absent when _start failed early
        if events is not None:
            events.close()

    # -- reading -------------------------------------------------------------------------------
    def _counter(self, index: int) -> int:
        return sum(self._counters.lookup(index))

    def totals(self) -> dict[str, int]:
        """opened, closed, active, retransmits (segments, as TcpRetransSegs), resets, failed_connects."""
        opened, closed = self._counter(CTR_OPENED), self._counter(CTR_CLOSED)
        return {"opened": opened, "closed": closed, "active": len(self._conns),
                "retransmits": self._counter(CTR_RETRANS), "resets": self._counter(CTR_RESETS),
                "failed_connects": self._counter(CTR_FAILED)}

    def connect_latency(self) -> Histogram:
        """Time from SYN sent to ESTABLISHED of client connections, in µs (log2 buckets)."""
        slots = [sum(self._latency.lookup(i)) for i in range(HIST_SLOTS + 1)]
        return Histogram.from_slots(slots[:HIST_SLOTS], sum=slots[HIST_SLOTS])

    def snapshot(self) -> dict[str, Any]:
        """Open connections, and the closed ones since the previous snapshot (which this one removes
        from the kernel: each closed connection is reported once)."""
        with self.lock:
            if self._iter is not None:
                # current values of the open connections (tcp_probe's are from before the last segment)
                with _netns.enter(self.netns):  # a socket iterator walks the caller's namespace
                    self._iter.run_iterator()
            now = time.monotonic_ns()
            _, values, n = self._conns.read_raw()
            size = _CONN.size
            conns = [decode_conn(values[i * size:(i + 1) * size], now) for i in range(n)]
            _, values, n = self._closed.read_raw(delete=True)
            closed = [decode_conn(values[i * size:(i + 1) * size], now) for i in range(n)]
            conns = sorted(conns + closed, key=lambda c: c["opened_ns"])
            return {"connections": conns, "totals": self.totals(),
                    "connect_latency_us": self.connect_latency().to_dict(),
                    "lost_events": self._counter(CTR_LOST_EVENTS), "overflow": self._counter(CTR_OVERFLOW),
                    "self": self.self_cost()}

    def events(self, timeout: float | None = None) -> Iterator[dict[str, Any]]:
        """State changes, retransmits and resets as they happen; ends after `timeout` seconds without
        one (never, with None) or when the monitor closes. One reader at a time."""
        if not self.started:
            raise ConfigError([("", "the tcp monitor is not started")])
        return self._events.stream(timeout, decode_event)

    def families(self) -> list[Metric]:
        with self.lock:
            totals, latency = self.totals(), self.connect_latency()
        out: list[Metric] = [
            CounterMetricFamily("tcp_connections_opened", "TCP connections opened", value=totals["opened"]),
            CounterMetricFamily("tcp_connections_closed", "TCP connections closed", value=totals["closed"]),
            GaugeMetricFamily("tcp_connections_active", "TCP connections open now", value=totals["active"]),
            CounterMetricFamily("tcp_retransmitted_segments", "TCP segments retransmitted (TcpRetransSegs)",
                                value=totals["retransmits"]),
            CounterMetricFamily("tcp_resets", "TCP resets sent or received", value=totals["resets"]),
            CounterMetricFamily("tcp_failed_connects", "TCP connects that never got established",
                                value=totals["failed_connects"]),
            family("tcp_connect_latency_microseconds", "Time from SYN to ESTABLISHED of client connections",
                   latency),
        ]
        return out + self.self_families()

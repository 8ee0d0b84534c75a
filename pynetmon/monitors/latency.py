"""latency: how long packets spend in this host, timed by our own bpf_ktime_get_ns() at tc ingress
(skb->tstamp is often 0) to a point chosen by `mode`:

- `reply` (the article's packet latency tracker): to tc egress of the reverse flow's next packet on the
  same interface: how long the host takes to answer;
- `stack`: to the socket (BTF tracepoints `tcp_probe`, a segment reaching an established TCP socket,
  and `sk_data_ready`, a datagram just queued): how long the stack takes to deliver;
- `forward`: to tc egress on `egress_interface` of the same packet: how long a router holds it.

Kernel side: bpf/monitors/latency.bpf.c. `linear=1` gives 1-µs buckets.

>>> with monitors.open("latency", interface="eth0", mode="reply", linear=1, buckets=200) as m:
...     m.snapshot()["by_flow"][0]
{'src': '198.18.0.1', 'dst': '198.18.0.2', 'sport': 40000, 'dport': 7, 'proto': 'udp', 'packets': 10,
 'min_us': 18.2, 'max_us': 35.0, 'avg_us': 22.4, 'p50_us': 21.0, 'p99_us': 35.0}
"""
from __future__ import annotations

import struct
from typing import Any, Literal

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from pydantic import Field, ValidationInfo, field_validator

from ..link import attach_tc, attach_tracing
from ..maps import Map
from ..object import BPFObject
from . import latstats
from .cardinality import CardinalityOptions
from .histogram import family
from .registry import register

MODES = {"reply": 0, "stack": 1, "forward": 2}  # LATENCY_MODE_* in latency.h
CTR_STAMPED, CTR_MATCHED, CTR_OVERFLOW, CTR_STALE, CTR_SUM_US, NR_CTR = range(6)  # LATENCY_CTR_*
STACK_PROGRAMS = ("latency_tcp_probe", "latency_data_ready")


class LatencyOptions(CardinalityOptions, latstats.HistogramOptions):
    mode: Literal["reply", "stack", "forward"] = Field("reply", description="where the time ends (see the monitor)")
    egress_interface: str | None = Field(None, min_length=1, max_length=15, validate_default=True,
                                         description="mode=forward: the interface packets leave by")
    max_entries: int = Field(4096, ge=16, le=1 << 20, description="flows the kernel table holds (808 bytes each)")
    max_pending: int = Field(16384, ge=16, le=1 << 22, description="stamped packets waiting for their end (LRU)")
    max_age: float = Field(1.0, gt=0, le=60, description="stack/forward: seconds after which a stamp is stale")
    idle_timeout: float = Field(300.0, gt=0, le=86_400, description="seconds without a sample before a flow is removed")

    @field_validator("egress_interface")
    @classmethod
    def _egress(cls, value: str | None, info: ValidationInfo) -> str | None:
        if (info.data.get("mode") == "forward") != (value is not None):
            raise ValueError("needed with mode=forward, and only there")
        return value


@register
class LatencyMonitor(latstats.FlowDelayMonitor):
    kind = "latency"
    summary = ("time packets spend in this host from tc ingress: to the reply (reply), to the socket (stack), "
               "to another interface (forward)")
    Options = LatencyOptions
    live_options = frozenset({"top", "ttl", "idle_timeout"})

    def _start(self) -> None:
        opts: LatencyOptions = self.options  # type: ignore[assignment]
        obj = self._own(BPFObject.from_package("monitors/latency"))
        hist, nslots = latstats.hist_config(opts)
        obj.maps["latency_flows"].set_max_entries(opts.max_entries)
        obj.maps["latency_by_flow"].set_max_entries(opts.max_pending if opts.mode == "reply" else 1)
        obj.maps["latency_by_skb"].set_max_entries(1 if opts.mode == "reply" else opts.max_pending)
        obj.maps["latency_hist"].set_max_entries(nslots)
        for name in STACK_PROGRAMS:  # global tracepoints only where they are used
            obj.programs[name].set_autoload(opts.mode == "stack")
        obj.set_rodata(latency_config=hist + struct.pack("=I4xQ", MODES[opts.mode], int(opts.max_age * 1e9)))
        obj.load()
        self._flows = latstats.FlowTable(obj.maps["latency_flows"], opts.ttl)
        self._hist: Map = obj.maps["latency_hist"]
        self._counters: Map = obj.maps["latency_counters"]
        self._keep(attach_tc(obj.programs["latency_ingress"], self.interface, "ingress", netns=self.netns))
        if opts.mode == "stack":
            for name in STACK_PROGRAMS:
                self._keep(attach_tracing(obj, name))
        else:
            egress = opts.egress_interface if opts.mode == "forward" else self.interface
            self._keep(attach_tc(obj.programs["latency_egress"], egress, "egress", netns=self.netns))
        self._start_evicting()

    def snapshot(self) -> dict[str, Any]:
        with self.lock:
            counters = latstats.per_cpu_sums(self._counters, NR_CTR)
            by_flow = []
            for row in self._flows.rows():
                row["packets"] = row.pop("samples")
                by_flow.append(row)
            hist = latstats.read_histogram(self._hist, self.options, counters[CTR_SUM_US])  # type: ignore[arg-type]
        return {"mode": self.options.mode, "latency_us": hist.to_dict(),  # type: ignore[attr-defined]
                "packets": counters[CTR_MATCHED], "stamped": counters[CTR_STAMPED], "stale": counters[CTR_STALE],
                "by_flow": by_flow, "overflow": counters[CTR_OVERFLOW], "evicted": self._flows.evicted,
                "max_entries": self.options.max_entries,  # type: ignore[attr-defined]
                "self": self.self_cost()}

    def families(self) -> list[Metric]:
        opts: LatencyOptions = self.options  # type: ignore[assignment]
        with self.lock:
            counters = latstats.per_cpu_sums(self._counters, NR_CTR)
            per_flow, omitted = self._flows.families("packet_latency", "packet latency", opts.top, opts.ttl)
            hist = latstats.read_histogram(self._hist, opts, counters[CTR_SUM_US])
        return [
            family("packet_latency_microseconds", f"Time packets spend in the host ({opts.mode})", hist),
            *per_flow,
            CounterMetricFamily("packet_latency_stale_stamps", "Stamps found too old or of another flow (ignored)",
                                value=counters[CTR_STALE]),
            CounterMetricFamily("packet_latency_overflow_samples", "Samples of new flows the full table could not hold",
                                value=counters[CTR_OVERFLOW]),
            GaugeMetricFamily("pynetmon_monitor_series_omitted", "Keys left off /metrics by the top option",
                              value=omitted),
            *self.self_families(),
        ]

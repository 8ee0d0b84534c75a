"""rtt: passive per-flow TCP round-trip times from TCP timestamps (TSval out → TSecr back), in the style
of pping, at tcx ingress and egress of one interface. Works for traffic the host only forwards. Kernel
side: bpf/monitors/rtt.bpf.c.

A flow's samples are the time from its packet passing the interface to the peer's echo passing back:
on an endpoint that is the whole path RTT (plus the peer's delayed-ACK time when it delays ACKs), on a
router the part of the path beyond it.

>>> with monitors.open("rtt", interface="eth0") as m:
...     m.snapshot()["flows"][0]
{'src': '198.18.0.1', 'dst': '198.18.0.2', 'sport': 40112, 'dport': 5201, 'samples': 812,
 'min_us': 20104.2, 'p50_us': 20310.0, 'p99_us': 21475.5, 'max_us': 22001.3, 'avg_us': 20388.1, ...}
"""
from __future__ import annotations

from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from pydantic import Field

from ..link import attach_tc
from ..maps import Map
from ..object import BPFObject
from . import latstats
from .cardinality import CardinalityOptions
from .histogram import family
from .registry import register

CTR_TCP_TS, CTR_STORED, CTR_SAMPLES, CTR_OVERFLOW, CTR_SUM_US, NR_CTR = range(6)  # RTT_CTR_* in rtt.h


class RttOptions(CardinalityOptions, latstats.HistogramOptions):
    max_entries: int = Field(4096, ge=16, le=1 << 20, description="flows the kernel table holds (808 bytes each)")
    max_timestamps: int = Field(16384, ge=16, le=1 << 22,
                                description="TSvals waiting for their echo (LRU: the oldest go first)")
    idle_timeout: float = Field(300.0, gt=0, le=86_400, description="seconds without a sample before a flow is removed")


@register
class RttMonitor(latstats.FlowDelayMonitor):
    kind = "rtt"
    summary = "passive per-flow TCP RTT from timestamp options, pping style (tcx ingress+egress; forwarded traffic too)"
    Options = RttOptions
    live_options = frozenset({"top", "ttl", "idle_timeout"})

    def _start(self) -> None:
        opts: RttOptions = self.options  # type: ignore[assignment]
        obj = self._own(BPFObject.from_package("monitors/rtt"))
        config, nslots = latstats.hist_config(opts)
        obj.maps["rtt_flows"].set_max_entries(opts.max_entries)
        obj.maps["rtt_timestamps"].set_max_entries(opts.max_timestamps)
        obj.maps["rtt_hist"].set_max_entries(nslots)
        obj.set_rodata(rtt_hist_config=config)
        obj.load()
        self._flows = latstats.FlowTable(obj.maps["rtt_flows"], opts.ttl)
        self._hist: Map = obj.maps["rtt_hist"]
        self._counters: Map = obj.maps["rtt_counters"]
        self._keep(attach_tc(obj.programs["rtt_ingress"], self.interface, "ingress", netns=self.netns))
        self._keep(attach_tc(obj.programs["rtt_egress"], self.interface, "egress", netns=self.netns))
        self._start_evicting()

    def snapshot(self) -> dict[str, Any]:
        with self.lock:
            counters = latstats.per_cpu_sums(self._counters, NR_CTR)
            flows = self._flows.rows()
            hist = latstats.read_histogram(self._hist, self.options, counters[CTR_SUM_US])  # type: ignore[arg-type]
            return {"flows": flows, "rtt_us": hist.to_dict(), "samples": counters[CTR_SAMPLES],
                    "tcp_timestamped_packets": counters[CTR_TCP_TS], "timestamps_stored": counters[CTR_STORED],
                    "overflow": counters[CTR_OVERFLOW], "evicted": self._flows.evicted,
                    "max_entries": self.options.max_entries,  # type: ignore[attr-defined]
                    "self": self.self_cost()}

    def families(self) -> list[Metric]:
        opts: RttOptions = self.options  # type: ignore[assignment]
        with self.lock:
            counters = latstats.per_cpu_sums(self._counters, NR_CTR)
            per_flow, omitted = self._flows.families("tcp_rtt", "RTT", opts.top, opts.ttl)
            hist = latstats.read_histogram(self._hist, opts, counters[CTR_SUM_US])
        return [
            family("tcp_rtt_microseconds", "Passive TCP round-trip times (TSval to TSecr)", hist),
            *per_flow,
            CounterMetricFamily("tcp_rtt_overflow_samples", "Samples of new flows the full table could not hold",
                                value=counters[CTR_OVERFLOW]),
            GaugeMetricFamily("pynetmon_monitor_series_omitted", "Keys left off /metrics by the top option",
                              value=omitted),
            *self.self_families(),
        ]

"""flows: packets and bytes per IPv4/IPv6 5-tuple and direction (top talkers), at tcx ingress and egress,
or XDP ingress (`mode="xdp"`) with tcx egress. Kernel side: bpf/monitors/flows.bpf.c.

>>> with monitors.open("flows", interface="eth0", aggregate=["dst", "dport"]) as m:
...     m.snapshot()["flows"][0]
{'src': None, 'dst': '198.18.0.2', 'sport': None, 'dport': 53, 'proto': None, 'direction': 'egress', ...}
"""
from __future__ import annotations

import operator
import struct
import time
from typing import Any, Literal

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from pydantic import Field

from ..btf_codec import gc_paused
from ..link import attach_tc, attach_xdp
from ..maps import Map
from ..object import BPFObject
from . import flowkey
from .cardinality import CardinalityOptions, SeriesTTL, top_keys
from .latstats import EvictingMonitor
from .registry import register

FIELDS = ("src", "dst", "sport", "dport", "proto")
_KEEP_BITS = {name: 1 << i for i, name in enumerate(FIELDS)}  # FLOWS_KEEP_* in flows.h
_VALUE = struct.Struct("=QQQQQ")  # struct flows_value
TCP_FLAG_NAMES = ("FIN", "SYN", "RST", "PSH", "ACK", "URG", "ECE", "CWR")
CTR_OVERFLOW, CTR_NON_IP = 0, 1


class FlowsOptions(CardinalityOptions):
    mode: Literal["tc", "xdp"] = Field("tc", description="ingress hook: tcx, or XDP (egress is always tcx)")
    max_entries: int = Field(65536, ge=16, le=1 << 20, description="flows the kernel table holds")
    idle_timeout: float = Field(60.0, gt=0, le=86_400, description="seconds without packets before a flow is removed")
    aggregate: list[Literal["src", "dst", "sport", "dport", "proto"]] | None = Field(
        None, min_length=1, description="keep only these key fields (the kernel sums the rest together)")


def flag_names(bits: int) -> list[str]:
    """Names of the TCP flags set in a flag byte, FIN first."""
    return list(_FLAG_NAMES[bits & 0xFF])


_FLAG_NAMES = [tuple(name for i, name in enumerate(TCP_FLAG_NAMES) if bits >> i & 1) for bits in range(256)]


@register
class FlowsMonitor(EvictingMonitor):
    kind = "flows"
    summary = "packets and bytes per IPv4/IPv6 5-tuple and direction (tcx ingress+egress, or XDP ingress)"
    Options = FlowsOptions
    live_options = frozenset({"top", "ttl", "idle_timeout"})

    def _start(self) -> None:
        opts: FlowsOptions = self.options  # type: ignore[assignment]
        keep = sum(_KEEP_BITS[f] for f in opts.aggregate) if opts.aggregate else sum(_KEEP_BITS.values())
        obj = self._own(BPFObject.from_package("monitors/flows"))
        obj.maps["flows_table"].set_max_entries(opts.max_entries)
        obj.set_rodata(flows_keep=keep)
        obj.load()
        self._table: Map = obj.maps["flows_table"]
        self._counters: Map = obj.maps["flows_counters"]
        self._evicted = 0
        self._series = SeriesTTL(opts.ttl)
        if opts.mode == "xdp":
            self._keep(attach_xdp(obj.programs["flows_xdp"], self.interface, netns=self.netns))
        else:
            self._keep(attach_tc(obj.programs["flows_ingress"], self.interface, "ingress", netns=self.netns))
        self._keep(attach_tc(obj.programs["flows_egress"], self.interface, "egress", netns=self.netns))
        self._start_evicting()

    # -- eviction (EvictingMonitor's thread calls this) -------------------------------------------
    def evict_idle(self, now_ns: int | None = None) -> int:
        """Remove flows without packets for `idle_timeout` seconds; returns how many went. A packet of
        such a flow arriving between the read and the delete is lost with it (the flow was idle)."""
        with self.lock:
            keys, values, n = self._table.read_raw()
            if not n:
                return 0
            now = time.monotonic_ns() if now_ns is None else now_ns
            limit = int(self.options.idle_timeout * 1e9)  # type: ignore[attr-defined]
            ks = self._table.key_size
            idle = [keys[i * ks:(i + 1) * ks] for i, row in enumerate(_VALUE.iter_unpack(values[:n * _VALUE.size]))
                    if now - row[3] > limit]
            for key in idle:
                try:
                    self._table.delete(key)
                except KeyError:
                    pass
            self._evicted += len(idle)
            return len(idle)

    # -- reading -------------------------------------------------------------------------------
    def _counter(self, index: int) -> int:
        return sum(self._counters.lookup(index))

    def rows(self) -> list[dict[str, Any]]:
        """Every flow in the table as the snapshot shows it (unsorted). Fields left out by `aggregate`
        are None."""
        keys, values, n = self._table.read_raw()
        with gc_paused(n >= 10_000):  # hundreds of thousands of small containers: see gc_paused
            return self._rows(keys, values, n)

    def _rows(self, keys: bytes, values: bytes, n: int) -> list[dict[str, Any]]:
        address, protos, dirs, flags = flowkey.address, flowkey.PROTO_NAMES, flowkey.DIRECTIONS, _FLAG_NAMES
        rows = [{"src": address(sa, fam), "dst": address(da, fam), "sport": sp, "dport": dp,
                 "proto": protos.get(pr, pr), "direction": dirs[dr] if dr < 2 else str(dr),
                 "packets": p, "bytes": b, "first_seen_ns": f, "last_seen_ns": la, "tcp_flags": list(flags[g])}
                for (sa, da, sp, dp, pr, fam, dr), (p, b, f, la, g)
                in zip(flowkey.KEY.iter_unpack(memoryview(keys)[:n * flowkey.KEY_SIZE]),
                       _VALUE.iter_unpack(memoryview(values)[:n * _VALUE.size]))]
        agg = self.options.aggregate  # type: ignore[attr-defined]
        if agg:
            hidden = [f for f in FIELDS if f not in agg]
            for row in rows:
                for name in hidden:
                    row[name] = None
        return rows

    def snapshot(self) -> dict[str, Any]:
        with self.lock:
            flows = self.rows()
            flows.sort(key=operator.itemgetter("bytes"), reverse=True)
            return {"flows": flows, "overflow": self._counter(CTR_OVERFLOW), "non_ip": self._counter(CTR_NON_IP),
                    "evicted": self._evicted, "max_entries": self.options.max_entries,  # type: ignore[attr-defined]
                    "self": self.self_cost()}

    def families(self) -> list[Metric]:
        opts: FlowsOptions = self.options  # type: ignore[assignment]
        labels = [f for f in FIELDS if not opts.aggregate or f in opts.aggregate] + ["direction"]
        with self.lock:
            # Keyed by the raw key bytes: only the `top` kept keys are decoded into labels.
            keys, values, n = self._table.read_raw()
            ks = flowkey.KEY_SIZE
            with gc_paused(n >= 10_000):
                current = {keys[i * ks:(i + 1) * ks]: (v[1], v[0])
                           for i, v in enumerate(_VALUE.iter_unpack(memoryview(values)[:n * _VALUE.size]))}
            overflow, evicted = self._counter(CTR_OVERFLOW), self._evicted
            self._series.ttl = opts.ttl
            exported = self._series.observe(current)
        kept, omitted, _ = top_keys(exported, opts.top, weight=lambda v: v[0])
        fam_bytes = CounterMetricFamily("flow_bytes", "Bytes per flow (frame lengths as captured)", labels=labels)
        fam_packets = CounterMetricFamily("flow_packets", "Packets per flow", labels=labels)
        for raw, (nbytes, packets) in kept.items():
            shown = flowkey.decode(raw)._asdict()
            label_values = ["" if shown[f] is None else str(shown[f]) for f in labels]
            fam_bytes.add_metric(label_values, nbytes)
            fam_packets.add_metric(label_values, packets)
        return [
            fam_bytes, fam_packets,
            CounterMetricFamily("flow_overflow_packets", "Packets of new flows the full table could not hold",
                                value=overflow),
            CounterMetricFamily("flow_evicted_flows", "Flows removed after idle_timeout", value=evicted),
            GaugeMetricFamily("flow_table_entries", "Flows in the kernel table", value=len(current)),
            GaugeMetricFamily("pynetmon_monitor_series_omitted", "Keys left off /metrics by the top option",
                              value=omitted),
            *self.self_families(),
        ]

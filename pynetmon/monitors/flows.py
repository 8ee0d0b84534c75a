"""flows: packets and bytes per IPv4/IPv6 5-tuple and direction (top talkers), at tcx ingress and egress,
or XDP ingress (`mode="xdp"`) with tcx egress. Kernel side: bpf/monitors/flows.bpf.c.

>>> with monitors.open("flows", interface="eth0", aggregate=["dst", "dport"]) as m:
...     m.snapshot()["flows"][0]
{'src': None, 'dst': '198.18.0.2', 'sport': None, 'dport': 53, 'proto': None, 'direction': 'egress', ...}
"""
from __future__ import annotations

import struct
import threading
import time
from typing import Any, Literal

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from pydantic import Field

from ..errors import Error
from ..link import attach_tc, attach_xdp
from ..maps import Map, possible_cpus
from ..object import BPFObject
from . import flowkey
from .base import Monitor
from .cardinality import CardinalityOptions, SeriesTTL, top_keys
from .registry import register

FIELDS = ("src", "dst", "sport", "dport", "proto")
_KEEP_BITS = {name: 1 << i for i, name in enumerate(FIELDS)}  # FLOWS_KEEP_* in flows.h
_VALUE = struct.Struct("=QQQQB7x")  # struct flows_value
TCP_FLAG_NAMES = ("FIN", "SYN", "RST", "PSH", "ACK", "URG", "ECE", "CWR")
CTR_OVERFLOW, CTR_NON_IP = 0, 1


class FlowsOptions(CardinalityOptions):
    mode: Literal["tc", "xdp"] = Field("tc", description="ingress hook: tcx, or XDP (egress is always tcx)")
    max_entries: int = Field(65536, ge=16, le=1 << 22, description="flows the kernel table holds")
    idle_timeout: float = Field(60.0, gt=0, le=86_400, description="seconds without packets before a flow is removed")
    aggregate: list[Literal["src", "dst", "sport", "dport", "proto"]] | None = Field(
        None, min_length=1, description="keep only these key fields (the kernel sums the rest together)")


def flag_names(bits: int) -> list[str]:
    """Names of the TCP flags set in a flag byte, FIN first."""
    return [name for i, name in enumerate(TCP_FLAG_NAMES) if bits >> i & 1]


def merge_per_cpu(raw_values: bytes, count: int, ncpus: int) -> list[tuple[int, int, int, int, int]]:
    """One (packets, bytes, first_seen_ns, last_seen_ns, tcp_flags) per key from per-CPU values: sums,
    the earliest first sighting of a CPU that saw the flow, the latest sighting, OR of the flags."""
    rows = _VALUE.iter_unpack(memoryview(raw_values)[:count * ncpus * _VALUE.size])
    merged = []
    for _ in range(count):
        packets = nbytes = last = flags = 0
        first = None
        for _cpu in range(ncpus):
            p, b, f, la, fl = next(rows)
            if p:
                packets += p
                nbytes += b
                first = f if first is None or f < first else first
                last = max(last, la)
                flags |= fl
        merged.append((packets, nbytes, first or 0, last, flags))
    return merged


@register
class FlowsMonitor(Monitor):
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
        self._table: Map = obj.maps["flows_table"]  # type: ignore[assignment]
        self._counters: Map = obj.maps["flows_counters"]  # type: ignore[assignment]
        self._ncpus = possible_cpus()
        self._evicted = 0
        self._series = SeriesTTL(opts.ttl)
        if opts.mode == "xdp":
            self._keep(attach_xdp(obj.programs["flows_xdp"], self.interface, netns=self.netns))
        else:
            self._keep(attach_tc(obj.programs["flows_ingress"], self.interface, "ingress", netns=self.netns))
        self._keep(attach_tc(obj.programs["flows_egress"], self.interface, "egress", netns=self.netns))
        self._stop_evicting = threading.Event()
        self._evictor = threading.Thread(target=self._evict_loop, name=f"pynetmon-flows-evict-{self.interface}",
                                         daemon=True)
        self._evictor.start()

    def _stop(self) -> None:
        stop = getattr(self, "_stop_evicting", None)
        if stop is not None:
            stop.set()
            self._evictor.join()

    # -- eviction ------------------------------------------------------------------------------
    def _evict_loop(self) -> None:
        while not self._stop_evicting.wait(min(self.options.idle_timeout / 2, 5.0)):  # type: ignore[attr-defined]
            try:
                self.evict_idle()
            except Error:  # the map went away while closing; the loop ends with the next wait
                pass

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
            idle = [keys[i * ks:(i + 1) * ks] for i, row in enumerate(merge_per_cpu(values, n, self._ncpus))
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

    def read(self) -> list[tuple[flowkey.FlowKey, tuple[int, int, int, int, int]]]:
        """(key, (packets, bytes, first_seen_ns, last_seen_ns, tcp_flags)) of every flow in the table."""
        keys, values, n = self._table.read_raw()
        return list(zip(flowkey.decode_many(keys, n), merge_per_cpu(values, n, self._ncpus)))

    def _shown(self, key: flowkey.FlowKey) -> dict[str, Any]:
        agg = self.options.aggregate  # type: ignore[attr-defined]
        row = key._asdict()
        if agg:
            for name in FIELDS:
                if name not in agg:
                    row[name] = None
        return row

    def snapshot(self) -> dict[str, Any]:
        with self.lock:
            flows = []
            for key, (packets, nbytes, first, last, flags) in self.read():
                row = self._shown(key)
                row.update(packets=packets, bytes=nbytes, first_seen_ns=first, last_seen_ns=last,
                           tcp_flags=flag_names(flags))
                flows.append(row)
            flows.sort(key=lambda r: (-r["bytes"], -r["packets"]))
            return {"flows": flows, "overflow": self._counter(CTR_OVERFLOW), "non_ip": self._counter(CTR_NON_IP),
                    "evicted": self._evicted, "max_entries": self.options.max_entries,  # type: ignore[attr-defined]
                    "self": self.self_cost()}

    def families(self) -> list[Metric]:
        opts: FlowsOptions = self.options  # type: ignore[assignment]
        labels = [f for f in FIELDS if not opts.aggregate or f in opts.aggregate] + ["direction"]
        with self.lock:
            current = {}
            for key, (packets, nbytes, *_rest) in self.read():
                shown = self._shown(key)
                current[tuple("" if shown[f] is None else str(shown[f]) for f in labels)] = (nbytes, packets)
            overflow, evicted = self._counter(CTR_OVERFLOW), self._evicted
            self._series.ttl = opts.ttl
            exported = self._series.observe(current)
        kept, omitted, _ = top_keys(exported, opts.top, weight=lambda v: v[0])
        fam_bytes = CounterMetricFamily("flow_bytes", "Bytes per flow (frame lengths as captured)", labels=labels)
        fam_packets = CounterMetricFamily("flow_packets", "Packets per flow", labels=labels)
        for label_values, (nbytes, packets) in kept.items():
            fam_bytes.add_metric(list(label_values), nbytes)
            fam_packets.add_metric(list(label_values), packets)
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

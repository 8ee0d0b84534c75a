"""dns: DNS queries and responses on the configured server ports (UDP and TCP, 53 by default) at tcx
ingress and egress of one interface: counts by rcode and qtype, per qname, latency from query to
response matched by (client address, client port, DNS id), and queries never answered. Metric names
follow Hubble (`dns_queries_total`, `dns_responses_total{rcode,qtype}`). Kernel side:
bpf/monitors/dns.bpf.c.

>>> with monitors.open("dns", interface="eth0", ports=[53, 5353]) as m:
...     m.snapshot()["by_rcode"]
{'NOERROR': 41, 'NXDOMAIN': 2}
"""
from __future__ import annotations

import struct
import time
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from pydantic import Field, field_validator

from ..link import attach_tc
from ..maps import Map
from ..object import BPFObject
from . import dnswire, latstats
from .cardinality import CardinalityOptions, SeriesTTL, top_keys
from .histogram import family
from .registry import register

MAX_PORTS = 8      # DNS_MAX_PORTS
NAME_MAX = 128     # DNS_NAME_MAX
(CTR_QUERIES, CTR_RESPONSES, CTR_MATCHED, CTR_MALFORMED, CTR_NAME_OVERFLOW, CTR_COUNT_OVERFLOW, CTR_SUM_US,
 NR_CTR) = range(8)  # DNS_CTR_* in dns.h
KIND_QUERY, KIND_RESPONSE = 0, 1
_PENDING_VALUE = struct.Struct("=QH6x")     # struct dns_pending
_NAME_HEAD = struct.Struct("=QQ16I")        # struct dns_name_value before its latency stats


class DnsOptions(CardinalityOptions, latstats.HistogramOptions):
    ports: list[int] = Field(default_factory=lambda: [53], min_length=1, max_length=MAX_PORTS,
                             description="server ports of DNS over UDP and TCP")
    max_pending: int = Field(16384, ge=16, le=1 << 22, description="queries waiting for a response (LRU)")
    max_names: int = Field(1024, ge=16, le=1 << 18, description="qnames counted (888 bytes each); more are overflow")
    timeout: float = Field(5.0, gt=0, le=3600, description="seconds after which a query without response is unanswered")
    idle_timeout: float = Field(300.0, gt=0, le=86_400, description="seconds without a message before a name is removed")

    @field_validator("ports")
    @classmethod
    def _ports(cls, ports: list[int]) -> list[int]:
        for i, port in enumerate(ports):
            if not 1 <= port <= 65535:
                raise ValueError(f"ports[{i}]: {port} is not a port number (1-65535)")
        if len(set(ports)) != len(ports):
            raise ValueError("ports must not repeat")
        return ports


@register
class DnsMonitor(latstats.EvictingMonitor):
    kind = "dns"
    summary = "DNS queries, responses, rcodes, qtypes, names and latency (tcx ingress+egress; UDP and TCP)"
    Options = DnsOptions
    live_options = frozenset({"top", "ttl", "timeout", "idle_timeout"})

    def _start(self) -> None:
        opts: DnsOptions = self.options  # type: ignore[assignment]
        obj = self._own(BPFObject.from_package("monitors/dns"))
        hist, nslots = latstats.hist_config(opts)
        ports = opts.ports + [0] * (MAX_PORTS - len(opts.ports))
        obj.maps["dns_pending"].set_max_entries(opts.max_pending)
        obj.maps["dns_names"].set_max_entries(opts.max_names)
        obj.maps["dns_hist"].set_max_entries(nslots)
        obj.set_rodata(dns_config=hist + struct.pack(f"={MAX_PORTS}H", *ports))
        obj.load()
        self._names: Map = obj.maps["dns_names"]
        self._pending: Map = obj.maps["dns_pending"]
        self._counts: Map = obj.maps["dns_counts"]
        self._hist: Map = obj.maps["dns_hist"]
        self._counters: Map = obj.maps["dns_counters"]
        self._evicted = 0
        self._series = SeriesTTL(opts.ttl)
        self._keep(attach_tc(obj.programs["dns_ingress"], self.interface, "ingress", netns=self.netns))
        self._keep(attach_tc(obj.programs["dns_egress"], self.interface, "egress", netns=self.netns))
        self._start_evicting()

    # -- reading -------------------------------------------------------------------------------
    def read_names(self) -> list[dict[str, Any]]:
        """Per qname: queries, responses, rcodes and latency (µs), plus `_key` and `_last_ns` (the latest
        query or response) for eviction."""
        keys, values, n = self._names.read_raw()
        ks, vs = self._names.key_size, self._names.value_size
        rows = []
        for i in range(n):
            queries, responses, *rcodes = _NAME_HEAD.unpack_from(values, i * vs)
            lat = latstats.LatStats.decode(values, i * vs + _NAME_HEAD.size)
            summary = lat.summary()
            rows.append({"qname": dnswire.decode_qname(keys[i * ks:(i + 1) * ks]), "queries": queries,
                         "responses": responses,
                         "rcodes": {dnswire.rcode_name(r): c for r, c in enumerate(rcodes) if c},
                         "latency_us": {"p50": summary["p50_us"], "p99": summary["p99_us"], "max": summary["max_us"]},
                         "_key": keys[i * ks:(i + 1) * ks], "_last_ns": lat.last_ns})
        return rows

    def evict_idle(self, now_ns: int | None = None) -> int:
        """Remove names without a query or response for `idle_timeout` seconds; returns how many went."""
        now = time.monotonic_ns() if now_ns is None else now_ns
        limit = int(self.options.idle_timeout * 1e9)  # type: ignore[attr-defined]
        gone = 0
        with self.lock:
            for row in self.read_names():
                if now - row["_last_ns"] > limit:
                    try:
                        self._names.delete(row["_key"])
                        gone += 1
                    except KeyError:
                        pass
            self._evicted += gone
        return gone

    def _counts_by_kind(self) -> tuple[dict[str, int], dict[str, int], dict[tuple[str, str], int]]:
        """(queries by qtype, responses by rcode, responses by (rcode, qtype))."""
        by_qtype: dict[str, int] = {}
        by_rcode: dict[str, int] = {}
        responses: dict[tuple[str, str], int] = {}
        for key, count in self._counts.items():  # struct dns_count_key decoded from BTF
            qtype, kind, rcode = key["qtype"], key["kind"], key["rcode"]
            tname, rname = dnswire.qtype_name(qtype), dnswire.rcode_name(rcode)
            if kind == KIND_QUERY:
                by_qtype[tname] = by_qtype.get(tname, 0) + count
            else:
                by_rcode[rname] = by_rcode.get(rname, 0) + count
                responses[(rname, tname)] = responses.get((rname, tname), 0) + count
        return by_qtype, by_rcode, responses

    def _waiting(self) -> int:
        """Queries still within `timeout` of being sent (not yet unanswered)."""
        _, values, n = self._pending.read_raw()
        limit = time.monotonic_ns() - int(self.options.timeout * 1e9)  # type: ignore[attr-defined]
        vs = self._pending.value_size
        return sum(1 for i in range(n) if _PENDING_VALUE.unpack_from(values, i * vs)[0] > limit)

    def snapshot(self) -> dict[str, Any]:
        with self.lock:
            counters = latstats.per_cpu_sums(self._counters, NR_CTR)
            by_qtype, by_rcode, _ = self._counts_by_kind()
            names = [{k: v for k, v in row.items() if not k.startswith("_")} for row in self.read_names()]
            names.sort(key=lambda r: (-r["queries"], r["qname"]))
            waiting = self._waiting()
            hist = latstats.read_histogram(self._hist, self.options, counters[CTR_SUM_US])  # type: ignore[arg-type]
        return {"queries": counters[CTR_QUERIES], "responses": counters[CTR_RESPONSES],
                "unanswered": max(0, counters[CTR_QUERIES] - counters[CTR_MATCHED] - waiting),
                "waiting": waiting, "matched": counters[CTR_MATCHED],
                "by_rcode": dict(sorted(by_rcode.items())), "by_qtype": dict(sorted(by_qtype.items())),
                "names": names, "latency_us": hist.to_dict(), "malformed": counters[CTR_MALFORMED],
                "overflow": counters[CTR_NAME_OVERFLOW] + counters[CTR_COUNT_OVERFLOW], "evicted": self._evicted,
                "self": self.self_cost()}

    def families(self) -> list[Metric]:
        opts: DnsOptions = self.options  # type: ignore[assignment]
        with self.lock:
            counters = latstats.per_cpu_sums(self._counters, NR_CTR)
            by_qtype, _, responses = self._counts_by_kind()
            current = {row["qname"]: row["queries"] for row in self.read_names()}
            self._series.ttl = opts.ttl
            exported = self._series.observe(current)
            hist = latstats.read_histogram(self._hist, opts, counters[CTR_SUM_US])
            waiting = self._waiting()
        kept, omitted, _ = top_keys(exported, opts.top)
        queries = CounterMetricFamily("dns_queries", "DNS queries by qtype", labels=["qtype"])
        for qtype, n in sorted(by_qtype.items()):
            queries.add_metric([qtype], n)
        answers = CounterMetricFamily("dns_responses", "DNS responses by rcode and qtype", labels=["rcode", "qtype"])
        for (rcode, qtype), n in sorted(responses.items()):
            answers.add_metric([rcode, qtype], n)
        per_name = CounterMetricFamily("dns_name_queries", "DNS queries per qname (the top names)", labels=["qname"])
        for qname, n in sorted(kept.items()):
            per_name.add_metric([qname], n)
        return [
            queries, answers, per_name,
            family("dns_response_latency_microseconds", "Time from a DNS query to its response", hist),
            CounterMetricFamily("dns_unanswered_queries", "DNS queries without a response within timeout",
                                value=max(0, counters[CTR_QUERIES] - counters[CTR_MATCHED] - waiting)),
            CounterMetricFamily("dns_overflow_messages", "DNS messages a full table could not count per name "
                                "or per kind", value=counters[CTR_NAME_OVERFLOW] + counters[CTR_COUNT_OVERFLOW]),
            GaugeMetricFamily("pynetmon_monitor_series_omitted", "Keys left off /metrics by the top option",
                              value=omitted),
            *self.self_families(),
        ]

"""The HTTP monitor: HTTP/1.x requests and response statuses on tcx (both directions, IPv4 and IPv6),
request -> response latency per status class, and triggered mirroring: from the response whose status
is in `mirror_on`, every packet of that connection in both directions is copied (bpf_clone_redirect)
to `mirror_to` until `mirror_ttl` after the last trigger, an RST, or the last ACK after both FINs.

>>> from pynetmon import monitors
>>> with monitors.open("http", interface="eth0", mirror_to="pcap:/var/tmp/5xx.pcap") as m:
...     ...
...     m.snapshot()["responses"]          # {"200": 1000, "500": 12}
...     m.snapshot()["mirror"]             # {"triggers": 12, "connections": 12, "packets": 96, ...}

The kernel side is bpf/monitors/http.bpf.c (what is parsed where, and why); structs and counters are
declared once in bpf/monitors/http.h and decoded here from the object's BTF.
"""
from __future__ import annotations

import re
import socket
import threading
import time
from typing import Annotated, Any, Literal

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from pydantic import AfterValidator, Field, PlainValidator, field_validator, model_validator

from ..errors import ConfigError, MapKeyError
from ..link import attach_tc
from ..object import BPFObject
from . import flowkey
from .base import Monitor, MonitorOptions
from .histogram import Histogram, family
from .mirror import PCAP_PREFIX, MirrorTarget, capture_path, check_mirror_to
from .registry import register

METHODS = ("unknown", "GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH")
"""Method label by the kernel's index (http.bpf.c `method_of`); "unknown": a response whose request
was not seen (the monitor started mid-connection, or the direction is not watched)."""
STATUS_END = 600
HIST_SLOTS = 32
CLASSES = ("1xx", "2xx", "3xx", "4xx", "5xx")
COUNTERS = ("packets", "unparsed", "unknown_length", "split", "pipelined", "no_request", "requests_dropped",
            "flows_full", "triggers", "traced", "sampled", "refused", "mirror_packets", "mirror_bytes",
            "mirror_errors", "end_fin", "end_rst", "end_ttl")
"""enum http_counter of http.h, in order (checked against the object's BTF at start)."""
TRACED_MAPS = {"hash": ("hash", 0), "lru": ("lru_hash", 0), "lru_percpu": ("lru_hash", 2)}
"""traced_map option → (map type, map flags): 2 is BPF_F_NO_COMMON_LRU (an LRU list per CPU)."""
_STATUS_SPEC = re.compile(r"^(?:[1-5]xx|[1-5][0-9][0-9])$")


def _status_spec(value: Any) -> int | str:
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        # ValueError, not TypeError: pydantic reports only ValueError as a validation problem
        raise ValueError(f"{value!r} is neither a status code (100-599) nor a class ('5xx')")  # noqa: TRY004
    if isinstance(value, int):
        if not 100 <= value <= 599:
            raise ValueError(f"status {value} is outside 100-599")
        return value
    if not _STATUS_SPEC.match(value):
        raise ValueError(f"{value!r} is neither a status code ('503') nor a class ('5xx')")
    return int(value) if value.isdigit() else value


def _port(value: int) -> int:
    if not 1 <= value <= 65535:
        raise ValueError(f"port {value} is outside 1-65535")
    return value


class HttpOptions(MonitorOptions):
    """Options of the HTTP monitor (see docs/http.md)."""

    ports: list[Annotated[int, AfterValidator(_port)]] = Field(
        default_factory=lambda: [80, 8080, 8888], min_length=1, max_length=8)
    direction: Literal["ingress", "egress", "both"] = "both"
    mirror_on: list[Annotated[int | str, PlainValidator(_status_spec)]] = Field(
        default_factory=lambda: list[int | str](["5xx"]), max_length=64)
    mirror_to: str | None = None
    mirror_create: bool = False
    mirror_ttl: float = Field(30.0, gt=0, le=86400)
    max_traced: int = Field(1024, ge=1, le=1 << 20)
    traced_map: Literal["hash", "lru", "lru_percpu"] = "hash"
    max_flows: int = Field(65536, ge=16, le=1 << 22)
    sample: int = Field(0, ge=0, le=1 << 30)

    @field_validator("mirror_to")
    @classmethod
    def _mirror_to(cls, value: str | None) -> str | None:
        return check_mirror_to(value)

    @model_validator(mode="after")
    def _consistent(self) -> HttpOptions:
        if self.mirror_create and (self.mirror_to is None or self.mirror_to.startswith(PCAP_PREFIX)):
            raise ValueError("mirror_create needs mirror_to to name the interface to create")
        return self

    def status_codes(self) -> set[int]:
        """Every status that triggers mirroring."""
        codes: set[int] = set()
        for spec in self.mirror_on:
            if isinstance(spec, int):
                codes.add(spec)
            else:
                base = int(spec[0]) * 100
                codes.update(range(base, base + 100))
        return codes


def _sum(values: Any) -> int:
    return sum(values) if isinstance(values, list) else int(values)


@register
class HttpMonitor(Monitor):
    """HTTP/1.x requests, statuses, latency per class, and mirroring of the connections that fail."""

    kind = "http"
    summary = ("HTTP/1.x methods, statuses and latency on tcx (IPv4/IPv6); mirrors failing connections "
               "(bpf_clone_redirect) to an interface or a pcap file")
    Options = HttpOptions
    options: HttpOptions

    def __init__(self, interface: str | None = None, netns: str | None = None, options: Any = None):
        super().__init__(interface, netns, options)
        self.mirror: MirrorTarget | None = None
        self._sweeper: threading.Thread | None = None
        self._stopping = threading.Event()
        self._swept_ttl = 0
        self.obj: BPFObject | None = None

    # -- life ----------------------------------------------------------------------------------
    def _start(self) -> None:
        opts = self.options
        obj = self._own(BPFObject.from_package("monitors/http"))
        obj.maps["http_flows"].set_max_entries(opts.max_flows)
        traced = obj.maps["http_traced"]
        map_type, flags = TRACED_MAPS[opts.traced_map]
        traced.set_type(map_type)
        traced.set_map_flags(flags)
        traced.set_max_entries(opts.max_traced)
        if opts.mirror_to:
            self.mirror = MirrorTarget.open(opts.mirror_to, self.netns, opts.mirror_create)
        obj.set_rodata(**self._knobs())
        obj.load()
        self.obj = obj
        directions = ("ingress", "egress") if opts.direction == "both" else (opts.direction,)
        for direction in directions:
            self._keep(attach_tc(obj.programs[f"http_{direction}"], self.interface, direction, netns=self.netns))
        if self.mirror:
            self._stopping.clear()
            self._sweeper = threading.Thread(target=self._sweep_loop, name=f"http-ttl-{self.interface}",
                                             daemon=True)
            self._sweeper.start()

    def _knobs(self) -> dict[str, int | bytes]:
        """The `const volatile` knobs of http.bpf.c from the options."""
        opts = self.options
        bitmap = bytearray(STATUS_END // 8)
        for code in opts.status_codes():
            bitmap[code >> 3] |= 1 << (code & 7)
        ports = b"".join(p.to_bytes(2, "little") for p in list(opts.ports) + [0] * (8 - len(opts.ports)))
        return {"http_ports": ports, "http_nports": len(opts.ports),
                "http_mirror_ifindex": self.mirror.ifindex if self.mirror else 0, "http_sample": opts.sample,
                "http_ttl_ns": int(opts.mirror_ttl * 1e9), "http_mirror_codes": bytes(bitmap)}

    def output_files(self) -> list[tuple[str, str]]:
        spec = self.options.mirror_to
        if spec and spec.startswith(PCAP_PREFIX):
            return [("options.mirror_to", capture_path(spec[len(PCAP_PREFIX):]))]
        return []

    def _stop(self) -> None:
        self._stopping.set()
        if self._sweeper is not None:
            self._sweeper.join()
            self._sweeper = None

    def _release(self) -> None:
        try:
            super()._release()
        finally:
            if self.mirror is not None:
                self.mirror.close()  # after the links: nothing redirects to it any more
            self.obj = None

    def _sweep_loop(self) -> None:
        """End tracing of connections idle past mirror_ttl: the kernel ends them only when a packet of the
        connection comes, and a hash table full of forgotten ones would refuse new triggers."""
        period = min(1.0, self.options.mirror_ttl / 4)
        while not self._stopping.wait(period):
            self.sweep()

    def sweep(self) -> int:
        """Delete traced connections whose last trigger is older than mirror_ttl; returns how many."""
        with self.lock:
            if self.obj is None:
                return 0
            traced = self.obj.maps["http_traced"]
            ttl_ns = int(self.options.mirror_ttl * 1e9)
            now = time.monotonic_ns()  # CLOCK_MONOTONIC, bpf_ktime_get_ns()'s clock
            gone = 0
            for key, value in traced.items():
                if now - value["last_trigger_ns"] > ttl_ns:
                    try:
                        traced.delete(key)
                        gone += 1
                    except MapKeyError:
                        pass  # the kernel ended it meanwhile
            self._swept_ttl += gone
            return gone

    # -- reading -------------------------------------------------------------------------------
    def _require(self) -> BPFObject:
        if self.obj is None:
            raise ConfigError([("monitor", "the http monitor is not started")])
        return self.obj

    def counters(self) -> dict[str, int]:
        """The kernel's counters (enum http_counter), summed over CPUs."""
        values = self._require().maps["http_counters"].items()
        return {COUNTERS[k]: _sum(v) for k, v in values if k < len(COUNTERS)}

    def _per_cpu_sums(self, name: str) -> list[int]:
        return [_sum(v) for _, v in sorted(self._require().maps[name].items())]

    def responses_by_method(self) -> dict[tuple[str, str], int]:
        """{(status, method): count} of every response seen."""
        out = {}
        for i, n in enumerate(self._per_cpu_sums("http_responses")):
            if n:
                out[(str(i % STATUS_END), METHODS[i // STATUS_END])] = n
        return out

    def _latency_slots(self) -> tuple[list[list[int]], list[int]]:
        """Per class (index = status // 100): the latency slot counts and the sum of microseconds."""
        flat = self._per_cpu_sums("http_latency")
        sums = [sum(x["sum_us"] for x in v) if isinstance(v, list) else v["sum_us"]
                for _, v in sorted(self._require().maps["http_latency_sum"].items())]
        return [flat[i * HIST_SLOTS:(i + 1) * HIST_SLOTS] for i in range(len(sums))], sums

    def latency(self) -> dict[str, Histogram]:
        """Request → response latency (microseconds) per status class."""
        slots, sums = self._latency_slots()
        return {cls: Histogram.from_slots(slots[i + 1], sum=sums[i + 1]) for i, cls in enumerate(CLASSES)}

    def traced(self) -> list[dict[str, Any]]:
        """The connections being mirrored now."""
        if self.obj is None:
            return []
        out = []
        for key, value in self.obj.maps["http_traced"].items():
            if isinstance(value, list):  # never per-CPU, but be exact if it were
                value = value[0]
            out.append({"src": flowkey.address(key["saddr"], key["family"]),
                        "dst": flowkey.address(key["daddr"], key["family"]),
                        "sport": socket.ntohs(key["sport"]), "dport": socket.ntohs(key["dport"]),
                        "status": value["status"],
                        "since_ns": value["since_ns"], "mirrored_packets": value["packets"]})
        return sorted(out, key=lambda t: t["since_ns"])

    def snapshot(self) -> dict[str, Any]:
        with self.lock:
            c = self.counters()
            requests = {METHODS[i]: n for i, n in enumerate(self._per_cpu_sums("http_requests")) if n}
            by_pair = self.responses_by_method()
            responses: dict[str, int] = {}
            for (status, _), n in sorted(by_pair.items()):
                responses[status] = responses.get(status, 0) + n
            slots, sums = self._latency_slots()
            hists = {cls: Histogram.from_slots(slots[i + 1], sum=sums[i + 1]) for i, cls in enumerate(CLASSES)}
            total = [sum(column) for column in zip(*slots)]
            by_class = {}
            for cls, h in hists.items():
                count = sum(n for s, n in responses.items() if s[0] == cls[0])
                if count or h.count:
                    by_class[cls] = {"count": count, "latency_us": {"p50": h.quantile(0.5), "p99": h.quantile(0.99)},
                                     "measured": h.count}
            traced = self.traced()
            return {
                "requests": requests,
                "responses": responses,
                "latency_us": Histogram.from_slots(total, sum=sum(sums)).to_dict(),
                "by_class": by_class,
                "mirror": {"triggers": c["triggers"], "connections": c["traced"], "packets": c["mirror_packets"],
                           "bytes": c["mirror_bytes"], "sampled": c["sampled"], "refused": c["refused"],
                           "errors": c["mirror_errors"], "active": len(traced),
                           "ended": {"fin": c["end_fin"], "rst": c["end_rst"], "ttl": c["end_ttl"] + self._swept_ttl},
                           "target": self.mirror.describe() if self.mirror else None,
                           "pcap": self.mirror.stats() if self.mirror else None},
                "traced": traced,
                "unparsed": c["unparsed"],
                "parse": {k: c[k] for k in ("packets", "split", "pipelined", "unknown_length", "no_request",
                                            "requests_dropped", "flows_full")},
                "self": self.self_cost(),
            }

    def families(self) -> list[Metric]:
        with self.lock:
            c = self.counters()
            req = CounterMetricFamily("http_requests", "HTTP requests seen, by method", labels=["method"])
            for i, n in enumerate(self._per_cpu_sums("http_requests")):
                if n:
                    req.add_metric([METHODS[i]], n)
            resp = CounterMetricFamily("http_responses", "HTTP responses seen, by status and request method "
                                       "(Hubble's http_responses_total)", labels=["status", "method"])
            for (status, method), n in sorted(self.responses_by_method().items()):
                resp.add_metric([status, method], n)
            dur = family("http_request_duration_seconds", "Request to response latency, by status class",
                         labels=["status_class"])
            for cls, h in self.latency().items():
                if h.count:
                    Histogram([b / 1e6 for b in h.bounds], h.counts, h.sum / 1e6).add_to(dur, [cls])
            out: list[Metric] = [req, resp, dur]
            for name, key, doc in (
                    ("http_mirror_triggers", "triggers", "responses whose status is in mirror_on"),
                    ("http_mirror_connections", "traced", "connections that started being mirrored"),
                    ("http_mirror_packets", "mirror_packets", "packets copied to the mirror"),
                    ("http_mirror_bytes", "mirror_bytes", "bytes copied to the mirror"),
                    ("http_mirror_refused", "refused", "triggers refused because max_traced were traced"),
                    ("http_unparsed", "unparsed", "data where a response had to start that was not one")):
                out.append(CounterMetricFamily(name, doc, value=c[key]))
            out.append(GaugeMetricFamily("http_traced_connections", "connections being mirrored now",
                                         value=len(self.traced())))
            out.extend(self.self_families())
            return out




"""lb: an L4 load balancer on tc with health checks. Virtual services `VIP:port/proto` spread new
connections over their healthy backends by Maglev hashing (monitors/maglev.py); a connection table (LRU)
keeps every connection on its backend while backends come, go, fail or change weight. Kernel side:
bpf/monitors/lb.bpf.c; health checks: monitors/health.py.

The monitor's `interface` is the balancer's client-facing interface (on a router, or a host in the
path): ingress rewrites the destination of packets to a VIP to the chosen backend before the routing
decision, egress rewrites replies back to the VIP. The VIP needs no address anywhere; clients must route
it through the balancer, backends must route clients back through it (their default route).

>>> services = [{"vip": "192.0.2.80", "port": 80, "backends": [
...     {"address": "10.1.0.2", "port": 8080}, {"address": "10.2.0.2", "port": 8080, "weight": 2}],
...     "health": {"type": "http", "path": "/health", "interval": 1, "fall": 2}}]
>>> with monitors.open("lb", interface="eth0", services=services) as m:
...     m.update(services=[...])          # add, remove, re-weight: existing connections stay
...     m.snapshot()["services"][0]["backends"]
"""
from __future__ import annotations

import ipaddress
import logging
import os
import queue
import re
import socket
import struct
import time
from collections.abc import Hashable, Iterator, Mapping
from typing import Annotated, Any, Literal

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from pydantic import AfterValidator, Field

from ..errors import ConfigError
from ..link import attach_tc
from ..maps import Map
from ..object import BPFObject
from .base import CliFlag, Monitor, MonitorOptions
from .health import Check, HealthChecker
from .maglev import NO_BACKEND, is_prime, maglev_table
from .registry import register

log = logging.getLogger(__name__)

_VIP = struct.Struct("=4sHBx")  # struct lb_vip
_SERVICE = struct.Struct("=II")  # struct lb_service: ring_base flags
_BACKEND = struct.Struct("=4sHxx")  # struct lb_backend
_CONN_KEY = struct.Struct("=4s4sHHB3x")  # struct lb_conn_key
_CONN = struct.Struct("=4sHxxII")  # struct lb_conn: backend_addr port id syn_seq
_U32 = struct.Struct("=I")
F_STICKY, F_EMPTY = 1, 2  # LB_F_*
COUNTERS = ("forwarded", "replies", "new_connections", "no_backend", "other", "rewrite_failed")  # LB_CTR_*
PROTOS = {"tcp": socket.IPPROTO_TCP, "udp": socket.IPPROTO_UDP}
_PATH = re.compile(r"/[\x21-\x7e]{0,1023}")


def _ipv4(text: str) -> str:
    try:
        addr = ipaddress.IPv4Address(text)
    except ValueError:
        raise ValueError(f"not an IPv4 address: {text!r} (the lb monitor balances IPv4)") from None
    if addr.is_multicast or addr.is_unspecified or addr == ipaddress.IPv4Address("255.255.255.255"):
        raise ValueError(f"{text} is not a unicast address")
    return str(addr)


def _http_path(text: str) -> str:
    if not _PATH.fullmatch(text):
        raise ValueError("must start with / and hold up to 1,024 printable ASCII characters without spaces")
    return text


IPv4 = Annotated[str, AfterValidator(_ipv4)]
HttpPath = Annotated[str, AfterValidator(_http_path)]


class HealthOptions(MonitorOptions):
    type: Literal["tcp", "http", "icmp", "none"] = Field(
        "tcp", description="tcp: connect; http: GET `path`, expect `expect_status`; icmp: echo; none: always up")
    interval: float = Field(2.0, ge=0.05, le=3600, description="seconds between two checks of a backend")
    timeout: float = Field(1.0, gt=0, le=60, description="seconds a check may take (at most `interval`)")
    rise: int = Field(2, ge=1, le=100, description="consecutive successes that bring a backend back")
    fall: int = Field(3, ge=1, le=100, description="consecutive failures that take a backend out")
    port: int | None = Field(None, ge=1, le=65535, description="port to check (default: the backend's)")
    path: HttpPath = Field("/", description="HTTP path of the http check")
    expect_status: int = Field(200, ge=100, le=599, description="HTTP status the http check expects")
    score_window: int = Field(0, ge=0, le=100, description="0: off; N: while a backend is up, its weight is "
                              "scaled by the share of its last N checks that passed (a flapping backend gets "
                              "fewer new connections)")


class BackendOptions(MonitorOptions):
    address: IPv4 = Field(description="backend IPv4 address")
    port: int = Field(ge=1, le=65535, description="backend port")
    weight: int = Field(1, ge=0, le=1000, description="share of new connections (0: drain, no new ones)")


class ServiceOptions(MonitorOptions):
    vip: IPv4 = Field(description="virtual IPv4 address clients connect to")
    port: int = Field(ge=1, le=65535, description="virtual port")
    proto: Literal["tcp", "udp"] = "tcp"
    backends: list[BackendOptions] = Field([], max_length=256)
    sticky: bool = Field(False, description="client-IP affinity: every connection of a client to one backend")
    on_failure: Literal["keep", "reset"] = Field(
        "keep", description="connections to a backend that fails its checks: keep them, or reset them (their "
        "next packet goes to a healthy backend, which answers TCP with a reset)")
    health: HealthOptions = Field(default_factory=HealthOptions)


class LbOptions(MonitorOptions):
    services: list[ServiceOptions] = Field([], max_length=256, description="virtual services (none: every packet "
                                           "passes untouched until a PUT adds some)")
    table_size: int = Field(4099, ge=7, le=65537, description="slots of each service's Maglev table (a prime; "
                            "at least 100 per backend keeps shares within about 1%)")
    max_services: int = Field(16, ge=1, le=256, description="services the kernel tables hold")
    max_backends: int = Field(1024, ge=2, le=65536, description="service-backend pairs the kernel tables hold")
    max_connections: int = Field(65536, ge=1024, le=1 << 22, description="connections the LRU table holds")


BackendKey = tuple[str, int, str, str, int]  # vip, port, proto, backend address, backend port


def _vip_key(s: ServiceOptions) -> tuple[str, int, str]:
    return (s.vip, s.port, s.proto)


def _backend_key(s: ServiceOptions, b: BackendOptions) -> BackendKey:
    return (s.vip, s.port, s.proto, b.address, b.port)


def _check(s: ServiceOptions, b: BackendOptions) -> Check:
    h = s.health
    return Check(h.type, b.address, h.port or b.port, h.interval, h.timeout, h.rise, h.fall, h.path, h.expect_status,
                 h.score_window)


def _endpoint(text: str, flag: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit():
        raise ConfigError([(flag, f"{text!r} is not ADDRESS:PORT")])
    return host, int(port)


def _vip_flag(options: dict[str, Any], values: list[str]) -> None:
    """`--vip VIP:PORT[/PROTO] IP:PORT[*WEIGHT],...` → one more entry of `services` (health: tcp)."""
    vip, backends = values
    flag = f"--vip {vip} {backends}"
    where, _, proto = vip.partition("/")
    address, port = _endpoint(where, flag)
    service: dict[str, Any] = {"vip": address, "port": port, "backends": []}
    if proto:
        service["proto"] = proto
    for item in backends.split(","):
        endpoint, _, weight = item.partition("*")
        baddr, bport = _endpoint(endpoint, flag)
        if weight and not weight.isdigit():
            raise ConfigError([(flag, f"weight {weight!r} is not a whole number")])
        service["backends"].append({"address": baddr, "port": bport, **({"weight": int(weight)} if weight else {})})
    services = options.setdefault("services", [])
    if not isinstance(services, list):
        raise ConfigError([("--set services", "must be a list when --vip is given too")])
    services.append(service)


@register
class LbMonitor(Monitor):
    kind = "lb"
    summary = "L4 load balancer on tc: Maglev over healthy backends, connection table, NAT back to the VIP"
    Options = LbOptions
    live_options = frozenset({"services"})
    cli_flags = (CliFlag("--vip", ("VIP:PORT[/PROTO]", "IP:PORT[*WEIGHT],..."),
                         "balance VIP:PORT over the backends (repeatable; health checks: tcp)", _vip_flag),)

    @classmethod
    def parse_options(cls, options: MonitorOptions | Mapping[str, Any] | None) -> MonitorOptions:
        """Validated options, with what one field alone cannot tell: a service twice, a backend twice in a
        service, more services than `max_services`, a table size that is not a prime, a timeout above the
        interval — each named by its JSON path."""
        opts: LbOptions = super().parse_options(options)  # type: ignore[assignment]
        problems = []
        if not is_prime(opts.table_size):
            problems.append(("options.table_size", f"must be a prime (Maglev), not {opts.table_size}"))
        if len(opts.services) > opts.max_services:
            problems.append(("options.services", f"{len(opts.services)} services, max_services is {opts.max_services}"))
        pairs = sum(len(s.backends) for s in opts.services)
        if pairs > opts.max_backends:
            problems.append(("options.services", f"{pairs} backends in all, max_backends is {opts.max_backends}"))
        seen: dict[tuple[str, int, str], int] = {}
        for i, s in enumerate(opts.services):
            if _vip_key(s) in seen:
                problems.append((f"options.services[{i}]", f"{s.vip}:{s.port}/{s.proto} is also services[{seen[_vip_key(s)]}]"))
            seen.setdefault(_vip_key(s), i)
            if s.health.timeout > s.health.interval:
                problems.append((f"options.services[{i}].health.timeout", "must not exceed the interval"))
            backends: dict[tuple[str, int], int] = {}
            for j, b in enumerate(s.backends):
                if (b.address, b.port) in backends:
                    problems.append((f"options.services[{i}].backends[{j}]",
                                     f"{b.address}:{b.port} is also backends[{backends[(b.address, b.port)]}]"))
                backends.setdefault((b.address, b.port), j)
                if b.address == s.vip:
                    problems.append((f"options.services[{i}].backends[{j}].address", "must not be the VIP"))
        if problems:
            raise ConfigError(problems)
        return opts

    # -- life ----------------------------------------------------------------------------------
    def _start(self) -> None:
        opts: LbOptions = self.options  # type: ignore[assignment]
        obj = self._own(BPFObject.from_package("monitors/lb"))
        # twice: an update adds the new services before it deletes the ones they replace
        obj.maps["lb_services"].set_max_entries(2 * opts.max_services)
        obj.maps["lb_ring"].set_max_entries(opts.max_services * 2 * opts.table_size)
        obj.maps["lb_backends"].set_max_entries(opts.max_backends)
        obj.maps["lb_stats"].set_max_entries(opts.max_backends)
        obj.maps["lb_conns"].set_max_entries(opts.max_connections)
        obj.maps["lb_reverse"].set_max_entries(opts.max_connections)
        obj.set_rodata(lb_table_size=opts.table_size, lb_seed=int.from_bytes(os.urandom(8), "little"))
        obj.load()
        self._services: Map = obj.maps["lb_services"]
        self._ring: Map = obj.maps["lb_ring"]
        self._backends: Map = obj.maps["lb_backends"]
        self._stats: Map = obj.maps["lb_stats"]
        self._conns: Map = obj.maps["lb_conns"]
        self._reverse: Map = obj.maps["lb_reverse"]
        self._counters: Map = obj.maps["lb_counters"]
        self._ids: dict[BackendKey, int] = {}  # service-backend pair → backend id (index of lb_backends)
        self._free_ids: list[int] = []  # ids given back by removed pairs, reused oldest first
        self._next_id = 0
        self._slots: dict[tuple[str, int, str], int] = {}  # service → its slot (pair of tables) in lb_ring
        self._halves: dict[int, int] = {}  # slot → the half last switched to (a reused slot's user reads it)
        self._transitions = {"up": 0, "down": 0, "reset_connections": 0}
        self._events: queue.Queue[dict[str, Any]] = queue.Queue(maxsize=1024)
        self._health = HealthChecker(self.netns, self._health_changed, self._score_changed)
        self._health.check_now(self._health.set_targets(self._checks(opts)))
        self._apply(opts, None)
        # replies first: from the first rewritten packet on, its answers are rewritten back
        self._keep(attach_tc(obj.programs["lb_egress"], self.interface or "", "egress", netns=self.netns))
        self._keep(attach_tc(obj.programs["lb_ingress"], self.interface or "", "ingress", netns=self.netns))
        self._health.start()

    def _stop(self) -> None:
        health = getattr(self, "_health", None)
        if health is not None:
            health.close()

    @staticmethod
    def _checks(opts: LbOptions) -> dict[Hashable, Check]:
        return {_backend_key(s, b): _check(s, b) for s in opts.services for b in s.backends}

    # -- tables --------------------------------------------------------------------------------
    def _apply(self, new: LbOptions, old: LbOptions | None) -> None:
        """Make the kernel tables say `new`, all or nothing. Backend ids and table slots are assigned
        first (nothing written yet), then backends are written under ids no table uses yet, then each
        service's table goes into its unused half and the service entry is switched to it; services gone
        are deleted last. On a failure the switched services are switched back (their old halves were not
        touched) and the new ids given back."""
        keys = [_backend_key(s, b) for s in new.services for b in s.backends]
        fresh = [k for k in keys if k not in self._ids]
        free = list(self._free_ids) + list(range(self._next_id, new.max_backends))
        if len(fresh) > len(free):  # parse_options bounds the pairs; ids of removed pairs are reused
            raise ConfigError([("options.services", f"no room for {len(fresh)} new backends (max_backends)")])
        new_ids = dict(zip(fresh, free, strict=False))
        vips = [_vip_key(s) for s in new.services]
        # a new service takes a slot no service uses, before the slots of services this update removes
        # (those are read by packets until their entry is deleted, at the very end)
        kept = {self._slots[v] for v in vips if v in self._slots}
        leaving = set(self._slots.values()) - kept
        open_slots = [i for i in range(new.max_services) if i not in kept and i not in leaving] + sorted(leaving)
        new_slots = {v: open_slots.pop(0) for v in vips if v not in self._slots}
        ids = {**self._ids, **new_ids}
        slots = {**self._slots, **new_slots}
        switched: list[tuple[bytes, bytes | None]] = []
        halves = dict(self._halves)
        try:
            for key, i in new_ids.items():
                self._backends.update(_U32.pack(i), _BACKEND.pack(socket.inet_aton(key[3]), socket.htons(key[4])))
                self._stats.update(_U32.pack(i), bytes(self._stats._value_bytes))  # a reused id starts at 0
            for s in new.services:
                vk = _vip_key(s)
                raw = _VIP.pack(socket.inet_aton(s.vip), socket.htons(s.port), PROTOS[s.proto])
                switched.append((raw, self._services.get(raw)))
                self._write_service(s, slots[vk], ids)
            gone = [] if old is None else [s for s in old.services if _vip_key(s) not in set(vips)]
            for s in gone:
                raw = _VIP.pack(socket.inet_aton(s.vip), socket.htons(s.port), PROTOS[s.proto])
                switched.append((raw, self._services.get(raw)))
                self._services.delete(raw)
        except BaseException:
            for raw, before in reversed(switched):
                try:
                    if before is None:
                        self._services.delete(raw)
                    else:
                        self._services.update(raw, before)
                except (KeyError, OSError):
                    pass
            self._halves = halves  # the halves switched back to are the ones in use again
            raise
        # committed: forget the pairs and services that are gone (their connections keep their backends)
        live = set(keys)
        for key in [k for k in ids if k not in live]:
            self._free_ids.append(ids.pop(key))
        self._free_ids = [i for i in self._free_ids if i not in new_ids.values()]
        self._next_id = max([self._next_id, *(i + 1 for i in new_ids.values())])
        self._ids = ids
        self._slots = {v: slots[v] for v in vips}

    def _write_service(self, s: ServiceOptions, slot: int, ids: dict[BackendKey, int]) -> None:
        """Write the service's Maglev table over its healthy backends into the half not in use, then switch."""
        opts: LbOptions = self.options  # type: ignore[assignment]
        weights = [(f"{b.address}:{b.port}", self._effective_weight(s, b)) for b in s.backends]
        table = maglev_table(weights, opts.table_size)
        half = 1 - self._halves.get(slot, 1)
        base = (slot * 2 + half) * opts.table_size
        flags = (F_STICKY if s.sticky else 0)
        if table[0] == NO_BACKEND:
            flags |= F_EMPTY
        else:
            bids = [ids[_backend_key(s, b)] for b in s.backends]
            self._ring._update_batch_raw(b"".join(_U32.pack(base + i) for i in range(opts.table_size)),
                                         b"".join(_U32.pack(bids[t]) for t in table), opts.table_size)
        raw = _VIP.pack(socket.inet_aton(s.vip), socket.htons(s.port), PROTOS[s.proto])
        self._services.update(raw, _SERVICE.pack(base, flags))
        self._halves[slot] = half

    def _effective_weight(self, s: ServiceOptions, b: BackendOptions) -> int:
        """The backend's weight in the table: 0 while down; in hundredths, scaled by the health score."""
        key = _backend_key(s, b)
        if not self._health.healthy(key):
            return 0
        return round(b.weight * 100 * self._health.score(key))

    def _lock_for_health(self) -> bool:
        """Take the monitor's lock for a health callback, unless the monitor is closing: close() holds the
        lock while it waits for the checker, so a callback must not wait for it forever."""
        while not self._health.stopping:
            if self.lock.acquire(timeout=0.1):
                return True
        return False

    def _score_changed(self, key: Hashable) -> None:
        if not self._lock_for_health():
            return
        try:
            if not hasattr(self, "_ids") or key not in self._ids:
                return
            opts: LbOptions = self.options  # type: ignore[assignment]
            service = next((s for s in opts.services if _vip_key(s) == key[:3]), None)
            if service is not None:
                self._write_service(service, self._slots[_vip_key(service)], self._ids)
        finally:
            self.lock.release()

    def _health_changed(self, key: Hashable, healthy: bool) -> None:
        if not self._lock_for_health():
            return
        try:
            if not hasattr(self, "_ids"):  # a change before _start finished its tables
                return
            opts: LbOptions = self.options  # type: ignore[assignment]
            bkey: BackendKey = key  # type: ignore[assignment]
            vip, port, proto, address, bport = bkey
            service = next((s for s in opts.services if _vip_key(s) == (vip, port, proto)), None)
            if service is None or bkey not in self._ids:
                return
            self._write_service(service, self._slots[_vip_key(service)], self._ids)
            self._transitions["up" if healthy else "down"] += 1
            reset = 0
            if not healthy and service.on_failure == "reset":
                reset = self._reset_connections(self._ids[bkey])
                self._transitions["reset_connections"] += reset
        finally:
            self.lock.release()
        event = {"event": "up" if healthy else "down", "service": f"{vip}:{port}/{proto}",
                 "backend": f"{address}:{bport}", "time_ns": time.time_ns()}
        if not healthy:
            event["reset_connections"] = reset
        try:
            self._events.put_nowait(event)
        except queue.Full:  # nobody reads events: the oldest goes
            self._events.get_nowait()
            self._events.put_nowait(event)

    def _reset_connections(self, backend_id: int) -> int:
        """Forget the connections to `backend_id`: their next packet is balanced again, to a healthy
        backend, which answers a TCP segment of a connection it does not know with a reset."""
        keys, values, n = self._conns.read_raw()
        removed = 0
        for i in range(n):
            key = bytes(keys[i * _CONN_KEY.size:(i + 1) * _CONN_KEY.size])
            baddr, bport, bid, _ = _CONN.unpack_from(values, i * self._conns.value_size)
            if bid != backend_id:
                continue
            saddr, _, sport, _, proto = _CONN_KEY.unpack(key)
            for m, k in ((self._conns, key), (self._reverse, _CONN_KEY.pack(baddr, saddr, bport, sport, proto))):
                try:
                    m.delete(k)
                except KeyError:
                    pass
            removed += 1
        return removed

    def update(self, **options: Any) -> None:
        """Replace `services` (PUT /monitors/NAME): backends added, removed or re-weighted, services added
        or removed, while every existing connection keeps its backend. New backends are checked once
        before they get traffic. All or nothing: when a table cannot be written, the tables in force
        before stay in force and so do the options."""
        old: LbOptions = self.options  # type: ignore[assignment]
        with self.lock:
            super().update(**options)  # validates; refuses fixed options
            new: LbOptions = self.options  # type: ignore[assignment]
            before = dict(self._health.targets)
            try:
                self._health.check_now(self._health.set_targets(self._checks(new)))
                self._apply(new, old)
            except BaseException:
                self.options = old
                self._health.targets = before
                raise
        log.info("lb on %s: %d services, %d backends", self.interface, len(new.services), len(self._ids))

    # -- reading -------------------------------------------------------------------------------
    def _backend_stats(self, backend_id: int) -> tuple[int, int, int]:
        per_cpu = self._stats.lookup(_U32.pack(backend_id))
        return (sum(c["connections"] for c in per_cpu), sum(c["packets"] for c in per_cpu),
                sum(c["bytes"] for c in per_cpu))

    def events(self, timeout: float | None = None) -> Iterator[dict[str, Any]]:
        """Health changes as they happen: `{"event": "down"|"up", "service", "backend", "time_ns"}` (a down
        event also says how many connections it reset). Ends after `timeout` seconds without one."""
        while self._started:
            try:
                yield self._events.get(timeout=0.1 if timeout is None else timeout)
            except queue.Empty:
                if timeout is not None:
                    return

    def snapshot(self) -> dict[str, Any]:
        opts: LbOptions = self.options  # type: ignore[assignment]
        with self.lock:
            counters = [sum(self._counters.lookup(_U32.pack(i))) for i in range(len(COUNTERS))]
            services = []
            for s in opts.services:
                backends: list[dict[str, Any]] = []
                for b in s.backends:
                    key = _backend_key(s, b)
                    conns, packets, nbytes = self._backend_stats(self._ids[key])
                    state = self._health.targets.get(key)
                    backends.append({
                        "address": b.address, "port": b.port, "healthy": self._health.healthy(key),
                        "weight": b.weight, "score": self._health.score(key), "connections": conns, "packets": packets, "bytes": nbytes,
                        "checks": {"ok": state.ok if state else 0, "failed": state.failed if state else 0,
                                   "last_error": state.last_error if state else None}})
                services.append({"vip": s.vip, "port": s.port, "proto": s.proto, "sticky": s.sticky,
                                 "healthy_backends": sum(b["healthy"] and b["weight"] > 0 for b in backends),
                                 "backends": backends})
            transitions = dict(self._transitions)
        return {"services": services, "packets": dict(zip(COUNTERS, counters, strict=True)),
                "health_changes": transitions, "self": self.self_cost()}

    def families(self) -> list[Metric]:
        snap = self.snapshot()
        labels = ["service", "backend"]
        up = GaugeMetricFamily("lb_backend_up", "1 while the backend passes its health checks", labels=labels)
        weight = GaugeMetricFamily("lb_backend_weight", "Configured weight of the backend", labels=labels)
        conns = CounterMetricFamily("lb_backend_connections", "New connections sent to the backend", labels=labels)
        packets = CounterMetricFamily("lb_backend_packets", "Packets to and from the backend", labels=labels)
        nbytes = CounterMetricFamily("lb_backend_bytes", "Bytes to and from the backend", labels=labels)
        checks = CounterMetricFamily("lb_health_checks", "Health checks, by result", labels=[*labels, "result"])
        for s in snap["services"]:
            service = f"{s['vip']}:{s['port']}/{s['proto']}"
            for b in s["backends"]:
                lv = [service, f"{b['address']}:{b['port']}"]
                up.add_metric(lv, int(b["healthy"]))
                weight.add_metric(lv, b["weight"])
                conns.add_metric(lv, b["connections"])
                packets.add_metric(lv, b["packets"])
                nbytes.add_metric(lv, b["bytes"])
                checks.add_metric([*lv, "ok"], b["checks"]["ok"])
                checks.add_metric([*lv, "failed"], b["checks"]["failed"])
        actions = CounterMetricFamily("lb_packets", "Packets seen by the balancer, by what it did", labels=["action"])
        for action, n in snap["packets"].items():
            actions.add_metric([action], n)
        changes = CounterMetricFamily("lb_health_changes", "Backends going up or down", labels=["change"])
        changes.add_metric(["up"], snap["health_changes"]["up"])
        changes.add_metric(["down"], snap["health_changes"]["down"])
        return [up, weight, conns, packets, nbytes, checks, actions, changes, *self.self_families(snap["self"])]

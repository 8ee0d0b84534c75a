"""qos: classify packets into QoS classes at tcx and shape them with HTB (`mode="shape"`, egress) or police
them with token buckets in eBPF (`mode="police"`, egress or ingress); a class can also rewrite the DSCP
(EF for VoIP, AF31...) and give each of its flows a bucket of its own. Kernel side: bpf/monitors/qos.bpf.c;
the HTB tree: pynetmon/monitors/htb.py.

Classes match on protocol, port ranges, address prefixes and DSCP; the first class with a match entry
that holds takes the packet, the `default` class the rest. Per-address limits (the article's
`--rate-limit IP MBPS`) and a per-flow limit (`flow_rate`) are classes too. Changing the classes
(`m.update(classes=[...])`, REST PUT) is all or nothing: the new rule set is written beside the one in
force and switched in one map update.

>>> with monitors.open("qos", interface="eth0", classes=[
...         {"name": "voip", "match": [{"protocol": "udp", "ports": ["10000-20000"]}], "rate": 20_000_000,
...          "priority": 1, "mark_dscp": "EF"},
...         {"name": "web", "match": [{"protocol": "tcp", "ports": [80, 443]}], "rate": 50_000_000}]) as m:
...     m.snapshot()["classes"][0]
{'name': 'voip', 'rate_bps': 20000000, 'packets': 0, 'bytes': 0, 'dropped': 0, 'measured_bps': 0.0, ...}
"""
from __future__ import annotations

import ipaddress
import logging
import re
import struct
import time
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from pydantic import AfterValidator, BeforeValidator, Field

from ..btf_codec import per_cpu_stride
from ..errors import ConfigError, Error
from ..link import attach_tc
from ..maps import Map
from ..object import BPFObject
from .base import CliFlag, Monitor, MonitorOptions
from .ddos import Cidr, parse_cidr
from .htb import FALLBACK_LINK_RATE, HtbTree, IfbDevice, burst_bytes, classid, link_speed_bps
from .registry import register

log = logging.getLogger(__name__)

NANO = 1_000_000_000
MAX_CLASSES = 64  # QOS_MAX_CLASSES: slots, the default's included
MAX_RULES = 128  # QOS_MAX_RULES
MAX_RANGES = 4  # QOS_MAX_RANGES
MAX_PREFIXES = 4  # QOS_MAX_PREFIXES
DEFAULT_SLOT = 0
LEAF_MINOR = 0x10  # HTB leaf of slot s: 7051:(0x10 + s); the default class is 7051:10
# At most 31 named classes: the classes of an update and those it replaces then always find free slots
# (31 + 31 + default < 64), so no slot is reused while a packet may still be classified into it.
MAX_NAMED = 31

_RULE = struct.Struct("=IBBBBBBB5xQ" + "HH" * (3 * MAX_RANGES) + "QQQQ" * (3 * MAX_PREFIXES))
_CLASS = struct.Struct("=QQQQQQIBBH")
_SET_HEAD = struct.Struct("=II")
_STATS = struct.Struct("=QQQQQ")  # struct qos_stats
CTR_NON_IP, CTR_FLOW_FULL, CTR_MARK_FAILED = range(3)
PROTOCOLS = {"tcp": 6, "udp": 17, "icmp": 1, "icmpv6": 58}
# DSCP names (RFC 2474 class selectors, RFC 2597 AFxy, RFC 3246 EF, RFC 5865 VA, RFC 8622 LE)
DSCP_NAMES = {"DF": 0, "LE": 1, "EF": 46, "VA": 44, **{f"CS{i}": 8 * i for i in range(8)},
              **{f"AF{x}{y}": 8 * x + 2 * y for x in range(1, 5) for y in range(1, 4)}}
_V4_MAPPED = bytes(10) + b"\xff\xff"


def dscp_value(value: int | str) -> int:
    """A DSCP as a number 0-63 or a name (EF, AF31, CS6, LE...); ValueError naming it otherwise."""
    if isinstance(value, int):
        if 0 <= value <= 63:
            return value
        raise ValueError(f"a DSCP is 0-63, not {value}")
    found = DSCP_NAMES.get(value.upper()) if isinstance(value, str) else None
    if found is None:
        raise ValueError(f"not a DSCP: {value!r} (0-63 or one of {', '.join(DSCP_NAMES)})")
    return found


def port_range(value: int | str) -> tuple[int, int]:
    """80 → (80, 80); "10000-20000" → (10000, 20000); ValueError naming a bad one."""
    if isinstance(value, int):
        lo = hi = value
    else:
        m = re.fullmatch(r"\s*(\d{1,5})\s*(?:-\s*(\d{1,5})\s*)?", str(value))
        if not m:
            raise ValueError(f"not a port or port range: {value!r} (80 or \"8000-8100\")")
        lo, hi = int(m[1]), int(m[2] or m[1])
    if not 0 <= lo <= hi <= 65535:
        raise ValueError(f"not a port range within 0-65535 with low <= high: {value!r}")
    return lo, hi


def _check_ports(value: int | str) -> int | str:
    port_range(value)
    return value


def _check_dscp(value: int | str) -> int | str:
    dscp_value(value)
    return value


def _check_protocol(value: int | str | None) -> int | str | None:
    if isinstance(value, str) and value.lower() not in PROTOCOLS:
        raise ValueError(f"not a protocol: {value!r} ({', '.join(PROTOCOLS)} or a number 0-255)")
    return value


Ports = Annotated[int | str, AfterValidator(_check_ports)]
Dscp = Annotated[int | str, AfterValidator(_check_dscp)]
ClassName = Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.:/-]{0,47}$")]
Bits = Annotated[int, Field(ge=8_000, le=1 << 40)]  # 8 kbit/s .. 1.1 Tbit/s
Bytes = Annotated[int, Field(ge=1_514, le=1 << 33)]


class Match(MonitorOptions):
    """One match entry: every field given must hold; an empty entry `{}` matches every packet."""

    protocol: Annotated[Literal["tcp", "udp", "icmp", "icmpv6"] | Annotated[int, Field(ge=1, le=255)] | None,
                        BeforeValidator(_check_protocol)] = Field(None, description="IP protocol (name or number)")
    ports: list[Ports] = Field([], max_length=MAX_RANGES, description="source or destination port in one of these (80, \"8000-8100\"); TCP/UDP only")
    sports: list[Ports] = Field([], max_length=MAX_RANGES, description="source port in one of these")
    dports: list[Ports] = Field([], max_length=MAX_RANGES, description="destination port in one of these")
    addresses: list[Cidr] = Field([], max_length=MAX_PREFIXES, description="source or destination address in one of these CIDRs")
    src: list[Cidr] = Field([], max_length=MAX_PREFIXES, description="source address in one of these CIDRs")
    dst: list[Cidr] = Field([], max_length=MAX_PREFIXES, description="destination address in one of these CIDRs")
    dscp: list[Dscp] = Field([], max_length=64, description="the packet's DSCP (before any marking) is one of these")


class ClassSettings(MonitorOptions):
    """What a class does (the default class has only these)."""

    rate: Bits | None = Field(None, description="bits/s: shape: the guaranteed rate; police: the bucket's rate "
                              "(null: unlimited)")
    ceil: Bits | None = Field(None, description="bits/s, shape only: what the class may borrow up to (default: rate)")
    burst: Bytes | None = Field(None, description="bytes: the HTB burst (default: 10 ms of rate) or the police "
                                "bucket (default: 300 ms of rate); at least 128 KiB by default")
    priority: int = Field(4, ge=0, le=7, description="shape only: HTB priority, 0 first")
    flow_rate: Bits | None = Field(None, description="bits/s: every flow of the class its own bucket (dropping "
                                   "above it); null: none")
    flow_burst: Bytes | None = Field(None, description="bytes: the flow bucket (default: 300 ms of flow_rate, "
                                     "at least 128 KiB)")
    mark_dscp: Dscp | None = Field(None, description="rewrite the DSCP of the class's packets (46, \"EF\", \"AF31\")")


class QosClass(ClassSettings):
    name: ClassName = Field(description="unique; the metric label")
    match: list[Match] = Field(min_length=1, max_length=16, description="match entries: any one that holds")


class QosOptions(MonitorOptions):
    mode: Literal["shape", "police"] = Field("shape", description="shape: HTB classes (at ingress on an ifb "
                                             "device); police: eBPF token buckets that drop (any qdisc)")
    direction: Literal["egress", "ingress"] = Field("egress", description="what to shape or police: what leaves "
                                                    "or what arrives")
    classes: list[QosClass] = Field([], max_length=MAX_NAMED, description="first match wins (live)")
    default: ClassSettings = Field(ClassSettings(), description="the class of everything else (live)")
    link_rate: Bits | None = Field(None, description="shape: the HTB root's rate in bits/s, which the classes "
                                   "share and unlimited classes get (null: the interface's speed as its driver "
                                   "reports it, else 10 Gbit/s)")
    max_flows: int = Field(65_536, ge=16, le=1 << 20, description="flows the per-flow bucket table holds (LRU)")


def _rate_limit(options: dict[str, Any], values: list[str]) -> None:
    """`--rate-limit IP MBPS` (the article's controller flag) → a class limiting IP (either direction)
    to MBPS Mbit/s, ahead of the classes given (first match wins)."""
    address, text = values
    where = f"--rate-limit {address} {text}"
    try:
        mbps = float(text)
    except ValueError:
        raise ConfigError([(where, "MBPS must be a number")]) from None
    try:
        net = parse_cidr(address)
    except (TypeError, ValueError) as exc:
        raise ConfigError([(where, str(exc))]) from None
    classes = options.setdefault("classes", [])
    if not isinstance(classes, list):
        raise ConfigError([("--set classes", "must be a list when --rate-limit is given too")])
    limits = sum(1 for c in classes if isinstance(c, dict) and str(c.get("name", "")).startswith("limit-"))
    classes.insert(limits, {"name": f"limit-{net}", "match": [{"addresses": [str(net)]}],
                            "rate": int(mbps * 1_000_000)})


def _problems(opts: QosOptions, link_rate: int | None = None) -> list[tuple[str, str]]:
    """What the model alone cannot check, with JSON paths; rates against the link's only once it is known
    (`link_rate`, or the option)."""
    link_rate = opts.link_rate or link_rate
    problems = []
    names: dict[str, int] = {}
    for i, c in enumerate(opts.classes):
        if c.name in names or c.name == "default":
            problems.append((f"options.classes[{i}].name", f"{c.name!r} is taken (classes[{names.get(c.name)}]"
                             f" or the default class)" if c.name in names else "'default' is the default class's name"))
        names.setdefault(c.name, i)
    rules = sum(len(c.match) for c in opts.classes)
    if rules > MAX_RULES:
        problems.append(("options.classes", f"{rules} match entries; at most {MAX_RULES}"))
    settings: list[tuple[str, ClassSettings]] = [("options.default", opts.default)]
    settings += [(f"options.classes[{i}]", c) for i, c in enumerate(opts.classes)]
    for path, cs in settings:
        if opts.mode == "police" and cs.ceil is not None:
            problems.append((f"{path}.ceil", "applies to mode=shape only (a bucket has no ceiling)"))
        if opts.mode == "shape" and cs.rate and cs.ceil and cs.ceil < cs.rate:
            problems.append((f"{path}.ceil", f"below rate ({cs.rate})"))
        elif opts.mode == "shape" and link_rate:
            if cs.rate and cs.rate > link_rate:
                problems.append((f"{path}.rate", f"above the link's rate ({link_rate})"))
            elif cs.ceil and cs.ceil > link_rate:
                problems.append((f"{path}.ceil", f"above the link's rate ({link_rate})"))
        if cs.flow_burst is not None and cs.flow_rate is None:
            problems.append((f"{path}.flow_burst", "needs flow_rate"))
        if opts.mode == "police" and cs.burst is not None and cs.rate is None:
            problems.append((f"{path}.burst", "needs rate (an unlimited class has no bucket)"))
    return problems


def _prefix(cidr: str) -> tuple[int, int, int, int]:
    """(addr_hi, addr_lo, mask_hi, mask_lo) of a CIDR over the 16-byte mapped address, as the kernel's
    two __u64 read from the packet's bytes (native order)."""
    net = parse_cidr(cidr)
    raw = (_V4_MAPPED + net.network_address.packed) if net.version == 4 else net.network_address.packed
    bits = net.prefixlen + (96 if net.version == 4 else 0)
    mask = ((1 << 128) - (1 << (128 - bits))).to_bytes(16, "big")
    a0, a1 = struct.unpack("=QQ", raw)
    m0, m1 = struct.unpack("=QQ", mask)
    return a0 & m0, a1 & m1, m0, m1


@dataclass(frozen=True)
class Packet:
    """What classification reads of a packet: `proto` (IP protocol number), addresses, ports (None for a
    packet without TCP/UDP ports) and the DSCP it arrives with."""

    proto: int
    src: str
    dst: str
    sport: int | None = None
    dport: int | None = None
    dscp: int = 0


def _in_ranges(values: list[int | str], port: int | None) -> bool:
    return port is not None and any(lo <= port <= hi for lo, hi in map(port_range, values))


def _in_prefixes(values: list[str], address: str) -> bool:
    addr = ipaddress.ip_address(address)
    return any(addr in parse_cidr(c) for c in values)


def matches(match: Match, packet: Packet) -> bool:
    """Whether one match entry holds for `packet`: the kernel's rule walk (qos.bpf.c, match_rule) in Python."""
    proto = PROTOCOLS[match.protocol.lower()] if isinstance(match.protocol, str) else match.protocol
    if proto and proto != packet.proto:
        return False
    if match.dscp and packet.dscp not in {dscp_value(d) for d in match.dscp}:
        return False
    has_ports = packet.proto in (6, 17) and packet.sport is not None and packet.dport is not None
    if (match.ports or match.sports or match.dports) and not has_ports:
        return False
    if match.ports and not (_in_ranges(match.ports, packet.sport) or _in_ranges(match.ports, packet.dport)):
        return False
    if match.sports and not _in_ranges(match.sports, packet.sport):
        return False
    if match.dports and not _in_ranges(match.dports, packet.dport):
        return False
    if match.src and not _in_prefixes(match.src, packet.src):
        return False
    if match.dst and not _in_prefixes(match.dst, packet.dst):
        return False
    return not match.addresses or _in_prefixes(match.addresses, packet.src) or \
        _in_prefixes(match.addresses, packet.dst)


def classify(options: QosOptions, packet: Packet) -> str:
    """The name of the class `packet` goes to under `options` (first class with a match entry that
    holds; "default" otherwise) — what the kernel decides, answered without a packet.

    >>> classify(m.options, Packet(proto=17, src="10.0.0.1", dst="10.0.0.2", sport=5000, dport=10010))
    'voip'
    """
    return next((c.name for c in options.classes if any(matches(m, packet) for m in c.match)), "default")


def pack_rule(slot: int, match: Match) -> bytes:
    """The `struct qos_rule` of one match entry of the class in `slot`."""
    def ranges(values: list[int | str]) -> list[int]:
        out = [x for v in values for x in port_range(v)]
        return out + [0] * (2 * MAX_RANGES - len(out))

    def prefixes(values: list[str]) -> list[int]:
        out = [x for v in values for x in _prefix(v)]
        return out + [0] * (4 * MAX_PREFIXES - len(out))

    proto = match.protocol
    proto_num = PROTOCOLS[proto.lower()] if isinstance(proto, str) else (proto or 0)
    dscp_mask = 0
    for d in match.dscp:
        dscp_mask |= 1 << dscp_value(d)
    return _RULE.pack(slot, proto_num, len(match.ports), len(match.sports), len(match.dports), len(match.src),
                      len(match.dst), len(match.addresses), dscp_mask, *ranges(match.ports), *ranges(match.sports),
                      *ranges(match.dports), *prefixes(match.src), *prefixes(match.dst), *prefixes(match.addresses))


def police_burst(rate_bps: int) -> int:
    """Default police (and per-flow) bucket: 300 ms of the rate, at least 128 KiB. A policer drops whole
    64 KiB GSO packets and TCP backs off after each loss; measured on veth (benchmarks/bench_qos.py), TCP
    reached 100% of a 100 Mbit/s policer with 300 ms and 6% with 128 KiB."""
    return max(rate_bps // 8 * 3 // 10, 2 * 65_536)


def _bucket(rate_bps: int | None, burst: int | None) -> tuple[int, int, int]:
    """(rate bytes/s, burst bytes, fill_ns) of a bucket; (0, 0, 0) for none."""
    if not rate_bps:
        return 0, 0, 0
    rate = max(rate_bps // 8, 1)
    size = burst or police_burst(rate_bps)
    return rate, size, -(-size * NANO // rate)


def pack_class(c: ClassSettings, mode: str, slot: int) -> bytes:
    """The `struct qos_class` of a class in `slot`."""
    rate, burst, fill = _bucket(c.rate, c.burst) if mode == "police" else (0, 0, 0)
    frate, fburst, ffill = _bucket(c.flow_rate, c.flow_burst)
    priority = classid(LEAF_MINOR + slot) if mode == "shape" else 0
    mark = c.mark_dscp is not None
    return _CLASS.pack(rate, burst, fill, frate, fburst, ffill, priority, mark,
                       dscp_value(c.mark_dscp) if mark else 0, 0)


def pack_set(opts: QosOptions, slots: Mapping[str, int]) -> bytes:
    """The `struct qos_set` of the options, each class in its slot (unused slots: pass-through)."""
    classes = [_CLASS.pack(0, 0, 0, 0, 0, 0, 0, 0, 0, 0)] * MAX_CLASSES
    classes[DEFAULT_SLOT] = pack_class(opts.default, opts.mode, DEFAULT_SLOT)
    rules = []
    for c in opts.classes:
        classes[slots[c.name]] = pack_class(c, opts.mode, slots[c.name])
        rules += [pack_rule(slots[c.name], m) for m in c.match]
    if opts.mode == "shape":  # an unused slot still sends to the default HTB class, never to none
        empty = pack_class(ClassSettings(), "shape", DEFAULT_SLOT)
        classes = [x if x != _CLASS.pack(0, 0, 0, 0, 0, 0, 0, 0, 0, 0) else empty for x in classes]
    return (_SET_HEAD.pack(len(rules), 0) + b"".join(classes) + b"".join(rules)
            + bytes(_RULE.size * (MAX_RULES - len(rules))))


def assign_slots(old: Mapping[str, int], names: list[str]) -> dict[str, int]:
    """Slots of the classes `names`: a class keeps its slot; a new one takes the lowest slot that neither
    the old classes nor the new ones hold (so a packet classified by the old rules never counts in it)."""
    slots = {name: old[name] for name in names if name in old}
    taken = set(old.values()) | set(slots.values()) | {DEFAULT_SLOT}
    free = (s for s in range(MAX_CLASSES) if s not in taken)
    for name in names:
        if name not in slots:
            slots[name] = next(free)
    return slots


@register
class QosMonitor(Monitor):
    kind = "qos"
    summary = "QoS classes at tcx: HTB shaping (egress) or eBPF policing, DSCP marking, per-address and per-flow limits"
    Options = QosOptions
    live_options = frozenset({"classes", "default"})
    cli_flags = (CliFlag("--rate-limit", ("IP", "MBPS"), "limit traffic to and from IP (or CIDR) to MBPS "
                         "Mbit/s: a class ahead of the others (repeatable)", _rate_limit),)

    @classmethod
    def parse_options(cls, options: MonitorOptions | Mapping[str, Any] | None) -> MonitorOptions:
        opts: QosOptions = super().parse_options(options)  # type: ignore[assignment]
        problems = _problems(opts)
        if problems:
            raise ConfigError(problems)
        return opts

    def _start(self) -> None:
        opts: QosOptions = self.options  # type: ignore[assignment]
        self._link_rate = opts.link_rate or link_speed_bps(self.interface or "", self.netns) or FALLBACK_LINK_RATE
        problems = _problems(opts, self._link_rate)
        if problems:  # a class faster than the link's reported speed
            raise ConfigError(problems)
        obj = self._own(BPFObject.from_package("monitors/qos"))
        obj.maps["qos_flows"].set_max_entries(opts.max_flows)
        self._htb: HtbTree | None = None
        self._ifb: IfbDevice | None = None
        shaped = self.interface or ""
        if opts.mode == "shape" and opts.direction == "ingress":  # HTB queues only what leaves: an ifb's egress
            self._ifb = IfbDevice(shaped, self.netns)
            shaped = self._ifb.name
            obj.set_rodata(qos_redirect_ifindex=self._ifb.ifindex)
        obj.load()
        self._sets: Map = obj.maps["qos_sets"]
        self._active_map: Map = obj.maps["qos_active"]
        self._stats: Map = obj.maps["qos_stats"]
        self._buckets: Map = obj.maps["qos_buckets"]
        self._counters: Map = obj.maps["qos_counters"]
        self._slots: dict[str, int] = {}
        self._active = 0
        self._history: deque[tuple[float, dict[int, int]]] = deque([(time.monotonic(), {})], maxlen=64)
        if opts.mode == "shape":
            self._htb = HtbTree(shaped, self.netns, self._link_rate, LEAF_MINOR + DEFAULT_SLOT)
        self._apply(opts)  # rules and HTB classes in place before the first packet is classified
        self._keep(attach_tc(obj.programs["qos_tc"], self.interface or "", opts.direction, netns=self.netns))

    def _release(self) -> None:
        try:
            super()._release()  # the tcx program first: no packet is classified into a vanishing class
        finally:
            htb, self._htb = getattr(self, "_htb", None), None
            ifb, self._ifb = getattr(self, "_ifb", None), None
            try:
                if htb is not None:
                    htb.close()
            finally:
                if ifb is not None:
                    ifb.delete()

    # -- applying classes ----------------------------------------------------------------------------
    def _htb_settings(self, c: ClassSettings, opts: QosOptions) -> dict[str, int]:
        rate = c.rate or self._link_rate
        ceil = c.ceil or c.rate or self._link_rate
        return {"rate": rate, "ceil": ceil, "burst": c.burst or burst_bytes(rate), "priority": c.priority}

    def _apply(self, new: QosOptions) -> None:
        """Put `new`'s classes in force, all or nothing: HTB classes added or changed first (no packet goes
        to them yet), then the rule set written beside the active one and switched in one map update, then
        the HTB classes of removed classes deleted. A failure before the switch undoes the HTB changes."""
        slots = assign_slots(self._slots, [c.name for c in new.classes])
        fresh = [s for name, s in slots.items() if name not in self._slots]
        undo: list[tuple[int, dict[str, int] | None]] = []
        try:
            if self._htb is not None:
                wanted = {LEAF_MINOR + DEFAULT_SLOT: self._htb_settings(new.default, new)}
                wanted.update({LEAF_MINOR + slots[c.name]: self._htb_settings(c, new) for c in new.classes})
                for minor, params in wanted.items():
                    before = self._htb.classes.get(minor)
                    if before != params:
                        undo.append((minor, before))
                        self._htb.set_class(minor, **params)
            for slot in fresh:  # a slot starts from zero counters and a full bucket
                self._stats.update(slot, bytes(_STATS.size))  # the same zeros on every CPU
                self._buckets.update(slot, bytes(self._buckets.value_size))
            inactive = 1 - self._active
            self._sets.update(inactive, pack_set(new, slots))
            self._active_map.update(0, inactive)
        except BaseException:
            for minor, before in reversed(undo):
                try:
                    if before is None:
                        self._htb.delete_class(minor)
                    else:
                        self._htb.set_class(minor, **before)
                except Error as exc:  # keep undoing the rest; the first error is the one raised
                    log.error("qos on %s: undoing HTB class %x failed: %s", self.interface, minor, exc)
            raise
        self._active = inactive
        gone = set(self._slots.values()) - set(slots.values())
        self._slots = slots
        if self._htb is not None:  # the new rules are in force: a class left behind only costs memory
            for slot in gone:
                try:
                    self._htb.delete_class(LEAF_MINOR + slot)
                except Error as exc:
                    log.warning("qos on %s: %s", self.interface, exc)

    def update(self, **options: Any) -> None:
        """Replace `classes` and/or `default` (PUT /monitors/NAME): validated first, then put in force all
        or nothing — when the kernel refuses a step, the previous classes stay in force and the options
        stay the old ones. Counters of classes that keep their name continue."""
        with self.lock:
            old: QosOptions = self.options  # type: ignore[assignment]
            super().update(**options)
            try:
                problems = _problems(self.options, self._link_rate)  # type: ignore[arg-type]
                if problems:
                    raise ConfigError(problems)
                self._apply(self.options)  # type: ignore[arg-type]
            except BaseException:
                self.options = old
                raise

    # -- reading -------------------------------------------------------------------------------------
    def _slot_stats(self) -> dict[int, tuple[int, ...]]:
        """Each slot's `struct qos_stats`, summed over the CPUs."""
        _, values, n = self._stats.read_raw()
        ncpus, stride = self._stats.ncpus, per_cpu_stride(_STATS.size)
        return {slot: tuple(map(sum, zip(*(_STATS.unpack_from(values, (slot * ncpus + cpu) * stride)
                                            for cpu in range(ncpus)))))
                for slot in range(n)}

    def _measured(self, now: float, sent: dict[int, int]) -> dict[int, float]:
        """Bits per second of each slot over the last second or more (since the oldest sample within
        10 s that is at least 1 s old; since start before that)."""
        self._history.append((now, sent))
        base = None
        for t, sample in self._history:
            if now - t >= 1.0 and now - t <= 10.0:
                base = (t, sample)
        if base is None:
            base = self._history[0]
        t0, before = base
        if now - t0 <= 0:
            return {slot: 0.0 for slot in sent}
        return {slot: max(0, b - before.get(slot, 0)) * 8 / (now - t0) for slot, b in sent.items()}

    def snapshot(self) -> dict[str, Any]:
        opts: QosOptions = self.options  # type: ignore[assignment]
        with self.lock:
            stats = self._slot_stats()
            queues = self._htb.class_stats() if self._htb is not None else {}
            counters = [sum(self._counters.lookup(i)) for i in range(3)]
            now = time.monotonic()
            slots = dict(self._slots)
        named = [("default", DEFAULT_SLOT, opts.default)] + [(c.name, slots[c.name], c) for c in opts.classes]
        # shape: what HTB sent (after its queue); police: what passed the buckets
        sent = {slot: queues[LEAF_MINOR + slot]["bytes"] if LEAF_MINOR + slot in queues else stats[slot][1]
                for _, slot, _ in named}
        measured = self._measured(now, sent)
        classes = []
        for name, slot, c in [*named[1:], named[0]]:
            packets, nbytes, d_class, d_flow, marked = stats[slot]
            q = queues.get(LEAF_MINOR + slot, {})
            classes.append({
                "name": name, "rate_bps": c.rate, "ceil_bps": (c.ceil or c.rate) if opts.mode == "shape" else None,
                "packets": packets, "bytes": nbytes, "dropped": d_class + d_flow + q.get("drops", 0),
                "measured_bps": round(measured[slot], 1),
                "drops": {"class": d_class, "flow": d_flow, "queue": q.get("drops", 0)},
                "marked": marked,
                "queue": {"sent_bytes": q["bytes"], "sent_packets": q["packets"], "backlog_bytes": q["backlog"],
                          "overlimits": q["overlimits"]} if q else None,
            })
        return {"mode": opts.mode, "direction": opts.direction, "classes": classes,
                "link_rate_bps": self._link_rate if opts.mode == "shape" else None,
                "non_ip": counters[CTR_NON_IP], "flow_table_full": counters[CTR_FLOW_FULL],
                "mark_failed": counters[CTR_MARK_FAILED], "self": self.self_cost()}

    def families(self) -> list[Metric]:
        snap = self.snapshot()
        packets = CounterMetricFamily("qos_class_packets", "Packets passed into the class", labels=["class"])
        nbytes = CounterMetricFamily("qos_class_bytes", "Bytes passed into the class", labels=["class"])
        dropped = CounterMetricFamily("qos_class_dropped_packets", "Packets of the class dropped, by where",
                                      labels=["class", "reason"])
        marked = CounterMetricFamily("qos_class_marked_packets", "Packets whose DSCP the class rewrote",
                                     labels=["class"])
        rate = GaugeMetricFamily("qos_class_rate_bits_per_second", "Configured rate (0: unlimited)", labels=["class"])
        measured = GaugeMetricFamily("qos_class_measured_bits_per_second", "Rate over the last second or more",
                                     labels=["class"])
        for c in snap["classes"]:  # labels bounded: at most 31 named classes and the default
            name = c["name"]
            packets.add_metric([name], c["packets"])
            nbytes.add_metric([name], c["bytes"])
            for reason, n in c["drops"].items():
                dropped.add_metric([name, reason], n)
            marked.add_metric([name], c["marked"])
            rate.add_metric([name], c["rate_bps"] or 0)
            measured.add_metric([name], c["measured_bps"])
        return [packets, nbytes, dropped, marked, rate, measured,
                CounterMetricFamily("qos_non_ip_packets", "Frames that are not IPv4/IPv6 (default class)",
                                    value=snap["non_ip"]),
                *self.self_families(snap["self"])]


"""ddos: an XDP guard that drops floods before the stack sees them — a token bucket per source address
(pps, optional bps, SYNs), blocking a source over its rate for `block_seconds`, plus manual block and
allow lists (LPM tries; allow wins). Kernel side: bpf/monitors/ddos.bpf.c.

It changes traffic, so it is built to be safe: the `protect` CIDRs (put the addresses you manage the
host from there) are on the allow list from the first packet and can never be blocked or rate-limited;
every decision is counted; `close()` removes the XDP program and the interface is as before.

>>> with monitors.open("ddos", interface="eth0", pps=10_000, protect=["192.0.2.10/32"]) as m:
...     m.block("203.0.113.0/24", seconds=60)
...     m.snapshot()["dropped"]
{'rate': 0, 'syn': 0, 'blocklist': 12}
"""
from __future__ import annotations

import fcntl
import ipaddress
import logging
import socket
import struct
import threading
import time
from collections.abc import Iterator, Mapping
from types import MappingProxyType
from typing import Annotated, Any, Literal

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from pydantic import AfterValidator, Field, model_validator

from .. import netns as _netns
from ..errors import ConfigError, Error, NotSupportedError, VerifierError
from ..link import attach_xdp
from ..maps import Map
from ..object import BPFObject
from .base import CliFlag, Monitor, MonitorOptions
from .flowkey import FAMILY_IPV4, FAMILY_IPV6, address
from .registry import register
from .ringevents import RingEvents

log = logging.getLogger(__name__)

NANO = 1_000_000_000
# struct ddos_source (ddos.h): tokens byte_tokens syn_tokens last_ns blocked_until_ns packets dropped
# win_start_ns win_packets share_tokens reason pad
_SOURCE = struct.Struct("=QQQQQQQQQQII")
_EVENT = struct.Struct("=16sQHBBI")  # struct ddos_event: addr until_ns port kind reason pad
_PORT = struct.Struct("=QQQQQQ")  # struct ddos_port: tokens last_ns protected_until_ns syns dropped kernel_syn_ns
_RULE = struct.Struct("=QQ")  # struct ddos_rule: until_ns packets
_LPM_KEY = struct.Struct("=I16s")  # struct ddos_lpm_key: prefixlen addr
_LISTS = struct.Struct("=II")  # struct ddos_lists: allow block
_V4_MAPPED = bytes(10) + b"\xff\xff"
REASONS = {1: "rate", 2: "syn", 3: "blocklist"}  # DDOS_REASON_*
CTR_PASSED, CTR_DROP_RATE, CTR_DROP_SYN, CTR_DROP_BLOCKLIST, CTR_ALLOWED, CTR_BLOCK_EVENTS, CTR_NON_IP, \
    CTR_PROTECT_EVENTS, CTR_LOST_EVENTS, CTR_SYNCOOKIES, CTR_SYN_TO_KERNEL, CTR_BAD_COOKIE_ACKS = range(12)
NR_CTR = 12
SYNCOOKIES_SYSCTL = "/proc/sys/net/ipv4/tcp_syncookies"  # per network namespace; IPv6 listeners use it too
XDP_MODE = {"native": "native", "generic": "skb"}


def parse_cidr(text: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    """An IPv4/IPv6 address or CIDR (host bits must be zero); ValueError naming the text otherwise."""
    if not isinstance(text, str):
        raise TypeError(f"expected an address or CIDR string, not {type(text).__name__}")
    try:
        return ipaddress.ip_network(text, strict=True)
    except ValueError as exc:
        raise ValueError(f"not an IPv4/IPv6 address or CIDR: {text!r} ({exc})") from None


def _cidr(text: str) -> str:
    parse_cidr(text)
    return text


Cidr = Annotated[str, AfterValidator(_cidr)]


def lpm_key(net: ipaddress.IPv4Network | ipaddress.IPv6Network) -> bytes:
    """The `struct ddos_lpm_key` of a network: IPv4 IPv4-mapped, its prefix length + 96."""
    if net.version == 4:
        return _LPM_KEY.pack(net.prefixlen + 96, _V4_MAPPED + net.network_address.packed)
    return _LPM_KEY.pack(net.prefixlen, net.network_address.packed)


def lpm_network(raw: bytes) -> str:
    """The CIDR text of a `struct ddos_lpm_key`."""
    plen, addr = _LPM_KEY.unpack(raw)
    if addr[:12] == _V4_MAPPED and plen >= 96:
        return f"{ipaddress.IPv4Address(addr[12:])}/{plen - 96}"
    return f"{ipaddress.IPv6Address(addr)}/{plen}"


def prefix_mask(bits: int, v4: bool) -> bytes:
    """The 16-byte mask keeping `bits` of an address (IPv4: of the mapped address's last 4 bytes)."""
    total = 96 + bits if v4 else bits
    return ((1 << 128) - (1 << (128 - total))).to_bytes(16, "big")


class BlockRule(MonitorOptions):
    cidr: Cidr = Field(description="IPv4/IPv6 address or CIDR to drop")
    seconds: float | None = Field(None, gt=0, le=365 * 86_400, description="how long (null: until unblocked)")


class CidrArg(MonitorOptions):
    cidr: Cidr = Field(description="IPv4/IPv6 address or CIDR")


class DdosOptions(MonitorOptions):
    mode: Literal["native", "generic"] = Field(
        "native", description="XDP mode: native (driver, also veth) or generic (any interface, slower)")
    pps: int = Field(10_000, ge=0, le=1 << 27, description="packets per second per source (0: no limit)")
    bps: int = Field(0, ge=0, le=1 << 36, description="bits per second per source (0: no limit)")
    syn_pps: int = Field(1_000, ge=0, le=1 << 27, description="TCP SYNs per second per source (0: no limit)")
    port_syn_pps: int = Field(0, ge=0, le=1 << 27, description="SYNs per second to one destination port above "
                              "which the port is protected (0: off)")
    syn_share_pps: int = Field(10, ge=1, le=1 << 27, description="SYNs per second each source may send to a "
                               "protected port (the rest are dropped)")
    max_ports: int = Field(4_096, ge=16, le=65_536, description="destination ports the SYN table holds")
    block_seconds: float = Field(60.0, gt=0, le=7 * 86_400, description="how long a source over its rate is dropped")
    prefix_v4: int = Field(32, ge=1, le=32, description="IPv4 sources are keyed by this prefix length")
    prefix_v6: int = Field(128, ge=1, le=128, description="IPv6 sources are keyed by this prefix length")
    max_sources: int = Field(65_536, ge=16, le=1 << 22, description="sources each LRU table holds (one "
                             "for IPv4, one for IPv6)")
    max_rules: int = Field(4_096, ge=1, le=1 << 20, description="entries of each of the block and allow lists")
    protect: list[Cidr] = Field([], max_length=256, description="CIDRs always allowed (the management addresses)")
    allow: list[Cidr] = Field([], max_length=4096, description="CIDRs on the allow list from the start")
    block: list[BlockRule] = Field([], max_length=4096, description="manual blocks from the start "
                                   "(CLI: --blacklist IP SECONDS, the article's flag)")
    top: int = Field(10, ge=1, le=10_000, description="top_sources listed in the snapshot")
    syncookies: bool = Field(False, description="answer SYNs to a protected port with XDP SYN cookies instead of "
                             "dropping those over the share (needs port_syn_pps; sets net.ipv4.tcp_syncookies=2 in "
                             "the interface's namespace while running)")

    @model_validator(mode="after")
    def _consistent(self) -> DdosOptions:
        if self.syncookies and not self.port_syn_pps:
            raise ValueError("syncookies needs port_syn_pps > 0: cookies answer SYNs to protected ports")
        return self


def _blacklist(options: dict[str, Any], values: list[str]) -> None:
    """`--blacklist IP SECONDS` (the article's controller flag) → one more entry of `block`."""
    cidr, text = values
    try:
        seconds = float(text)
    except ValueError:
        raise ConfigError([(f"--blacklist {cidr} {text}", "SECONDS must be a number")]) from None
    block = options.setdefault("block", [])
    if not isinstance(block, list):
        raise ConfigError([("--set block", "must be a list when --blacklist is given too")])
    block.append({"cidr": cidr, "seconds": seconds})


def _whitelist(options: dict[str, Any], values: list[str]) -> None:
    """`--whitelist CIDR` (the counterpart of --blacklist) → one more entry of `allow`."""
    allow = options.setdefault("allow", [])
    if not isinstance(allow, list):
        raise ConfigError([("--set allow", "must be a list when --whitelist is given too")])
    allow.append(values[0])


@register
class DdosMonitor(Monitor):
    kind = "ddos"
    summary = "XDP flood guard: per-source token buckets (pps, bps, SYN), block and allow lists"
    Options = DdosOptions
    live_options = frozenset({"top", "allow", "block"})
    actions = MappingProxyType({"block": BlockRule, "unblock": CidrArg, "allow": CidrArg, "disallow": CidrArg})
    cli_flags = (CliFlag("--blacklist", ("IP", "SECONDS"), "drop IP (or CIDR) for SECONDS (repeatable)", _blacklist),
                 CliFlag("--whitelist", ("CIDR",), "never drop or rate-limit CIDR (repeatable)", _whitelist))

    def _start(self) -> None:
        opts: DdosOptions = self.options  # type: ignore[assignment]
        obj = self._own(BPFObject.from_package("monitors/ddos"))
        obj.maps["ddos_sources"].set_max_entries(opts.max_sources)
        obj.maps["ddos_sources4"].set_max_entries(opts.max_sources)
        obj.maps["ddos_allow"].set_max_entries(opts.max_rules)
        obj.maps["ddos_block"].set_max_entries(opts.max_rules)
        obj.maps["ddos_ports"].set_max_entries(opts.max_ports)
        mtu = _mtu(self.interface or "", self.netns)
        obj.set_rodata(ddos_syncookies=int(opts.syncookies), ddos_syncookie_mss4=max(536, mtu - 40),
                       ddos_syncookie_mss6=max(1220, mtu - 60))
        obj.set_rodata(ddos_pps=opts.pps, ddos_bytes_per_s=(opts.bps + 7) // 8, ddos_syn_pps=opts.syn_pps,
                       ddos_port_syn_pps=opts.port_syn_pps, ddos_syn_share_pps=opts.syn_share_pps,
                       ddos_block_ns=int(opts.block_seconds * NANO),
                       ddos_mask_v4=prefix_mask(opts.prefix_v4, True), ddos_mask_v6=prefix_mask(opts.prefix_v6, False))
        try:
            obj.load()
        except VerifierError as exc:
            if opts.syncookies and "tcp_raw_gen_syncookie" in str(exc.log):
                raise NotSupportedError("syncookies=true needs the helpers bpf_tcp_raw_gen_syncookie_ipv4/6 (linux "
                                        f"6.0), which this kernel refuses: {exc}") from None
            raise
        self._sources: Map = obj.maps["ddos_sources"]
        self._sources4: Map = obj.maps["ddos_sources4"]
        # the .bss section holds only `struct ddos_lists` (ddos.h): the entries of each list
        self._lists: Map = next(m for name, m in obj.maps.items() if name.endswith(".bss"))
        if self._lists.value_size != _LISTS.size:
            raise ConfigError([("", f"ddos.bpf.o's .bss is {self._lists.value_size} bytes, not struct ddos_lists")])
        self._allow: Map = obj.maps["ddos_allow"]
        self._block: Map = obj.maps["ddos_block"]
        self._counters: Map = obj.maps["ddos_counters"]
        self._ports: Map = obj.maps["ddos_ports"]
        self._events = RingEvents(obj.maps["ddos_events"])
        self._protected = {lpm_key(parse_cidr(c)) for c in opts.protect}
        self._manual = {"block": 0, "unblock": 0}
        # entries made by block()/allow() (not by the options): runtime_state() keeps them for a restart
        self._runtime_blocks: dict[bytes, int] = {}  # lpm key → CLOCK_MONOTONIC end, 0: no end
        self._runtime_allows: set[bytes] = set()
        # protected before the first packet: the program is attached only after these are in its map
        for key in self._protected | {lpm_key(parse_cidr(c)) for c in opts.allow}:
            self._allow.update(key, _RULE.pack(0, 0))
        self._count_lists()
        for rule in opts.block:
            self._put_block(lpm_key(parse_cidr(rule.cidr)), rule.seconds)
        self._syncookies_before: str | None = None
        if opts.syncookies:
            # the listener must check the cookies of ACKs it never saw the SYN of (tcp_syncookies=2); put
            # back on close
            self._syncookies_before = _SYNCOOKIES.acquire(self.netns)
        self._keep(attach_xdp(obj.programs["ddos_xdp"], self.interface or "", XDP_MODE[opts.mode], netns=self.netns))

    def update(self, **options: Any) -> None:
        """Change `top`, or replace the lists given as options (`allow`, `block`: PUT /monitors/NAME):
        entries of the old option lists missing from the new ones are removed, new ones added, kept ones
        keep their expiry. All or nothing: when a map update fails, the lists are put back as they were
        and the options stay the old ones. Entries added with `block()`/`allow()` are left alone."""
        old: DdosOptions = self.options  # type: ignore[assignment]
        with self.lock:
            super().update(**options)  # validates; refuses fixed options
            new: DdosOptions = self.options  # type: ignore[assignment]
            try:
                self._sync_lists(old, new)
            except BaseException:
                self.options = old
                raise
            finally:
                self._count_lists()

    def _sync_lists(self, old: DdosOptions, new: DdosOptions) -> None:
        def blocks(o: DdosOptions) -> dict[bytes, float | None]:
            return {lpm_key(parse_cidr(r.cidr)): r.seconds for r in o.block}

        def allows(o: DdosOptions) -> set[bytes]:
            return {lpm_key(parse_cidr(c)) for c in o.allow} - self._protected

        old_b, new_b, old_a, new_a = blocks(old), blocks(new), allows(old), allows(new)
        saved = [(m, key, m.get(key)) for m, keys in ((self._block, old_b.keys() | new_b.keys()),
                                                       (self._allow, old_a | new_a)) for key in keys]
        now = time.monotonic_ns()
        try:
            for key in old_b.keys() - new_b.keys():
                if key in self._runtime_blocks:  # also blocked with block(): that block stays, its end too
                    self._block.update(key, _RULE.pack(self._runtime_blocks[key], 0))
                else:
                    _delete(self._block, key)
            for key, seconds in new_b.items():
                if key not in old_b or old_b[key] != seconds:
                    self._block.update(key, _RULE.pack(0 if seconds is None else now + int(seconds * NANO), 0))
                    self._manual["block"] += 1
            for key in old_a - new_a - self._runtime_allows:  # one also made with allow() stays
                _delete(self._allow, key)
            for key in new_a - old_a:
                self._allow.update(key, _RULE.pack(0, 0))
            self._count_lists()  # new entries in force before the next step can fail
        except BaseException:
            for m, key, value in saved:  # back to the rules in force before
                if value is None:
                    _delete(m, key)
                else:
                    m.update(key, value)
            raise
        log.info("ddos on %s: lists updated (%d blocks, %d allows from options)", self.interface,
                 len(new_b), len(new_a))

    # -- acting --------------------------------------------------------------------------------
    def block(self, cidr: str, seconds: float | None = None) -> None:
        """Drop every packet from `cidr` for `seconds` (None: until `unblock`). The allow list and the
        `protect` CIDRs still win. Blocking again replaces the expiry."""
        key = self._rule_key(cidr, "cidr")
        with self.lock:
            self._runtime_blocks[key] = self._put_block(key, seconds)
        log.info("ddos on %s: blocked %s for %s", self.interface, cidr, "ever" if seconds is None else f"{seconds} s")

    def _put_block(self, key: bytes, seconds: float | None) -> int:
        if seconds is not None and not 0 < seconds <= 365 * 86_400:
            raise ConfigError([("seconds", f"must be > 0 and at most a year, not {seconds!r}")])
        until = 0 if seconds is None else time.monotonic_ns() + int(seconds * NANO)
        with self.lock:
            self._sweep_expired()
            self._block.update(key, _RULE.pack(until, 0))
            self._count_lists()
            self._manual["block"] += 1
        return until

    def unblock(self, cidr: str) -> int:
        """Remove the manual block of exactly `cidr` and release every source the kernel blocked inside it
        (they start again with full buckets). Returns how many entries were removed."""
        net = parse_cidr_or_error(cidr, "cidr")
        removed = 0
        with self.lock:
            try:
                self._block.delete(lpm_key(net))
                removed += 1
            except KeyError:
                pass
            self._runtime_blocks.pop(lpm_key(net), None)
            self._count_lists()
            for table, size, prefix in ((self._sources4, 4, _V4_MAPPED), (self._sources, 16, b"")):
                keys, _, n = table.read_raw()
                for i in range(n):
                    raw = bytes(keys[i * size:(i + 1) * size])
                    if _key_address(prefix + raw) in net:
                        try:
                            table.delete(raw)
                            removed += 1
                        except KeyError:
                            pass
            self._manual["unblock"] += 1
        log.info("ddos on %s: unblocked %s (%d entries)", self.interface, cidr, removed)
        return removed

    def allow(self, cidr: str) -> None:
        """Never drop or rate-limit packets from `cidr` (wins over every block)."""
        key = self._rule_key(cidr, "cidr")
        with self.lock:
            if key not in self._protected:
                self._allow.update(key, _RULE.pack(0, 0))
                self._count_lists()
                self._runtime_allows.add(key)
        log.info("ddos on %s: allowed %s", self.interface, cidr)

    def disallow(self, cidr: str) -> None:
        """Remove `cidr` from the allow list; the `protect` CIDRs cannot be removed."""
        key = self._rule_key(cidr, "cidr")
        if key in self._protected:
            raise ConfigError([("cidr", f"{cidr} is protected (option protect) and stays allowed")])
        with self.lock:
            try:
                self._allow.delete(key)
            except KeyError:
                raise ConfigError([("cidr", f"{cidr} is not on the allow list")]) from None
            self._count_lists()
            self._runtime_allows.discard(key)

    @staticmethod
    def _rule_key(cidr: str, path: str) -> bytes:
        return lpm_key(parse_cidr_or_error(cidr, path))

    def _sweep_expired(self) -> None:
        """Remove manual blocks whose time is over (the kernel already ignores them)."""
        now = time.monotonic_ns()
        for key, (until, _) in self._rules(self._block):
            if until and until <= now:
                try:
                    self._block.delete(key)
                except KeyError:
                    pass
        self._runtime_blocks = {k: u for k, u in self._runtime_blocks.items() if not u or u > now}
        self._count_lists()

    # -- kept across restarts (the service's state file) ---------------------------------------
    def runtime_state(self) -> dict[str, Any] | None:
        """The blocks and allows made with `block()`/`allow()` (the option lists are in the options):
        `{"block": [{"cidr", "until"}], "allow": [cidr]}`, `until` in wall-clock seconds (time.time(): a
        reboot resets the monotonic clock), null for a block without end. None when there are none."""
        with self.lock:
            mono, wall = time.monotonic_ns(), time.time()
            blocks = [{"cidr": lpm_network(key), "until": None if not until else wall + (until - mono) / NANO}
                      for key, until in sorted(self._runtime_blocks.items()) if not until or until > mono]
            allows = [lpm_network(key) for key in sorted(self._runtime_allows)]
        return {"block": blocks, "allow": allows} if blocks or allows else None

    def restore_runtime_state(self, state: Mapping[str, Any]) -> None:
        """Put back blocks and allows from `runtime_state()`: each block for the time it had left (one
        whose time ran out meanwhile is not restored). A bad entry is a ConfigError naming it; the ones
        before it stay in force."""
        now = time.time()
        for i, entry in enumerate(state.get("block") or []):
            until = entry.get("until") if isinstance(entry, Mapping) else "?"
            if until is not None and not isinstance(until, (int, float)):
                raise ConfigError([(f"runtime.block[{i}].until", f"must be a number or null, not {until!r}")])
            if until is None:
                self.block(str(entry.get("cidr")), None)
            elif until > now:
                self.block(str(entry.get("cidr")), min(until - now, 365 * 86_400))
        for cidr in state.get("allow") or []:
            self.allow(str(cidr))

    def _count_lists(self) -> None:
        """Tell the kernel how many entries each list holds (it skips the lookup in an empty one). Called
        after every change: entries go in before the count rises and out before it falls."""
        self._lists.update(bytes(4), _LISTS.pack(len(self._allow), len(self._block)))

    # -- events --------------------------------------------------------------------------------
    def events(self, timeout: float | None = None) -> Iterator[dict[str, Any]]:
        """What the kernel decided as it happens: `{"event": "block", "source", "reason", "until_ns"}` for
        a source blocked over its rate, `{"event": "protect", "port", "until_ns"}` for a port switched into
        SYN protection. Ends after `timeout` seconds without one (never, with None) or when the monitor
        closes. One reader at a time; manual blocks are logged, not streamed."""
        if not self.started:
            raise ConfigError([("", "the ddos monitor is not started")])
        return self._events.stream(timeout, self._decode_event)

    def _decode_event(self, record: bytes) -> dict[str, Any]:
        addr, until, port, kind, reason, _ = _EVENT.unpack_from(record)
        if kind == 2:  # DDOS_EVENT_PROTECT
            return {"event": "protect", "port": int.from_bytes(port.to_bytes(2, "little"), "big"), "until_ns": until}
        return {"event": "block", "source": self._source_text(addr), "reason": REASONS.get(reason, str(reason)),
                "until_ns": until}

    def _stop(self) -> None:
        events = getattr(self, "_events", None)  # absent when _start failed early
        if events is not None:
            events.close()
        if getattr(self, "_syncookies_before", None) is not None:
            self._syncookies_before = None
            _SYNCOOKIES.release(self.netns)

    # -- reading -------------------------------------------------------------------------------
    @staticmethod
    def _rules(m: Map) -> list[tuple[bytes, tuple[int, int]]]:
        keys, values, n = m.read_raw()
        ks, vs = m.key_size, m.value_size
        return [(bytes(keys[i * ks:(i + 1) * ks]), _RULE.unpack_from(values, i * vs)) for i in range(n)]

    def _counter(self, index: int) -> int:
        return sum(self._counters.lookup(index))

    def _source_rows(self) -> list[tuple[bytes, tuple[int, ...]]]:
        """Both source tables, keyed by the 16-byte address (IPv4 mapped)."""
        rows = []
        for table, size, prefix in ((self._sources4, 4, _V4_MAPPED), (self._sources, 16, b"")):
            keys, values, n = table.read_raw()
            rows += [(prefix + bytes(keys[i * size:(i + 1) * size]), row)
                     for i, row in enumerate(_SOURCE.iter_unpack(memoryview(values)[:n * _SOURCE.size]))]
        return rows

    def _source_text(self, raw: bytes) -> str:
        opts: DdosOptions = self.options  # type: ignore[assignment]
        v4 = raw[:12] == _V4_MAPPED
        text = address(raw, FAMILY_IPV4 if v4 else FAMILY_IPV6)
        plen, full = (opts.prefix_v4, 32) if v4 else (opts.prefix_v6, 128)
        return text if plen == full else f"{text}/{plen}"

    def snapshot(self) -> dict[str, Any]:
        opts: DdosOptions = self.options  # type: ignore[assignment]
        with self.lock:
            now = time.monotonic_ns()
            sources = self._source_rows()
            rules = self._rules(self._block)
            allowed = self._rules(self._allow)
            counters = [self._counter(i) for i in range(NR_CTR)]
            pkeys, pvalues, pn = self._ports.read_raw()
        blocked = [{"source": self._source_text(raw), "until_ns": row[4], "reason": REASONS.get(row[10], str(row[10])),
                    "dropped": row[6]} for raw, row in sources if row[4] > now]
        blocked += [{"source": lpm_network(raw), "until_ns": until or None, "reason": "blocklist", "dropped": packets}
                    for raw, (until, packets) in rules if not until or until > now]
        # pps: packets in the source's current 1 s window (0 once the window is over 2 s old)
        top = sorted(({"source": self._source_text(raw), "pps": row[8] if now - row[7] < 2 * NANO else 0,
                       "packets": row[5]} for raw, row in sources),
                     key=lambda r: (r["pps"], r["packets"]), reverse=True)[:opts.top]
        return {
            "passed": counters[CTR_PASSED],
            "dropped": {"rate": counters[CTR_DROP_RATE], "syn": counters[CTR_DROP_SYN],
                        "blocklist": counters[CTR_DROP_BLOCKLIST]},
            "blocked": blocked,
            "top_sources": top,
            "allowed": {"packets": counters[CTR_ALLOWED],
                        "rules": [{"source": lpm_network(raw), "packets": packets,
                                   "protected": raw in self._protected} for raw, (_, packets) in allowed]},
            "non_ip": counters[CTR_NON_IP],
            # syncookies: SYN-ACKs with an XDP SYN cookie sent; SYNs to protected ports left to the listener
            # bad_acks: ACKs for a protected port's listener without a valid cookie, dropped (also in "syn")
            "syncookies": {"sent": counters[CTR_SYNCOOKIES], "to_kernel": counters[CTR_SYN_TO_KERNEL],
                           "bad_acks": counters[CTR_BAD_COOKIE_ACKS]},
            "sources": len(sources),
            # ports that were ever switched into SYN protection (port_syn_pps), busiest first
            "syn_ports": sorted(({"port": int.from_bytes(pkeys[i * 2:i * 2 + 2], "big"), "syns": row[3],
                                  "dropped": row[4], "protected": row[2] > now}
                                 for i, row in enumerate(_PORT.iter_unpack(memoryview(pvalues)[:pn * _PORT.size]))
                                 if row[2]), key=lambda r: r["syns"], reverse=True)[:opts.top],
            "events": {"block": counters[CTR_BLOCK_EVENTS] + self._manual["block"],
                       "unblock": self._manual["unblock"], "protect": counters[CTR_PROTECT_EVENTS],
                       "lost": counters[CTR_LOST_EVENTS]},
            "self": self.self_cost(),
        }

    def families(self) -> list[Metric]:
        snap = self.snapshot()
        dropped = CounterMetricFamily("ddos_dropped_packets", "Packets dropped, by reason", labels=["reason"])
        for reason in ("rate", "syn", "blocklist"):
            dropped.add_metric([reason], snap["dropped"][reason])
        blocked = GaugeMetricFamily("ddos_blocked_sources", "Sources or CIDRs blocked now, by reason",
                                    labels=["reason"])
        for reason in ("rate", "syn", "blocklist"):
            blocked.add_metric([reason], sum(1 for b in snap["blocked"] if b["reason"] == reason))
        events = CounterMetricFamily("ddos_block_events", "Blocks and unblocks (kernel and manual), ports switched into SYN protection",
                                     labels=["event"])
        for event in ("block", "unblock", "protect"):
            events.add_metric([event], snap["events"][event])
        return [
            CounterMetricFamily("ddos_passed_packets", "Packets passed (allowed ones included)", value=snap["passed"]),
            dropped, blocked, events,
            CounterMetricFamily("ddos_allowed_packets", "Packets passed by the allow list",
                                value=snap["allowed"]["packets"]),
            CounterMetricFamily("ddos_syncookies_sent", "SYNs answered with an XDP SYN cookie",
                                value=snap["syncookies"]["sent"]),
            GaugeMetricFamily("ddos_sources", "Sources in the kernel table", value=snap["sources"]),
            *self.self_families(snap["self"]),
        ]


def parse_cidr_or_error(cidr: str, path: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    """parse_cidr, its ValueError as a ConfigError at `path`."""
    try:
        return parse_cidr(cidr)
    except (TypeError, ValueError) as exc:
        raise ConfigError([(path, str(exc))]) from None


def _delete(m: Map, key: bytes) -> None:
    try:
        m.delete(key)
    except KeyError:
        pass


class _SyncookiesSysctl:
    """net.ipv4.tcp_syncookies=2 in a namespace while any guard of this process with syncookies runs
    there; the last one to close puts back the value found by the first."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._users: dict[int, tuple[int, str]] = {}  # namespace inode → (guards, value before)

    def acquire(self, netns: str | None) -> str:
        with self._lock:
            ns = _netns.inode(netns)
            users, before = self._users.get(ns, (0, ""))
            if not users:
                before = _sysctl(SYNCOOKIES_SYSCTL, netns, "2")
            self._users[ns] = (users + 1, before)
            return before

    def release(self, netns: str | None) -> None:
        with self._lock:
            ns = _netns.inode(netns)
            users, before = self._users.pop(ns, (1, "1"))
            if users > 1:
                self._users[ns] = (users - 1, before)
            else:
                try:
                    _sysctl(SYNCOOKIES_SYSCTL, netns, before)
                except (OSError, Error) as exc:  # the namespace is gone with its sysctl
                    log.info("tcp_syncookies of %s not restored: %s", netns, exc)


_SYNCOOKIES = _SyncookiesSysctl()


def _sysctl(path: str, netns: str | None, value: str) -> str:
    """Write `value` to a /proc/sys file of network namespace `netns`; returns the value it had."""
    with _netns.enter(netns):
        with open(path) as f:
            before = f.read().strip()
        with open(path, "w") as f:
            f.write(value)
    return before


SIOCGIFMTU = 0x8921


def _mtu(interface: str, netns: str | None) -> int:
    """The interface's MTU (SIOCGIFMTU from inside its namespace: /sys shows the mounting one's)."""
    with _netns.enter(netns):
        name = interface if not interface.isdigit() else socket.if_indextoname(int(interface))
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            try:
                raw = fcntl.ioctl(s.fileno(), SIOCGIFMTU, struct.pack("16si12x", name.encode()[:15], 0))
            except OSError as exc:
                raise ConfigError([("interface", f"{interface}: {exc.strerror}")]) from None
    return struct.unpack_from("16si", raw)[1]


def _key_address(raw: bytes) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    if raw[:12] == _V4_MAPPED:
        return ipaddress.IPv4Address(raw[12:])
    return ipaddress.IPv6Address(raw)

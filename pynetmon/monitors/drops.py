"""drops: packets the kernel dropped, by reason (the running kernel's enum skb_drop_reason, named from its
BTF at run time), interface and protocol; tracepoint skb:kfree_skb. Kernel side: bpf/monitors/drops.bpf.c.

>>> with monitors.open("drops", netns="h2") as m:
...     m.snapshot()
{'drops': [{'reason': 'NO_SOCKET', 'interface': 'eth0', 'protocol': 'ipv4', 'count': 10}], 'total': 10, ...}
"""
from __future__ import annotations

import bisect
import functools
import struct
from typing import Any

from prometheus_client.core import CounterMetricFamily, Metric
from pydantic import Field

from .. import netns as _netns
from .._binding import ffi, lib
from ..errors import NotSupportedError
from ..link import attach_tracing
from ..maps import Map, possible_cpus
from ..object import BPFObject
from .base import Monitor
from .cardinality import CardinalityOptions, SeriesTTL, top_keys
from .registry import register

_KEY = struct.Struct("=QIHxx16s")  # struct drops_key
_VALUE = struct.Struct("=Q")
CTR_OVERFLOW, CTR_FILTERED = 0, 1
ETHERTYPES = {0x0800: "ipv4", 0x86DD: "ipv6", 0x0806: "arp", 0x8100: "vlan", 0x88A8: "qinq", 0x88CC: "lldp"}
PREFIXES = ("SKB_DROP_REASON_", "SKB_")


@functools.cache
def drop_reasons() -> dict[int, str]:
    """{value: name} of the running kernel's enum skb_drop_reason ("NO_SOCKET", ...), from its BTF."""
    btf = lib.btf__load_vmlinux_btf()
    if btf == ffi.NULL:
        raise NotSupportedError("the kernel has no BTF (/sys/kernel/btf/vmlinux): drop reasons cannot be named")
    try:
        type_id = lib.btf__find_by_name(btf, b"skb_drop_reason")
        t = lib.btf__type_by_id(btf, type_id) if type_id > 0 else ffi.NULL
        if t == ffi.NULL or lib.btf_kind(t) != lib.BTF_KIND_ENUM:
            raise NotSupportedError("this kernel has no enum skb_drop_reason (linux 5.17 or newer)")
        values = lib.btf_enum(t)
        names = {}
        for i in range(lib.btf_vlen(t)):
            name = ffi.string(lib.btf__name_by_offset(btf, values[i].name_off)).decode()
            names[values[i].val] = next((name[len(p):] for p in PREFIXES if name.startswith(p)), name)
        return names
    finally:
        lib.btf__free(btf)


def reason_name(value: int) -> str:
    """The name of a drop reason value; reasons of other subsystems (high bits set) as SUBSYS_n:CODE."""
    name = drop_reasons().get(value)
    if name is not None:
        return name
    return f"SUBSYS_{value >> 16}:{value & 0xFFFF}" if value >> 16 else f"REASON_{value}"


def protocol_name(ethertype: int) -> str:
    return ETHERTYPES.get(ethertype, f"0x{ethertype:04x}")


class _Kallsyms:
    """Kernel addresses → "function+0xoff" from /proc/kallsyms (read once, when first needed)."""

    @functools.cached_property
    def table(self) -> tuple[list[int], list[str]]:
        addrs, names = [], []
        with open("/proc/kallsyms") as f:
            for line in f:
                addr, kind, name = line.split()[:3]
                if kind in "tT":
                    addrs.append(int(addr, 16))
                    names.append(name)
        order = sorted(range(len(addrs)), key=addrs.__getitem__)
        return [addrs[i] for i in order], [names[i] for i in order]

    def name(self, addr: int) -> str:
        addrs, names = self.table
        i = bisect.bisect_right(addrs, addr) - 1
        if i < 0 or not addrs[i]:  # no symbols (kptr_restrict hides addresses): the raw address
            return hex(addr)
        return f"{names[i]}+{addr - addrs[i]:#x}"


KALLSYMS = _Kallsyms()


class DropsOptions(CardinalityOptions):
    max_entries: int = Field(4096, ge=16, le=1 << 16, description="distinct (reason, interface, protocol) kept")
    stacks: bool = Field(False, description="also key by the kernel function that dropped (its location)")


@register
class DropsMonitor(Monitor):
    kind = "drops"
    summary = "packets the kernel dropped, by drop reason, interface and protocol (tracepoint skb:kfree_skb)"
    Options = DropsOptions
    needs_interface = False
    live_options = frozenset({"top", "ttl"})

    def _start(self) -> None:
        opts: DropsOptions = self.options  # type: ignore[assignment]
        drop_reasons()  # fail early, before anything is loaded, on a kernel without them
        obj = self._own(BPFObject.from_package("monitors/drops"))
        obj.maps["drops_table"].set_max_entries(opts.max_entries)
        obj.set_rodata(netns_inum=_netns.inode(self.netns) if self.netns else 0, with_location=int(opts.stacks))
        obj.load()
        self._table: Map = obj.maps["drops_table"]
        self._counters: Map = obj.maps["drops_counters"]
        self._ncpus = possible_cpus()
        self._series = SeriesTTL(opts.ttl)
        self._keep(attach_tracing(obj, "drops_kfree_skb"))

    def read(self) -> list[dict[str, Any]]:
        """One record per key: reason, interface, protocol, count (and location with stacks)."""
        keys, values, n = self._table.read_raw()
        counts = [sum(c for (c,) in _VALUE.iter_unpack(values[i * 8 * self._ncpus:(i + 1) * 8 * self._ncpus]))
                  for i in range(n)]
        rows = []
        for (location, reason, protocol, ifname), count in zip(_KEY.iter_unpack(keys[:n * _KEY.size]), counts):
            row = {"reason": reason_name(reason), "interface": ifname.split(b"\0", 1)[0].decode(errors="replace"),
                   "protocol": protocol_name(int.from_bytes(protocol.to_bytes(2, "little"), "big")),
                   "count": count}
            if self.options.stacks:  # type: ignore[attr-defined]
                row["location"] = KALLSYMS.name(location)
            rows.append(row)
        rows.sort(key=lambda r: -r["count"])
        return rows

    def snapshot(self) -> dict[str, Any]:
        with self.lock:
            drops = self.read()
            return {"drops": drops, "total": sum(r["count"] for r in drops),
                    "overflow": sum(self._counters.lookup(CTR_OVERFLOW)),
                    "other_netns": sum(self._counters.lookup(CTR_FILTERED)), "self": self.self_cost()}

    def families(self) -> list[Metric]:
        opts: DropsOptions = self.options  # type: ignore[assignment]
        labels = ["reason", "interface", "protocol"] + (["location"] if opts.stacks else [])
        with self.lock:
            current: dict[tuple[str, ...], int] = {}
            for row in self.read():
                key = tuple(row[k] for k in labels)
                current[key] = current.get(key, 0) + row["count"]
            self._series.ttl = opts.ttl
            exported = self._series.observe(current)
            overflow = sum(self._counters.lookup(CTR_OVERFLOW))
        kept, _, _ = top_keys(exported, opts.top)
        drops = CounterMetricFamily("drop", "Packets the kernel dropped, by drop reason", labels=labels)
        for key, count in sorted(kept.items()):
            drops.add_metric(list(key), count)
        return [drops, CounterMetricFamily("drop_overflow", "Drops not counted by key: the table was full",
                                           value=overflow), *self.self_families()]

"""A translated filter compiled and loaded as a standalone program, run in the kernel with BPF_PROG_TEST_RUN.

The object holds two `SEC("tc")` programs around the one translated function:

- `filter_direct` runs it on the test packet itself by direct packet access (data .. data_end, wire
  length skb->len). This is the fast path, and the one the benchmarks time.
- `filter_buffer` runs it on bytes that user space put in the one-entry array map `filter_packet`
  (caplen and wirelen included); the test packet is a dummy. BPF_PROG_TEST_RUN refuses packets shorter
  than an Ethernet header (14 bytes) or longer than a page minus skb overhead (and kernel 6.x also
  an IPv4/IPv6 EtherType without a whole IP header behind it), and the filter must see the true
  captured length, so such packets take this path, as do runs with a wire length that differs from
  the captured length.

Both paths compute the same thing; the differential tests hold them to libpcap's interpreter.
"""
from __future__ import annotations

import errno
import struct
import threading
from collections.abc import Iterable, Sequence
from typing import Self

from ..errors import BPFError, FilterError
from ..object import BPFObject
from ..toolchain import compile_c
from .cbpf import DEFAULT_SNAPLEN, Insn
from .policy import compile_filter
from .translate import MAX_CAPLEN, cbpf_to_c

__all__ = ["PacketFilter", "filter_object_source"]

FUNCTION = "pynetmon_filter"
# BPF_PROG_TEST_RUN for skb programs: at least ETH_HLEN bytes, at most a 4 KiB page minus the skb's
# headroom (NET_SKB_PAD + NET_IP_ALIGN) and tail (the aligned struct skb_shared_info).
MIN_TEST_RUN = 14
MAX_TEST_RUN = 4096 - 64 - 2 - 320
_HEADER = struct.Struct("=II")  # struct filter_buffer: caplen, wirelen, then the bytes

_HARNESS = """\
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

{filters}
struct filter_buffer {{
	__u32 caplen;
	__u32 wirelen;
	__u8 data[{size}];
}};

struct {{
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct filter_buffer);
}} filter_packet SEC(".maps");
{programs}
char LICENSE[] SEC("license") = "GPL";
"""

_PROGRAMS = """
SEC("tc")
int {prefix}direct(struct __sk_buff *skb)
{{
	return {function}((const __u8 *)(long)skb->data, (const __u8 *)(long)skb->data_end, skb->len);
}}

SEC("tc")
int {prefix}buffer(struct __sk_buff *skb)
{{
	__u32 key = 0;
	struct filter_buffer *buf = bpf_map_lookup_elem(&filter_packet, &key);
	if (!buf)
		return 0;
	__u32 caplen = buf->caplen;
	if (caplen > {cap})
		caplen = {cap};
	return {function}(buf->data, buf->data + caplen, buf->wirelen);
}}
"""


def filter_object_source(programs: Iterable[Iterable], names: Iterable[str] | None = None) -> str:
    """C source of one object holding a direct and a buffer program per classic BPF program.

    With `names`, program i is `<names[i]>_direct`/`<names[i]>_buffer`; without, `filter_direct` and
    `filter_buffer` for a single program. Several filters in one object share a clang run and a load.
    """
    programs = [list(p) for p in programs]
    names = list(names) if names is not None else ["filter"] if len(programs) == 1 else None
    if names is None or len(names) != len(programs):
        raise ValueError("give one name per program")
    filters, progs = [], []
    for name, insns in zip(names, programs):
        function = f"{FUNCTION}_{name}"
        filters.append(cbpf_to_c(insns, function))
        progs.append(_PROGRAMS.format(prefix=f"{name}_", function=function, cap=MAX_CAPLEN))
    return _HARNESS.format(filters="\n".join(filters), size=MAX_CAPLEN + 1, programs="".join(progs))


class _SharedObject:
    """One loaded object shared by the filters compiled into it; closed when the last of them is."""

    def __init__(self, source: str):
        self.object = BPFObject(compile_c(source, filename="packet_filter.bpf.c"), name="packet_filter")
        try:
            self.object.load()
        except BaseException:
            self.object.close()
            raise
        self.packet_map = self.object.maps["filter_packet"]
        self.buffer = bytearray(self.packet_map.value_size)
        self.lock = threading.Lock()  # one packet buffer per object
        self.source = source
        self.users = 0

    def release(self) -> None:
        self.users -= 1
        if self.users == 0:
            self.object.close()


def _as_insns(expr_or_insns: str | Iterable[Sequence[int]], snaplen: int) -> tuple[str | None, list[Insn]]:
    # The filter runs on a frame's bytes (BPF_PROG_TEST_RUN), as `tcpdump -r` runs it: offline semantics.
    expr = expr_or_insns if isinstance(expr_or_insns, str) else None
    return expr, compile_filter(expr_or_insns, live=False, snaplen=snaplen)


class PacketFilter:
    """A packet filter (a pcap-filter(7) expression or a classic BPF program) loaded into the kernel.

    >>> with PacketFilter("tcp port 80") as f:
    ...     f.matches(packet)
    True

    `.insns` is the classic BPF program, `.c_source` the C source of the object it was compiled into,
    `.run(packet)` its return value on a packet, computed in the kernel (0 for no match, else the
    bytes to capture). Compiled objects are cached by content (memory and disk), so a filter seen
    before loads in milliseconds. `PacketFilter.load_many` compiles many filters into one object.
    """

    def __init__(self, expr_or_insns: str | Iterable, snaplen: int = DEFAULT_SNAPLEN, *,
                 _shared: tuple[_SharedObject, str, str | None] | None = None):
        if _shared is None:
            self.expr, self.insns = _as_insns(expr_or_insns, snaplen)
            shared, name = _SharedObject(filter_object_source([self.insns])), "filter"
        else:
            shared, name, self.expr = _shared
            self.insns = list(expr_or_insns)  # type: ignore[arg-type]  # load_many compiled and checked them
        self.snaplen = snaplen
        self._shared = shared
        shared.users += 1
        self.c_source = shared.source
        self._direct = shared.object.programs[f"{name}_direct"]
        self._buffered = shared.object.programs[f"{name}_buffer"]
        self._closed = False

    @classmethod
    def load_many(cls, filters: Iterable[str | Iterable], snaplen: int = DEFAULT_SNAPLEN) -> list[PacketFilter]:
        """Compile and load many filters as one object (one clang run, one load); same order as given.

        The object is released when the last of the filters is closed.
        """
        parsed = [_as_insns(f, snaplen) for f in filters]
        if not parsed:
            return []
        names = [f"f{i}" for i in range(len(parsed))]
        source = filter_object_source([insns for _, insns in parsed], names)
        shared = _SharedObject(source)
        return [cls(insns, snaplen, _shared=(shared, name, expr)) for (expr, insns), name in zip(parsed, names)]

    def run(self, packet: bytes, wirelen: int | None = None) -> int:
        """The filter's return value on `packet` (the captured bytes), computed in the kernel.

        `wirelen` is the packet's length on the wire (`len` in filters); it defaults to len(packet).
        Packets up to 65535 bytes are accepted, the largest the verifier lets a filter read.
        """
        if self._closed:
            raise ValueError("run() on a closed PacketFilter")
        packet = bytes(packet)
        caplen = len(packet)
        if caplen > MAX_CAPLEN:
            raise FilterError(f"packet of {caplen} bytes: at most {MAX_CAPLEN} can be filtered")
        if wirelen is None:
            wirelen = caplen
        elif not 0 <= wirelen <= 0xFFFFFFFF:
            raise ValueError(f"wirelen must fit in 32 bits, not {wirelen}")
        if wirelen == caplen and MIN_TEST_RUN <= caplen <= MAX_TEST_RUN:
            try:
                return self._direct.test_run(packet).retval
            except BPFError as exc:
                # Recent kernels also refuse an IPv4/IPv6 EtherType without a whole IP header.
                if exc.errno != errno.EINVAL:
                    raise
        shared = self._shared
        with shared.lock:
            _HEADER.pack_into(shared.buffer, 0, caplen, wirelen)
            shared.buffer[_HEADER.size:_HEADER.size + caplen] = packet
            shared.packet_map.update(0, shared.buffer)
            return self._buffered.test_run(bytes(MIN_TEST_RUN)).retval

    def matches(self, packet: bytes) -> bool:
        """Whether the filter selects `packet` (a non-zero return value)."""
        return self.run(packet) != 0

    def close(self) -> None:
        """Release the kernel program and map (shared ones when the last filter sharing them closes)."""
        if not self._closed:
            self._closed = True
            self._shared.release()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        what = repr(self.expr) if self.expr is not None else f"{len(self.insns)} cBPF instructions"
        return f"<PacketFilter {what}>"

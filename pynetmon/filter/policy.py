"""Which compiler a filter goes through: the one compile policy of pynetmon.

A filter is given as pcap-filter(7) text, as classic BPF instructions, or as None (match nothing). Text
is compiled by libpcap with the semantics of where the filter will run:

* `live=True` — the filter runs in the kernel on a socket buffer, as a packet socket's filter does
  (`PacketCapture`): compiled on a live Linux handle (`tcpdump -i`), so `vlan` reads the tag the kernel
  keeps in skb metadata. Without CAP_NET_RAW (least privilege) there is no live handle: it is compiled
  offline instead, with a warning.
* `live=False` — the filter runs on the bytes of a frame (`PacketFilter`, `tcpdump -r`): compiled on a
  dead handle.

Instructions are checked as the kernel checks a classic program (`check_cbpf`).
"""
from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence

from ..errors import FilterError
from .cbpf import DEFAULT_SNAPLEN, RET, Insn, K, LiveCompileDenied, compile_cbpf, compile_cbpf_live
from .translate import check_cbpf

__all__ = ["NOTHING", "FilterSpec", "compile_filter"]

log = logging.getLogger("pynetmon.filter")

FilterSpec = str | Iterable[Sequence[int]] | None
NOTHING = (Insn(RET | K, 0, 0, 0),)  # None as a filter: match nothing


def compile_filter(spec: FilterSpec, *, live: bool, snaplen: int = DEFAULT_SNAPLEN) -> list[Insn]:
    """Filter text ("all" for everything), classic BPF instructions, or None (nothing) → instructions.

    Raises FilterError with libpcap's message for bad text, `check_cbpf`'s for bad instructions.
    """
    if spec is None:
        return list(NOTHING)
    if isinstance(spec, str):
        if not live:
            return compile_cbpf(spec, snaplen)
        try:
            return compile_cbpf_live(spec, snaplen)
        except LiveCompileDenied as denied:
            # Least privilege (CAP_BPF, CAP_NET_ADMIN, CAP_PERFMON) has no CAP_NET_RAW: compile as
            # `tcpdump -r` does. Only VLAN tests differ: they then read the tag from the frame bytes,
            # so tags the kernel moved into skb metadata are not seen by `vlan`.
            insns = compile_cbpf(spec, snaplen)
            log.warning("%s; compiled %r offline instead (`vlan` will not see tags held in skb "
                        "metadata)", denied, spec)
            return insns
    if not isinstance(spec, Iterable):
        raise FilterError(f"filter must be a pcap-filter expression, classic BPF instructions or None, "
                          f"not {spec!r}")
    return check_cbpf(spec)

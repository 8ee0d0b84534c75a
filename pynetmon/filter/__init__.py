"""Packet filters: pcap-filter(7) text → classic BPF (libpcap) → C (our translator) → eBPF (clang).

>>> from pynetmon.filter import PacketFilter, compile_cbpf, cbpf_to_c
>>> insns = compile_cbpf("udp port 53")
>>> source = cbpf_to_c(insns)             # pure: one C function, see translate.py
>>> with PacketFilter("udp port 53") as f:
...     f.run(packet)                       # libpcap's return value, computed in the kernel

`PacketFilter` needs the BPF core (libbpf, root); the rest needs only libpcap.
"""
from .cbpf import (
    Insn,
    OfflineFilter,
    compile_cbpf,
    compile_cbpf_live,
    disassemble,
    interpret,
    libpcap_version,
)
from .translate import MAX_CAPLEN, cbpf_to_c, check_cbpf

__all__ = [
    "MAX_CAPLEN",
    "Insn",
    "OfflineFilter",
    "PacketFilter",
    "cbpf_to_c",
    "check_cbpf",
    "compile_cbpf",
    "compile_cbpf_live",
    "disassemble",
    "interpret",
    "libpcap_version",
]


def __getattr__(name):
    # PacketFilter pulls in libbpf and the object loader; the translator alone does not need them.
    if name == "PacketFilter":
        from .packet_filter import PacketFilter
        return PacketFilter
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

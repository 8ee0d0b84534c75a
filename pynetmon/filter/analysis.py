"""What a classic BPF program reads and decides, found from its instructions alone: pure functions.

The capture dataplane asks these questions to build as little as it can: `filter_window` is how many
leading bytes of a frame it copies for the filter to read, `constant_verdict` tells a filter that does
not look at the packet (run by the shipped object, no compiler needed).
"""
from __future__ import annotations

from collections.abc import Sequence

from .cbpf import ABS, IND, LD, LDX, LOAD_SIZES, MSH, RET, B, K
from .translate import MAX_CAPLEN

__all__ = ["INDIRECT_REACH", "MAX_WINDOW", "MIN_WINDOW", "constant_verdict", "filter_window"]

# The widest window: a translated filter reads nothing past MAX_PACKET_OFF (bpf/capture.h's
# CAPTURE_MAX_WINDOW is the same number, checked by tests/capture/test_units.py).
MAX_WINDOW = MAX_CAPLEN
# How far past its largest constant offset a filter with variable offsets (ld [x + k]) may read. In
# libpcap's code X holds a header length (at most 60 for IPv4 options, as much again for TCP's),
# so a frame's first k + 1500 bytes leave room to spare; farther reads see the packet end there.
INDIRECT_REACH = 1500
MIN_WINDOW = 16  # a filter that reads at all gets the Ethernet + 802.1Q header in one copy


def filter_window(insns: Sequence[Sequence[int]]) -> int:
    """How many leading bytes of a frame the filter may read (0 when it reads none); pure.

    The capture dataplane copies that many bytes (at most the packet) for the filter, and the rest of
    what is captured only once the filter has matched.
    """
    reach = indirect = 0
    for code, _jt, _jf, k in insns:
        mode = code & 0xE0
        # Loads past the widest window are out of bounds whatever is copied (ancillary loads read skb
        # metadata, not bytes): they widen nothing.
        if code & 0x07 == LD and mode == ABS:
            end = k + LOAD_SIZES[code & 0x18]
            reach = max(reach, end if end <= MAX_WINDOW else 0)
        elif code & 0x07 == LD and mode == IND:
            end = k + LOAD_SIZES[code & 0x18]
            indirect = max(indirect, end + INDIRECT_REACH if end <= MAX_WINDOW else 0)
        elif code == LDX | B | MSH and k < MAX_WINDOW:
            reach = max(reach, k + 1)
    reach = max(reach, indirect)
    if reach == 0:
        return 0
    return min(max(reach, MIN_WINDOW), MAX_WINDOW)


def constant_verdict(insns: Sequence[Sequence[int]]) -> int | None:
    """The filter's return value if it does not depend on the packet (a lone `ret #k`), else None."""
    if len(insns) == 1 and insns[0][0] == RET | K:
        return insns[0][3]
    return None

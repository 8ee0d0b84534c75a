"""Attaching programs to network hooks. One module per mechanism: tcx.py (kernel-owned TC links, linux ≥ 6.6),
clsact.py (qdisc + cls_bpf filter, older kernels), xdp.py (XDP through bpf_link), tracing.py
(tracepoints, tp_btf, fentry/fexit).

`attach_tc` and `attach_xdp` pick the mechanism and return a `Link`; `Link.detach()` removes exactly what
was attached and nothing else.
"""
from __future__ import annotations

from ..program import Program
from .base import DIRECTIONS, Link
from .clsact import ClsactLink, attach_clsact
from .query import tc_programs, xdp_programs
from .tcx import TcxLink, attach_tcx, tcx_supported
from .tracing import TracingLink, attach_tracing
from .xdp import XdpLink, attach_xdp

__all__ = [
    "DIRECTIONS", "ClsactLink", "Link", "TcxLink", "TracingLink", "XdpLink", "attach_tc", "attach_tracing",
    "attach_xdp", "tc_programs", "tcx_supported", "xdp_programs",
]


def attach_tc(program: Program | int, ifname: str | int, direction: str = "ingress", *,
              mechanism: str = "auto", netns: str | None = None) -> Link:
    """Attach a TC program to `ifname`'s ingress or egress.

    `mechanism="auto"` uses a tcx link where the kernel has them (the link is owned by the kernel object,
    so a killed process leaves nothing attached) and clsact + cls_bpf otherwise; `"tcx"` or `"clsact"`
    forces one. `netns` names a network namespace to attach in.

    >>> with attach_tc(obj.programs["count_ingress"], "eth0", "ingress"):
    ...     ...
    """
    if direction not in DIRECTIONS:
        raise ValueError(f"direction must be 'ingress' or 'egress', not {direction!r}")
    if mechanism not in ("auto", "tcx", "clsact"):
        raise ValueError(f"mechanism must be 'auto', 'tcx' or 'clsact', not {mechanism!r}")
    if mechanism == "tcx" or (mechanism == "auto" and tcx_supported()):
        return attach_tcx(program, ifname, direction, netns=netns)
    return attach_clsact(program, ifname, direction, netns=netns)

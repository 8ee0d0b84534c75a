"""XDP through a kernel bpf_link (BPF_LINK_CREATE, attach type BPF_XDP): detached when the process dies."""
from __future__ import annotations

from typing import Any

from .. import netns as _netns
from .._binding import check, ffi, lib
from ..program import Program
from .base import FdLink
from .syscall import link_create

XDP_MODES: dict[str, str | None] = {"auto": None, "skb": "XDP_FLAGS_SKB_MODE", "native": "XDP_FLAGS_DRV_MODE", "drv": "XDP_FLAGS_DRV_MODE",
             "hw": "XDP_FLAGS_HW_MODE"}


class XdpLink(FdLink):
    kind = "xdp"

    def __init__(self, fd: int, mode: str, *args: Any):
        super().__init__(fd, *args)
        self.mode = mode

    def update(self, program: Program | int) -> None:
        fd = program if isinstance(program, int) else program.fd
        check(lib.bpf_link_update(self.fd, fd, ffi.NULL), f"updating XDP link on {self.ifname}")
        self.prog_id = Program.from_fd(fd).id


def attach_xdp(program: Program | int, ifname: str | int, mode: str = "auto", *, netns: str | None = None) -> XdpLink:
    """Attach an XDP program. `mode`: "auto" (driver mode where the driver has it, else generic),
    "skb" (generic XDP), "native" (driver mode; fails where the driver has no XDP support)."""
    if mode not in XDP_MODES:
        raise ValueError(f"XDP mode must be one of {sorted(XDP_MODES)}, not {mode!r}")
    flag = XDP_MODES[mode]
    flags = getattr(lib, flag) if flag else 0
    prog = program if isinstance(program, Program) else Program.from_fd(program)
    with _netns.enter(netns):
        ifindex = _netns.ifindex(ifname)
        fd = check(link_create(prog.fd, ifindex, lib.BPF_XDP, flags),
                   f"attaching {prog.name!r} to {ifname} (XDP, {mode} mode)")
    return XdpLink(fd, mode, ifname, ifindex, "ingress", prog.id, netns)

"""tcx links (linux ≥ 6.6): BPF_LINK_CREATE with attach type BPF_TCX_INGRESS/EGRESS.

libbpf 1.1 predates tcx, so the bpf() syscall is issued directly. The link belongs to its file
descriptor: when the process exits or is killed, the kernel detaches the program.
"""
from __future__ import annotations

import errno
import functools

from .. import netns as _netns
from .._binding import check, ffi, lib
from ..errors import NotSupportedError
from ..program import Program
from . import placement
from .base import FdLink
from .syscall import link_create, prog_query


def tcx_attach_type(direction: str) -> int:
    return lib.PYNETMON_BPF_TCX_INGRESS if direction == "ingress" else lib.PYNETMON_BPF_TCX_EGRESS


@functools.cache
def tcx_supported() -> bool:
    """True when the kernel knows tcx (probed once on loopback with an invalid program fd: EBADF means
    the attach type was accepted, EINVAL means it is unknown)."""
    return link_create(0xFFFFFFFF, 1, lib.PYNETMON_BPF_TCX_INGRESS) == -errno.EBADF


class TcxLink(FdLink):
    kind = "tcx"

    def update(self, program: Program | int) -> None:
        """Swap the program behind the link in one step (BPF_LINK_UPDATE)."""
        fd = program if isinstance(program, int) else program.fd
        check(lib.bpf_link_update(self.fd, fd, ffi.NULL), f"updating tcx link on {self.ifname}")
        self.prog_id = Program.from_fd(fd).id


def _placement_flags(ifindex: int, direction: str) -> tuple[int, int]:
    """(flags, relative program id) that put a new link where `placement.current()` says (none: last)."""
    where = placement.current()
    if where is None:
        return 0, 0
    if where.first:
        return lib.PYNETMON_BPF_F_BEFORE, 0  # before, relative to nothing: at the front
    ret, ids = prog_query(ifindex, tcx_attach_type(direction))
    index = where.index(ids) if ret >= 0 else None
    if index is None or index >= len(ids):
        return 0, 0
    return lib.PYNETMON_BPF_F_BEFORE | lib.PYNETMON_BPF_F_ID, ids[index]


def attach_tcx(program: Program | int, ifname: str | int, direction: str, *, netns: str | None = None) -> TcxLink:
    if not tcx_supported():
        raise NotSupportedError("this kernel has no tcx links (linux 6.6 or newer); use mechanism='clsact'")
    prog = program if isinstance(program, Program) else Program.from_fd(program)
    with _netns.enter(netns):
        ifindex = _netns.ifindex(ifname)
        flags, relative = _placement_flags(ifindex, direction)
        fd = check(link_create(prog.fd, ifindex, tcx_attach_type(direction), flags, relative),
                   f"attaching {prog.name!r} to {ifname} {direction} (tcx)")
    return TcxLink(fd, ifname, ifindex, direction, prog.id, netns)

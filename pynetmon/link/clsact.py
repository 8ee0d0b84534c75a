"""clsact qdisc + direct-action cls_bpf filter: the TC attach path of kernels without tcx.

Etiquette: the clsact qdisc is created only if absent, and removed on detach only if pynetmon created it
and no other filter was added to it since; the filter removed is the one this link added (by handle and
priority), never anyone else's.
"""
from __future__ import annotations

import errno
import socket
from typing import Any

from .. import netns as _netns
from .._binding import check, ffi, lib
from ..program import Program
from .base import Link


def _hook(ifindex: int, direction: str):
    hook = ffi.new("struct bpf_tc_hook *")
    hook.sz = ffi.sizeof("struct bpf_tc_hook")
    hook.ifindex = ifindex
    hook.attach_point = lib.BPF_TC_INGRESS if direction == "ingress" else lib.BPF_TC_EGRESS
    return hook


class ClsactLink(Link):
    kind = "clsact"

    def __init__(self, handle: int, priority: int, created_qdisc: bool, *args: Any):
        super().__init__(*args)
        self.handle = handle
        self.priority = priority
        self.created_qdisc = created_qdisc

    def _opts(self, prog_fd: int = 0, replace: bool = False):
        opts = ffi.new("struct bpf_tc_opts *")
        opts.sz = ffi.sizeof("struct bpf_tc_opts")
        opts.handle = self.handle
        opts.priority = self.priority
        opts.prog_fd = prog_fd
        opts.flags = lib.BPF_TC_F_REPLACE if replace else 0
        return opts

    def update(self, program: Program | int) -> None:
        fd = program if isinstance(program, int) else program.fd
        with _netns.enter(self.netns):
            opts = self._opts(fd, replace=True)
            check(lib.bpf_tc_attach(_hook(self.ifindex, self.direction), opts),
                  f"replacing TC filter on {self.ifname} {self.direction}")
        self.prog_id = opts.prog_id

    def _detach(self) -> None:
        with _netns.enter(self.netns):
            hook = _hook(self.ifindex, self.direction)
            ret = lib.bpf_tc_detach(hook, self._opts())
            if ret < 0 and -ret not in (errno.ENOENT, errno.ENODEV):
                check(ret, f"detaching TC filter from {self.ifname} {self.direction}")
            if self.created_qdisc and _interface_exists(self.ifindex) and not _other_filters(self.ifindex):
                both = _hook(self.ifindex, "ingress")
                both.attach_point = lib.BPF_TC_INGRESS | lib.BPF_TC_EGRESS
                lib.bpf_tc_hook_destroy(both)


def _interface_exists(ifindex: int) -> bool:
    # A deleted interface took its qdisc and filters with it: nothing is left to remove.
    try:
        socket.if_indextoname(ifindex)
    except OSError:
        return False
    return True


def _other_filters(ifindex: int) -> bool:
    from .query import tc_clsact_filters
    return bool(tc_clsact_filters(ifindex))


def attach_clsact(program: Program | int, ifname: str | int, direction: str, *,
                  netns: str | None = None, priority: int = 0) -> ClsactLink:
    prog = program if isinstance(program, Program) else Program.from_fd(program)
    with _netns.enter(netns):
        ifindex = _netns.ifindex(ifname)
        hook = _hook(ifindex, direction)
        ret = lib.bpf_tc_hook_create(hook)
        if ret < 0 and -ret != errno.EEXIST:
            check(ret, f"creating clsact qdisc on {ifname}")
        created = ret == 0
        opts = ffi.new("struct bpf_tc_opts *")
        opts.sz = ffi.sizeof("struct bpf_tc_opts")
        opts.prog_fd = prog.fd
        opts.priority = priority
        try:
            check(lib.bpf_tc_attach(hook, opts), f"attaching {prog.name!r} to {ifname} {direction} (clsact)")
        except Exception:
            if created:
                hook.attach_point = lib.BPF_TC_INGRESS | lib.BPF_TC_EGRESS
                lib.bpf_tc_hook_destroy(hook)
            raise
    return ClsactLink(opts.handle, opts.priority, created, ifname, ifindex, direction, opts.prog_id, netns)

"""The bpf() commands that libbpf 1.1 cannot issue for tcx (and that XDP links share): BPF_LINK_CREATE and
BPF_PROG_QUERY, with `union bpf_attr`'s members filled by name (declared once, in
pynetmon/_cffi_src/syscall.h, laid out as linux 6.6+ has them)."""
from __future__ import annotations

from .._binding import ffi, lib

__all__ = ["QUERY_MAX_IDS", "link_create", "prog_query"]

QUERY_MAX_IDS = 64  # programs one hook query reports at most


def link_create(prog_fd: int, ifindex: int, attach_type: int, flags: int = 0, relative: int = 0) -> int:
    """BPF_LINK_CREATE: the new link's fd, or -errno (for the caller to check or to probe with).
    `relative`: tcx's relative_fd (a program id with BPF_F_ID in `flags`)."""
    attr = ffi.new("union pynetmon_bpf_attr *")
    create = attr.link_create
    create.prog_fd = prog_fd
    create.target_ifindex = ifindex
    create.attach_type = attach_type
    create.flags = flags
    create.relative_fd = relative
    return lib.pynetmon_bpf_syscall(lib.BPF_LINK_CREATE, attr)


def prog_query(ifindex: int, attach_type: int) -> tuple[int, list[int]]:
    """BPF_PROG_QUERY on an interface's hook: (0 or -errno, the attached program ids in order)."""
    ids = ffi.new("__u32[]", QUERY_MAX_IDS)
    attr = ffi.new("union pynetmon_bpf_attr *")
    query = attr.query
    query.target_ifindex = ifindex
    query.attach_type = attach_type
    query.prog_ids = int(ffi.cast("uintptr_t", ids))
    query.count = QUERY_MAX_IDS
    ret = lib.pynetmon_bpf_syscall(lib.BPF_PROG_QUERY, attr)
    if ret < 0:
        return ret, []
    return ret, [ids[i] for i in range(min(query.count, QUERY_MAX_IDS))]

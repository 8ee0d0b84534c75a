"""What is attached where: tcx hooks (BPF_PROG_QUERY, which bpftool 7.1 cannot show), clsact filters
(bpf_tc_query) and XDP (bpf_xdp_query). Used by tests to prove that nothing is left behind."""
from __future__ import annotations

import errno
import struct

from .. import netns as _netns
from .._binding import ffi, lib
from ..errors import Error
from .tcx import tcx_attach_type, tcx_supported

_QUERY = struct.Struct("=IIIIQI4xQQQQ")


def tc_programs(ifname: str | int, direction: str, *, netns: str | None = None) -> list[int]:
    """Program ids attached to the interface's tcx hook in `direction` (empty without tcx)."""
    if not tcx_supported():
        return []
    with _netns.enter(netns):
        ifindex = _netns.ifindex(ifname)
        ids = ffi.new("__u32[]", 64)
        buf = ffi.new("uint8_t[]", 128)
        attr = _QUERY.pack(ifindex, tcx_attach_type(direction), 0, 0, int(ffi.cast("uintptr_t", ids)), 64, 0, 0, 0, 0)
        ffi.memmove(buf, attr, len(attr))
        ret = lib.pynetmon_bpf_syscall(lib.PYNETMON_BPF_PROG_QUERY, buf, 128)
    if ret < 0:
        if -ret in (errno.ENOENT, errno.EINVAL):
            return []
        from .._binding import check
        check(ret, f"BPF_PROG_QUERY on {ifname} {direction}")
    count = struct.unpack_from("=I", ffi.buffer(buf, 128), 24)[0]
    return [ids[i] for i in range(min(count, 64))]


def tc_clsact_filters(ifindex: int) -> list[str]:
    """The filters on both clsact hooks of the interface, as `tc` prints them (one line each).

    The bpf_tc_query() API needs a handle and priority to look one filter up; a dump of everything
    needs netlink, which `tc` already speaks, so this fallback-path helper asks it.
    """
    import socket
    import subprocess
    ifname = socket.if_indextoname(ifindex)
    lines = []
    for hook in ("ingress", "egress"):
        out = subprocess.run(["tc", "filter", "show", "dev", ifname, hook], capture_output=True, text=True,
                             check=False)
        if out.returncode != 0:  # unknown is not "none": the caller would remove a qdisc others use
            raise Error(f"`tc filter show dev {ifname} {hook}` failed: {out.stderr.strip()}")
        lines += [line for line in out.stdout.splitlines() if " handle " in line]
    return lines


def xdp_programs(ifname: str | int, *, netns: str | None = None) -> dict[str, int]:
    """{"drv": id, "skb": id, "hw": id} of the XDP programs on the interface (0 where none)."""
    with _netns.enter(netns):
        ifindex = _netns.ifindex(ifname)
        opts = ffi.new("struct bpf_xdp_query_opts *", {"sz": ffi.sizeof("struct bpf_xdp_query_opts")})
        ret = lib.bpf_xdp_query(ifindex, 0, opts)
    if ret < 0:
        return {"drv": 0, "skb": 0, "hw": 0}
    return {"drv": opts.drv_prog_id, "skb": opts.skb_prog_id, "hw": opts.hw_prog_id}

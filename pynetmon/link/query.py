"""What is attached where: tcx hooks (BPF_PROG_QUERY, which bpftool 7.1 cannot show), clsact filters
(bpf_tc_query) and XDP (bpf_xdp_query). Used by tests to prove that nothing is left behind."""
from __future__ import annotations

import errno

from .. import netns as _netns
from .._binding import check, ffi, lib
from ..errors import Error
from .syscall import prog_query
from .tcx import tcx_attach_type, tcx_supported


def tc_programs(ifname: str | int, direction: str, *, netns: str | None = None) -> list[int]:
    """Program ids attached to the interface's tcx hook in `direction` (empty without tcx)."""
    if not tcx_supported():
        return []
    with _netns.enter(netns):
        ifindex = _netns.ifindex(ifname)
        ret, ids = prog_query(ifindex, tcx_attach_type(direction))
    if -ret in (errno.ENOENT, errno.EINVAL):
        return []
    check(ret, f"BPF_PROG_QUERY on {ifname} {direction}")
    return ids


# Parents of the two clsact hooks: TC_H_MAKE(TC_H_CLSACT, TC_H_MIN_INGRESS / TC_H_MIN_EGRESS).
CLSACT_PARENTS = {"ingress": 0xFFFFFFF2, "egress": 0xFFFFFFF3}


def tc_clsact_filters(ifindex: int) -> list[dict]:
    """Every filter on both clsact hooks of the interface (in the calling thread's namespace):
    [{"hook", "kind", "handle", "priority"}, ...].

    bpf_tc_query() can only look up a filter whose handle and priority are already known; a dump of
    everything needs a netlink RTM_GETTFILTER dump, which pyroute2 speaks.
    """
    from pyroute2 import IPRoute
    from pyroute2.netlink.exceptions import NetlinkError

    found = []
    try:
        with IPRoute() as ipr:
            for hook, parent in CLSACT_PARENTS.items():
                for msg in ipr.get_filters(index=ifindex, parent=parent):
                    if msg["handle"]:  # the dump also lists each chain/priority head, which has no handle
                        found.append({"hook": hook, "kind": msg.get_attr("TCA_KIND"), "handle": msg["handle"],
                                      "priority": msg["info"] >> 16})
    except NetlinkError as exc:  # unknown is not "none": the caller would remove a qdisc others use
        raise Error(f"listing the clsact filters of interface {ifindex} failed: {exc}") from None
    return found


def xdp_programs(ifname: str | int, *, netns: str | None = None) -> dict[str, int]:
    """{"drv": id, "skb": id, "hw": id} of the XDP programs on the interface (0 where none)."""
    with _netns.enter(netns):
        ifindex = _netns.ifindex(ifname)
        opts = ffi.new("struct bpf_xdp_query_opts *", {"sz": ffi.sizeof("struct bpf_xdp_query_opts")})
        ret = lib.bpf_xdp_query(ifindex, 0, opts)
    if ret < 0:
        return {"drv": 0, "skb": 0, "hw": 0}
    return {"drv": opts.drv_prog_id, "skb": opts.skb_prog_id, "hw": opts.hw_prog_id}

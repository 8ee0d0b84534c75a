"""Polycube's `cube:port` names (`polycubectl attach mysniffer br1:toveth1`: port `toveth1` of cube `br1`)
mapped to the network interface pynetmon attaches to.

pynetmon hosts no bridges or routers: the Linux bridge (or bond, or VRF) is the cube, its member interface
the port. `br1:veth1` names interface `veth1` enslaved to `br1`; a monitor attached there sees what the
Polycube cube's port `toveth1` would (ingress: frames from the port into the bridge; egress: frames the
bridge sends out of it). Polycube's port names are its own; its documentation names them `to<peer>`
(`br1:toveth1` peers with `veth1`), so when no interface is called `toveth1`, `veth1` is taken (still
checked to be a port of `br1`). A name without ':' is an interface name, as before.
"""
from __future__ import annotations

from .. import netns as _netns
from ..errors import InterfaceNotFoundError
from .problems import ApiError


def split_port(port: str) -> tuple[str | None, str]:
    """("br1", "veth1") for "br1:veth1"; (None, "eth0") for "eth0"."""
    master, sep, member = port.partition(":")
    return (master, member) if sep else (None, port)


def candidates(port: str) -> set[str]:
    """The interface names `port` may stand for (without looking at the interfaces)."""
    master, member = split_port(port)
    return {member, member[2:]} if master is not None and member.startswith("to") and len(member) > 2 else {member}


def resolve_port(port: str, netns: str | None) -> str:
    """The interface `port` names in namespace `netns`: itself, or for `MASTER:MEMBER` the interface
    MEMBER after checking that MASTER is its master. InterfaceNotFoundError (404) naming the missing one;
    ApiError(409) when MEMBER is not a port of MASTER."""
    master, member = split_port(port)
    if master is None:
        return member
    from pyroute2 import IPRoute  # imported here: only cube:port names need it

    with _netns.enter(netns), IPRoute() as ipr:
        master_index = ipr.link_lookup(ifname=master)
        if not master_index:
            raise InterfaceNotFoundError(master)
        found = ipr.link_lookup(ifname=member)
        if not found and member.startswith("to") and len(member) > 2:
            found = ipr.link_lookup(ifname=member[2:])  # Polycube's `to<peer>` port names
            member = member[2:] if found else member
        if not found:
            raise InterfaceNotFoundError(member)
        link = ipr.get_links(found[0])[0]
        actual = link.get_attr("IFLA_MASTER")
        if actual != master_index[0]:
            now = ipr.get_links(actual)[0].get_attr("IFLA_IFNAME") if actual else None
            raise ApiError(409, f"{member!r} is not a port of {master!r} "
                                f"({'its master is ' + repr(now) if now else 'it has no master'})",
                           [("port", f"{member} is not enslaved to {master}")])
    return member

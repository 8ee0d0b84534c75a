"""Where a Dynmon's programs are attached, and replacing them without a gap.

One interface at a time. Attach modes: "tc" (both paths on TC: tcx where the kernel has it, else clsact),
"xdp_skb" / "xdp_drv" (the ingress path on XDP in generic or driver mode; XDP has no egress hook, so the
egress path stays on TC egress).

`apply()` moves the attachment to a new set of programs as one transaction: each existing link is
updated in place (BPF_LINK_UPDATE for tcx/XDP links, a replacing filter change for clsact), so packets
are never left unmonitored; if any step fails, the steps already done are undone and the old programs
stay attached.
"""
from __future__ import annotations

import logging
from collections.abc import Mapping

from .. import netns as _netns
from ..link import Link, attach_tc
from ..link.xdp_chain import attach_xdp_chained
from ..program import Program

log = logging.getLogger("pynetmon.dynmon")
MODES = {"tc": None, "xdp_skb": "skb", "xdp_drv": "native"}


def ingress_hook(mode: str) -> str:
    """The hook the ingress path runs on in `mode` ("tc" or "xdp"); egress always runs on TC."""
    check_mode(mode)
    return "tc" if mode == "tc" else "xdp"


def check_mode(mode: str) -> None:
    if mode not in MODES:
        raise ValueError(f"attach mode must be one of {', '.join(MODES)}, not {mode!r}")


class Attachment:
    """The links of one Dynmon on one interface, by direction."""

    def __init__(self, ifname: str, mode: str = "tc", netns: str | None = None):
        """InterfaceNotFoundError names `ifname` when it does not exist (in `netns`), also when there is no
        program to attach yet: a monitor attached to nothing would silently count nothing."""
        check_mode(mode)
        with _netns.enter(netns):
            self.ifindex = _netns.ifindex(ifname)
        self.ifname = ifname
        self.mode = mode
        self.netns = netns
        self.links: dict[str, Link] = {}
        self.programs: dict[str, Program] = {}

    def _attach(self, direction: str, program: Program) -> Link:
        if direction == "ingress" and self.mode != "tc":
            # Chained: several XDP monitors run on one interface in attach order (link/xdp_chain.py).
            return attach_xdp_chained(program, self.ifname, MODES[self.mode], netns=self.netns)
        return attach_tc(program, self.ifname, direction, netns=self.netns)

    def apply(self, programs: Mapping[str, Program | None]) -> None:
        """Attach, replace or detach so that exactly `programs` run (None: nothing on that direction).

        Directions not in `programs` are left as they are. All or nothing: on failure, what was done is
        undone and the exception propagates.
        """
        undo: list[tuple[str, str, Program | None]] = []
        try:
            for direction, program in programs.items():
                if program is None:
                    continue
                link = self.links.get(direction)
                if link is None:
                    self.links[direction] = self._attach(direction, program)
                    undo.append(("attached", direction, None))
                elif self.programs.get(direction) is not program:
                    link.update(program)
                    undo.append(("updated", direction, self.programs[direction]))
                self.programs[direction] = program
        except BaseException:
            self._undo(undo)
            raise
        for direction, program in programs.items():
            if program is None and direction in self.links:
                self.links.pop(direction).detach()
                self.programs.pop(direction, None)

    def _undo(self, undo: list[tuple[str, str, Program | None]]) -> None:
        for action, direction, previous in reversed(undo):
            try:
                if action == "attached":
                    self.links.pop(direction).detach()
                    self.programs.pop(direction, None)
                else:
                    self.links[direction].update(previous)
                    self.programs[direction] = previous
            except Exception:
                log.exception("could not undo %s of the %s program on %s", action, direction, self.ifname)

    def detach(self) -> None:
        """Remove every link (only what this attachment created)."""
        errors = []
        for direction in list(self.links):
            try:
                self.links.pop(direction).detach()
            except Exception as exc:  # noqa: BLE001 - detach the other direction anyway
                errors.append(exc)
            self.programs.pop(direction, None)
        if errors:
            raise errors[0]

    def describe(self) -> dict:
        return {"ifname": self.ifname, "mode": self.mode, "netns": self.netns,
                "links": {d: {"kind": link.kind, "program_id": link.prog_id} for d, link in self.links.items()}}

"""Several XDP programs on one interface, in a documented order, the way Polycube chains cubes.

The kernel runs one XDP program per interface. libxdp's dispatcher runs several by replacing stub
functions of a dispatcher program with the users' programs (freplace, BPF_PROG_TYPE_EXT); this machine's
kernel refuses to load EXT programs (EPERM, as it refuses fentry), so pynetmon chains by tail calls
instead: the first program of the chain is attached (one XDP link), and each program that lets a packet
pass hands it to the next one by tail-calling slot 0 of its own one-slot PROG_ARRAY named `pnm_xdp_next`
(dynmon's generated XDP wrapper has it: pynetmon/dynmon/dialect.py). An empty slot ends the chain and the
packet passes. A program that drops ends the chain for that packet.

Order: programs run in the order they joined (or where `placement.placed()` puts them); leaving closes the gap (the previous program's slot points
to the next one, or the link moves to the second program when the first leaves), each step a single
atomic map update or BPF_LINK_UPDATE, so packets are never left unmonitored by the programs that stay.

A program without `pnm_xdp_next` (a foreign or precompiled XDP program) can only be the last of a chain.
"""
from __future__ import annotations

import errno
import threading

from .. import netns as _netns
from ..btf_codec import IntCodec
from ..errors import BPFError, NotSupportedError
from ..maps import Map
from ..program import Program
from . import placement
from .base import Link
from .xdp import XdpLink, attach_xdp

NEXT_MAP = "pnm_xdp_next"

_lock = threading.Lock()
_chains: dict[tuple[int, int], XdpChain] = {}


class XdpChainError(BPFError):
    """A program cannot join or move in an interface's XDP chain (the message says why); errno EBUSY, as
    the kernel's own answer when an interface's XDP hook is taken."""

    def __init__(self, what: str):
        super().__init__(errno.EBUSY, what)


def next_map(program: Program) -> Map | None:
    """The one-slot PROG_ARRAY through which `program` passes packets on, or None."""
    from .._binding import check, lib

    try:
        ids = program.map_ids()
    except NotSupportedError:  # a stale build of the binding: the program is treated as unchainable
        return None
    for map_id in ids:
        fd = check(lib.bpf_map_get_fd_by_id(map_id), f"opening map {map_id} of program {program.name!r}")
        m = Map.from_fd(fd, IntCodec(4), IntCodec(4), owned=True)
        if m.name == NEXT_MAP and m.type == "prog_array":
            return m
        m.close()
    return None


class _Member:
    def __init__(self, program: Program):
        self.program = program
        self.next = next_map(program)


class XdpChain:
    """The XDP programs pynetmon runs on one interface, first to last."""

    def __init__(self, ifname: str | int, ifindex: int, mode: str, netns: str | None):
        self.ifname, self.ifindex, self.mode, self.netns = ifname, ifindex, mode, netns
        self.members: list[_Member] = []
        self.link: XdpLink | None = None

    def _point(self, member: _Member | None, target: _Member | None) -> None:
        """Make `member` (None: the XDP link) hand packets to `target` (None: to nobody)."""
        if member is None:
            if target is None:
                if self.link is not None:
                    self.link.detach()
                    self.link = None
            elif self.link is None:
                self.link = attach_xdp(target.program, self.ifname, self.mode, netns=self.netns)
            else:
                self.link.update(target.program)
            return
        if member.next is None:
            if target is None:
                return
            raise XdpChainError(f"XDP program {member.program.name!r} on {self.ifname} cannot pass packets on "
                                f"(it has no {NEXT_MAP} map): only the last program of a chain may be such a "
                                "program; attach the others on TC, or attach this one last")
        if target is None:
            try:
                member.next.delete(0)
            except KeyError:
                pass
        else:
            member.next.update(0, target.program.fd)

    def join(self, program: Program, mode: str, index: int | None = None) -> _Member:
        """Insert `program` at `index` (None: last): it first points to the one that will follow it, then
        the one before it (or the link) points to it, so no packet skips a program that stays."""
        if self.members and mode != self.mode:
            raise XdpChainError(f"{self.ifname} runs XDP in {self.mode} mode; a program in {mode} mode cannot "
                                "join its chain")
        index = len(self.members) if index is None else max(0, min(index, len(self.members)))
        member = _Member(program)
        following = self.members[index] if index < len(self.members) else None
        self._point(member, following)  # also clears a slot left from an earlier chain
        self._point(self.members[index - 1] if index else None, member)
        self.members.insert(index, member)
        return member

    def replace(self, member: _Member, program: Program) -> None:
        i = self.members.index(member)
        new = _Member(program)
        following = self.members[i + 1] if i + 1 < len(self.members) else None
        self._point(new, following)  # the new program passes on to the same one before it runs
        self._point(self.members[i - 1] if i else None, new)
        # The member keeps its identity (its XdpChainLink holds it). The old program's slot is left as it
        # is: a packet it is running on another CPU right now still reaches the programs after it; it is
        # out of the chain and unloaded by its owner.
        if member.next is not None:
            member.next.close()
        member.program, member.next = new.program, new.next

    def leave(self, member: _Member) -> None:
        i = self.members.index(member)
        following = self.members[i + 1] if i + 1 < len(self.members) else None
        self._point(self.members[i - 1] if i else None, following)
        self.members.pop(i)
        # Its slot is cleared: joining again later (at the end) must not make it point back into the
        # chain, which would loop until the kernel's tail-call limit (33) and count packets many times.
        self._point(member, None)
        if member.next is not None:
            member.next.close()

    def program_ids(self) -> list[int]:
        return [m.program.id for m in self.members]


class XdpChainLink(Link):
    """One program's place in its interface's XDP chain (a `Link`: update() and detach())."""

    kind = "xdp"

    def __init__(self, chain: XdpChain, member: _Member, key: tuple[int, int]):
        super().__init__(chain.ifname, chain.ifindex, "ingress", member.program.id, chain.netns)
        self._chain, self._member, self._key = chain, member, key

    @property
    def position(self) -> int:
        """0 for the program that runs first."""
        with _lock:
            return self._chain.members.index(self._member)

    def update(self, program: Program | int) -> None:
        prog = program if isinstance(program, Program) else Program.from_fd(program)
        with _lock:
            self._chain.replace(self._member, prog)
        self.prog_id = prog.id

    def _detach(self) -> None:
        with _lock:
            self._chain.leave(self._member)
            if not self._chain.members:
                _chains.pop(self._key, None)


def attach_xdp_chained(program: Program | int, ifname: str | int, mode: str = "auto", *,
                       netns: str | None = None) -> XdpChainLink:
    """Attach `program` in `ifname`'s XDP chain, last or where `placement.placed()` says (the first one
    attaches the chain). XdpChainError
    when the program before it cannot pass packets on or the mode differs; the kernel's EBUSY when a
    program pynetmon did not attach holds the interface's XDP hook."""
    prog = program if isinstance(program, Program) else Program.from_fd(program)
    with _netns.enter(netns):
        ifindex = _netns.ifindex(ifname)
    key = (_netns.inode(netns), ifindex)
    with _lock:
        chain = _chains.get(key)
        if chain is None:
            chain = XdpChain(ifname, ifindex, mode, netns)
        where = placement.current()
        member = chain.join(prog, mode, where.index(chain.program_ids()) if where else None)
        _chains[key] = chain
    return XdpChainLink(chain, member, key)


def chain_of(ifname: str | int, netns: str | None = None) -> list[int]:
    """The ids of the programs pynetmon chains on `ifname`'s XDP hook, first to run first."""
    with _netns.enter(netns):
        ifindex = _netns.ifindex(ifname)
    with _lock:
        chain = _chains.get((_netns.inode(netns), ifindex))
        return chain.program_ids() if chain else []

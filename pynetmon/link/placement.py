"""Where a new TC or XDP program goes among those already on its hook, as Polycube's `attach` places a
transparent cube (`position=first|last|auto`, `before=CUBE`, `after=CUBE`).

    with placed(first=True):
        monitor.attach("eth0")           # every tcx link and XDP chain member created here goes first

A placement applies to the links created inside the `with` block, in this thread (a context variable):
the attach functions of tcx.py and xdp_chain.py read it, so code between the caller and the link (a
Dynmon, a PacketCapture, a ready monitor) needs no new argument. Without a placement a program goes last.
`before`/`after` are program ids: the new program goes before the first of them on the hook (after the
last of them); when none of them is on that hook, it goes last. clsact (kernels without tcx) has no order
that pynetmon sets: a placement is ignored there.
"""
from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator, Sequence
from contextvars import ContextVar
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Placement:
    first: bool = False
    before: frozenset[int] = field(default_factory=frozenset)
    after: frozenset[int] = field(default_factory=frozenset)

    def index(self, ids: Sequence[int]) -> int | None:
        """Where to insert among `ids` (the hook's program ids, first to run first); None: at the end."""
        if self.first:
            return 0
        if self.before:
            return next((i for i, pid in enumerate(ids) if pid in self.before), None)
        if self.after:
            last = max((i for i, pid in enumerate(ids) if pid in self.after), default=None)
            return None if last is None else last + 1
        return None


_current: ContextVar[Placement | None] = ContextVar("pynetmon_link_placement", default=None)


@contextlib.contextmanager
def placed(*, first: bool = False, before: Iterable[int] = (), after: Iterable[int] = ()) -> Iterator[Placement]:
    """Links created inside go first, or before/after the programs with these ids (see the module doc)."""
    placement = Placement(first, frozenset(before), frozenset(after))
    if sum((placement.first, bool(placement.before), bool(placement.after))) > 1:
        raise ValueError("give one of first, before and after")
    token = _current.set(placement)
    try:
        yield placement
    finally:
        _current.reset(token)


def current() -> Placement | None:
    """The placement in force in this thread, or None (last)."""
    return _current.get()

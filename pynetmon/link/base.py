"""The common shape of every attachment."""
from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any, Self

if TYPE_CHECKING:
    from ..program import Program

# The two TC hooks of an interface, in the order of the kernel's BPF_TCX_INGRESS/BPF_TCX_EGRESS (and of
# bpf/capture.h's enum capture_direction, whose index keys the capture counters).
DIRECTIONS = ("ingress", "egress")


class Link:
    """Something pynetmon attached. `detach()` is idempotent; a Link is also a context manager."""

    kind = "link"

    def __init__(self, ifname: str | int, ifindex: int, direction: str, prog_id: int, netns: str | None):
        self.ifname = ifname
        self.ifindex = ifindex
        self.direction = direction
        self.prog_id = prog_id
        self.netns = netns
        self.attached = True

    def detach(self) -> None:
        if self.attached:
            self.attached = False
            self._detach()

    def _detach(self) -> None:
        raise NotImplementedError

    def update(self, program: Program | int) -> None:
        """Replace the attached program atomically (no moment without a program)."""
        raise NotImplementedError

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.detach()

    def __repr__(self):
        state = "attached" if self.attached else "detached"
        where = f" in {self.netns}" if self.netns else ""
        return f"<{type(self).__name__} prog {self.prog_id} on {self.ifname}{where} {self.direction} {state}>"


class FdLink(Link):
    """A kernel bpf_link: closing the last descriptor detaches (also when the process dies)."""

    def __init__(self, fd: int, *args: Any):
        super().__init__(*args)
        self.fd = fd

    def _detach(self) -> None:
        os.close(self.fd)
        self.fd = -1

    def __del__(self):
        try:
            self.detach()
        except Exception:  # noqa: BLE001, S110 - interpreter shutdown
            pass

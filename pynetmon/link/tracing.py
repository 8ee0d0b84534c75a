"""Tracing attachments: tracepoints (`SEC("tracepoint/CATEGORY/NAME")`), BTF tracepoints and fentry/fexit
(`SEC("tp_btf/NAME")`, `SEC("fentry/FUNC")`, whose target is fixed at load time), raw tracepoints and
iterators (`SEC("iter/tcp")`, run with `TracingLink.run_iterator()`), through libbpf's attach functions. Every one gives a kernel bpf_link: detaching destroys it, and a
process that dies leaves nothing attached.

Tracepoints are global: a program sees the events of every network namespace, so the monitors that use
them filter by namespace inode in the kernel (`pynetmon.netns.inode`).

>>> link = attach_tracing(obj, "on_kfree_skb")   # SEC("tp_btf/kfree_skb")
>>> link.detach()
"""
from __future__ import annotations

import os
from typing import Any

from .._binding import captured_libbpf_output, check, check_ptr, ffi, lib
from ..errors import Error
from ..object import BPFObject
from ..program import Program
from .base import Link

_TRACE_PREFIXES = ("fentry/", "fexit/", "fmod_ret/", "tp_btf/")


class TracingLink(Link):
    """A tracepoint, tp_btf, fentry/fexit or raw tracepoint link. `target` is what it hooks
    ("tracepoint/skb/kfree_skb", "tp_btf/kfree_skb", "fentry/tcp_rcv_established")."""

    kind = "tracing"

    def __init__(self, ptr: Any, target: str, prog_id: int):
        super().__init__(target, 0, "", prog_id, None)
        self._ptr = ptr
        self.target = target

    def _detach(self) -> None:
        lib.bpf_link__destroy(self._ptr)
        self._ptr = ffi.NULL

    def __del__(self):
        try:
            self.detach()
        except Exception:  # noqa: BLE001, S110 - interpreter shutdown
            pass

    def __repr__(self) -> str:
        state = "attached" if self.attached else "detached"
        return f"<TracingLink prog {self.prog_id} on {self.target} {state}>"

    def run_iterator(self, limit: int = 1 << 24) -> bytes:
        """For an `iter/...` link: run the iterator once (BPF_ITER_CREATE, then read to the end) and
        return what the program wrote (at most `limit` bytes). Iterators of network objects walk the
        network namespace of the calling thread (enter one with `pynetmon.netns.enter`)."""
        if not self.target.startswith("iter/"):
            raise Error(f"{self.target} is not an iterator")
        if not self.attached:
            raise Error(f"the iterator {self.target} is detached")
        fd = check(lib.bpf_iter_create(lib.bpf_link__fd(self._ptr)), f"BPF_ITER_CREATE for {self.target}")
        chunks, size = [], 0
        try:
            while size < limit:
                chunk = os.read(fd, min(1 << 16, limit - size))
                if not chunk:
                    break
                chunks.append(chunk)
                size += len(chunk)
        finally:
            os.close(fd)
        return b"".join(chunks)


def _program(obj: BPFObject, name: str):
    if not obj.loaded:
        raise Error(f"object {obj.name!r} must be loaded before its program {name!r} is attached")
    ptr = lib.bpf_object__find_program_by_name(obj._ptr, name.encode())
    if ptr == ffi.NULL:
        raise Error(f"object {obj.name!r} has no program {name!r}; it has {', '.join(obj.programs)}")
    return ptr


def attach_tracing(obj: BPFObject, name: str, target: str | None = None) -> TracingLink:
    """Attach program `name` of the loaded `obj` to its hook.

    Without `target` the hook is the program's section: `tracepoint/CAT/NAME`, `tp_btf/NAME`,
    `fentry/FUNC`, `fexit/FUNC`, `raw_tracepoint/NAME`. `target` overrides it for tracepoints
    ("CAT/NAME") and raw tracepoints ("NAME") of programs in a generic section.
    """
    prog = _program(obj, name)
    live = obj.programs[name]
    prog_id = live.id if isinstance(live, Program) else 0
    section = ffi.string(lib.bpf_program__section_name(prog)).decode()
    kind, _, hook = section.partition("/")
    if target is not None:
        hook = target
    what = f"attaching {name!r} to {kind}/{hook}"
    with captured_libbpf_output() as lines:
        if kind in ("tracepoint", "tp"):
            category, _, event = hook.partition("/")
            if not category or not event:
                raise Error(f"{what}: a tracepoint is CATEGORY/NAME, not {hook!r}")
            ptr = lib.bpf_program__attach_tracepoint(prog, category.encode(), event.encode())
        elif kind in ("raw_tracepoint", "raw_tp"):
            ptr = lib.bpf_program__attach_raw_tracepoint(prog, hook.encode())
        elif kind == "iter":
            ptr = lib.bpf_program__attach_iter(prog, ffi.NULL)
        elif section.startswith(_TRACE_PREFIXES):
            if target is not None:
                raise Error(f"{what}: the target of a {kind} program is fixed when it loads")
            ptr = lib.bpf_program__attach_trace(prog)
        else:
            raise Error(f"{what}: section {section!r} is not a tracing hook")
    detail = "".join(lines).strip().replace("libbpf: ", "") or None
    ptr = check_ptr(ptr, what, detail)
    return TracingLink(ptr, f"{kind}/{hook}", prog_id)

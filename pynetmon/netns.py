"""Network namespaces: run the calling thread inside a named namespace for a while.

setns(CLONE_NEWNET) changes only the calling thread, so other threads of the process keep their own
namespace. Interface names, attaching and sockets opened inside the block all resolve in the namespace.
"""
from __future__ import annotations

import contextlib
import os
import socket

from ._binding import check, lib
from .errors import Error, InterfaceNotFoundError

NETNS_DIR = "/run/netns"


def _setns(fd: int, what: str) -> None:
    if lib.setns(fd, lib.CLONE_NEWNET) != 0:
        from ._binding import ffi
        check(-ffi.errno, f"setns into {what}")


@contextlib.contextmanager
def enter(name: str | None):
    """Run the block in network namespace `name` (from /run/netns); `None` means "stay where you are"."""
    if name is None:
        yield
        return
    try:
        target = os.open(os.path.join(NETNS_DIR, name), os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        raise Error(f"no network namespace named {name!r} (looked in {NETNS_DIR})") from None
    original = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    try:
        _setns(target, f"network namespace {name!r}")
        try:
            yield
        finally:
            _setns(original, "the original network namespace")
    finally:
        os.close(target)
        os.close(original)


def ifindex(ifname: str | int) -> int:
    """The index of an interface in the calling thread's namespace; InterfaceNotFoundError names it."""
    if isinstance(ifname, int):
        return ifname
    try:
        return socket.if_nametoindex(ifname)
    except OSError:
        raise InterfaceNotFoundError(ifname) from None

"""Network namespaces: run the calling thread inside a named namespace for a while.

setns(CLONE_NEWNET) changes only the calling thread, so other threads of the process keep their own
namespace. Interface names, attaching and sockets opened inside the block all resolve in the namespace.
"""
from __future__ import annotations

import contextlib
import fcntl
import os
import socket
from collections.abc import Iterator

from ._binding import check, lib
from .errors import Error, InterfaceNotFoundError

NETNS_DIR = "/run/netns"


def _setns(fd: int, what: str) -> None:
    if lib.setns(fd, lib.CLONE_NEWNET) != 0:
        from ._binding import ffi
        check(-ffi.errno, f"setns into {what}")


NS_GET_NSTYPE = 0xB703  # _IO(0xb7, 0x3) of <linux/nsfs.h>: the CLONE_NEW* type of a namespace file
SO_NETNS_COOKIE = getattr(socket, "SO_NETNS_COOKIE", 71)  # linux 5.14; Python names it from 3.13 on


def path(name: str) -> str:
    """The file of a network namespace given by name (under /run/netns, as `ip netns` makes them) or by
    path (/proc/PID/ns/net, a bind mount). Names may not walk out of /run/netns."""
    if not isinstance(name, str) or not name:
        raise Error(f"a network namespace is a name under {NETNS_DIR} or a path, not {name!r}")
    if "/" in name:
        found = name
    elif name in (".", ".."):
        raise Error(f"{name!r} is not a network namespace name")
    else:
        found = os.path.join(NETNS_DIR, name)
    if not os.path.exists(found):
        where = "" if "/" in name else f" (looked in {NETNS_DIR})"
        raise Error(f"no network namespace {name!r}{where}")
    return found


def inode(name: str | None) -> int:
    """The inode number of a network namespace (None: the caller's), as the kernel's `net->ns.inum`,
    which tracepoint programs compare to keep only events of that namespace."""
    target = "/proc/thread-self/ns/net" if name is None else path(name)
    try:
        fd = os.open(target, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK)  # a FIFO must not block us
    except OSError as exc:
        raise Error(f"cannot open network namespace {name!r}: {exc.strerror}") from None
    try:
        try:
            kind = fcntl.ioctl(fd, NS_GET_NSTYPE)
        except OSError:
            kind = None  # not a namespace file at all
        if kind != lib.CLONE_NEWNET:
            raise Error(f"{name!r} is not a network namespace")
        return os.fstat(fd).st_ino
    finally:
        os.close(fd)


def cookie(name: str | None) -> int:
    """The kernel's 64-bit cookie of a network namespace (SO_NETNS_COOKIE of a socket opened in it): unlike
    the inode it is never reused while the system runs, so a filter by cookie cannot match a later namespace."""
    with enter(name):
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    with s:
        return int.from_bytes(s.getsockopt(socket.SOL_SOCKET, SO_NETNS_COOKIE, 8), "little")


@contextlib.contextmanager
def enter(name: str | None) -> Iterator[None]:
    """Run the block in network namespace `name` (a name under /run/netns or a path such as
    /proc/PID/ns/net); `None` means "stay where you are"."""
    if name is None:
        yield
        return
    try:
        target = os.open(path(name), os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK)
    except OSError as exc:
        raise Error(f"cannot open network namespace {name!r}: {exc.strerror}") from None
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

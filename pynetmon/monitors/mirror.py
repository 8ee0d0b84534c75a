"""Where a monitor's mirrored packets go: an existing interface, one end of a veth pair pynetmon creates
(and removes again), or a pcap file written through pynetmon's capture path.

Mirroring is `bpf_clone_redirect(skb, ifindex, BPF_F_INGRESS)`: the copy enters the target interface's
receive path, where a packet socket (tcpdump) or pynetmon's capture (ingress) on that interface sees it,
and IP then drops it (its MACs are another host's). This kernel has no `dummy` links, so a created
target is one end of a veth pair (its peer only keeps it up); captures go on the mirror end itself.

>>> target = MirrorTarget.open("pcap:/var/tmp/errors.pcap", netns="h1")
>>> target.ifindex   # what the BPF program redirects to
>>> target.close()   # stops the capture, removes the veth pair
"""
from __future__ import annotations

import itertools
import os
import re
import subprocess
from typing import Any

from .. import netns as _netns
from ..capture import PacketCapture
from ..errors import ConfigError, Error

PCAP_PREFIX = "pcap:"
IFNAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,14}$")
"""Interface names pynetmon accepts as a mirror target: what `ip link` takes, minus `/`, `:`, spaces
and a leading dot or dash (IFNAMSIZ is 16 with the NUL)."""
_counter = itertools.count()
ALIAS = "pynetmon-mirror"
"""The alias pynetmon gives the veth ends it creates: one left by a killed process is recognised as ours."""


def check_mirror_to(value: str | None) -> str | None:
    """Validate a `mirror_to` value: None, `pcap:ABSOLUTE_PATH` or an interface name."""
    if value is None:
        return None
    if value.startswith(PCAP_PREFIX):
        path = value[len(PCAP_PREFIX):]
        if not path or "\0" in path or not os.path.isabs(path):
            raise ValueError("pcap: needs an absolute file path (pcap:/dir/file.pcap)")
        return value
    if not IFNAME.match(value):
        raise ValueError(f"{value!r} is not an interface name (1-15 of A-Z a-z 0-9 _ . -) nor pcap:PATH")
    return value


def _ip(*args: str, netns: str | None = None, check: bool = True) -> subprocess.CompletedProcess:
    cmd = ["ip", *(["-n", netns] if netns else []), *args]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if check and proc.returncode != 0:
        raise Error(f"`{' '.join(cmd)}` failed: {proc.stderr.strip()}")
    return proc


def _exists(name: str, netns: str | None) -> bool:
    return _ip("link", "show", "dev", name, netns=netns, check=False).returncode == 0


def _alias(name: str, netns: str | None) -> str:
    proc = _ip("-details", "link", "show", "dev", name, netns=netns, check=False)
    for line in proc.stdout.splitlines():
        if line.strip().startswith("alias "):
            return line.strip()[len("alias "):]
    return ""


class MirrorTarget:
    """An interface that mirrored packets are redirected to, with what pynetmon made for it."""

    def __init__(self, spec: str, ifname: str, ifindex: int, netns: str | None, created: str | None,
                 capture: PacketCapture | None = None, pcap_path: str | None = None):
        self.spec = spec
        self.ifname = ifname
        self.ifindex = ifindex
        self.netns = netns
        self.pcap_path = pcap_path
        self._created = created      # the veth end we created (removing it removes its peer too)
        self._capture = capture

    @classmethod
    def open(cls, spec: str, netns: str | None = None, create: bool = False) -> MirrorTarget:
        """Resolve `spec` (see `check_mirror_to`) in `netns`, creating what it needs."""
        check_mirror_to(spec)
        if spec.startswith(PCAP_PREFIX):
            return cls._open_pcap(spec, netns)
        if create:
            if _exists(spec, netns) and _alias(spec, netns) == ALIAS:
                # left behind by a pynetmon that was killed before it could remove it: ours to replace
                _ip("link", "del", spec, netns=netns, check=False)
            if _exists(spec, netns):
                raise ConfigError([("options.mirror_to", (f"interface {spec!r} exists already; mirror_create "
                                                          "only creates new ones (drop mirror_create to use it)"))])
            _make_veth(spec, netns)
            try:
                return cls(spec, spec, _ifindex(spec, netns), netns, spec)
            except BaseException:
                _ip("link", "del", spec, netns=netns, check=False)
                raise
        if not _exists(spec, netns):
            where = f" in network namespace {netns!r}" if netns else ""
            raise ConfigError([("options.mirror_to", f"no interface {spec!r}{where} (mirror_create=true makes one)")])
        return cls(spec, spec, _ifindex(spec, netns), netns, None)

    @classmethod
    def _open_pcap(cls, spec: str, netns: str | None) -> MirrorTarget:
        path = spec[len(PCAP_PREFIX):]
        if not os.path.isdir(os.path.dirname(path) or "/"):
            raise ConfigError([("options.mirror_to", f"directory of {path!r} does not exist")])
        if os.path.islink(path) or (os.path.exists(path) and not os.path.isfile(path)):
            raise ConfigError([("options.mirror_to", f"{path!r} exists and is not a regular file")])
        name = f"pnmm{os.getpid() % 100000}x{next(_counter) % 1000}"
        _make_veth(name, netns)
        try:
            capture = PacketCapture(f"mirror-{name}", capture="ingress", filter="all", dump=path)
            try:
                capture.attach(name, netns)
            except BaseException:
                capture.close()
                raise
            return cls(spec, name, _ifindex(name, netns), netns, name, capture, capture_path(path))
        except BaseException:
            _ip("link", "del", name, netns=netns, check=False)
            raise

    def stats(self) -> dict[str, Any] | None:
        """The pcap capture's counters (None for an interface target)."""
        return self._capture.stats() if self._capture else None

    def describe(self) -> dict[str, Any]:
        out: dict[str, Any] = {"to": self.spec, "interface": self.ifname, "created": bool(self._created)}
        if self.pcap_path:
            out["pcap"] = self.pcap_path
        return out

    def close(self) -> None:
        """Stop the capture (flushing the file) and remove what was created. Safe to call twice."""
        try:
            if self._capture is not None:
                self._capture.close()
                self._capture = None
        finally:
            if self._created:
                _ip("link", "del", self._created, netns=self.netns, check=False)
                self._created = None


def capture_path(path: str) -> str:
    """The file PacketCapture writes for `path` (it appends .pcap when missing)."""
    return path if path.endswith(".pcap") else path + ".pcap"


def _ifindex(name: str, netns: str | None) -> int:
    with _netns.enter(netns):
        return _netns.ifindex(name)


def _make_veth(name: str, netns: str | None) -> None:
    """A veth pair `name` + `name`-p (peer), both up, with IPv6 off on both so that neither sends router
    solicitations or DAD into the mirror."""
    peer = f"{name[:13]}-p"
    _ip("link", "add", name, "type", "veth", "peer", "name", peer, netns=netns)
    try:
        _ip("link", "set", "dev", name, "alias", ALIAS, netns=netns)
        with _netns.enter(netns):
            for dev in (name, peer):
                with open(f"/proc/sys/net/ipv6/conf/{dev}/disable_ipv6", "w") as f:
                    f.write("1")
        for dev in (name, peer):
            _ip("link", "set", dev, "up", netns=netns)
    except BaseException:
        _ip("link", "del", name, netns=netns, check=False)
        raise

"""The kernel side of a capture: bpf/capture.bpf.c around a translated filter, its maps, its TC links.

One capture owns four maps for its whole life (the ring buffer, the per-CPU counters, the config and
the scratch buffers). Every program it loads - one object per filter - reuses those maps, so a new
filter replaces the old one on every link in one step each (`Link.update`, BPF_LINK_UPDATE) and not a
record, counter or setting is lost. Snaplen and clock offset live in the config map and change without
a reload.

What the filter reads and whether it looks at the packet at all are the filter package's answers
(pynetmon/filter/analysis.py). Filters that do not look at the packet (capture nothing, capture
everything) use the object built by the Makefile, with the verdict set before load; others are
compiled at run time: the filter's C
(`pynetmon.filter.cbpf_to_c` with the kernel's ancillary loads, as a packet socket runs the filter)
followed by capture.bpf.c, which the Makefile ships in data/src.
"""
from __future__ import annotations

import hashlib
import os
import struct
import threading
from collections.abc import Sequence

from ..filter import cbpf_to_c
from ..filter.analysis import constant_verdict, filter_window
from ..filter.cbpf import Insn
from ..link import DIRECTIONS, Link, attach_tc
from ..maps import Map, possible_cpus
from ..object import DATA_DIR, BPFObject
from ..toolchain import compile_c

__all__ = ["Dataplane", "dataplane_source"]

SOURCE_DIR = DATA_DIR / "src"
SHARED_MAPS = ("capture_ring", "capture_counters", "capture_config", "capture_scratch")
_VERDICT = struct.Struct("=I")
ANY_NETNS = object()  # Dataplane.detach: links in every namespace (None means the root namespace)


def template_source() -> tuple[str, str]:
    """(capture.bpf.c, capture.h) as shipped in data/src."""
    try:
        return (SOURCE_DIR / "capture.bpf.c").read_text(), (SOURCE_DIR / "capture.h").read_text()
    except FileNotFoundError as exc:
        raise FileNotFoundError(f"{exc.filename} is missing: run `make build` (the Makefile ships bpf/ "
                                "sources in pynetmon/data/src)") from None


def dataplane_source(insns: Sequence[Sequence[int]]) -> str:
    """The C of a capture object with this classic BPF filter compiled in; pure apart from reading the
    shipped template. The header's digest is part of the text, so the compile cache sees its changes."""
    window = filter_window(insns)
    template, header = template_source()
    digest = hashlib.sha256(header.encode()).hexdigest()[:16]
    return "\n".join([
        f"/* pynetmon capture dataplane (capture.h {digest}) */",
        cbpf_to_c(insns, "capture_filter", max_caplen=max(window, 4), ancillary=True),
        "#define CAPTURE_FILTER capture_filter",
        f"#define CAPTURE_FILTER_WINDOW {window}",
        '#line 1 "capture.bpf.c"',
        template,
    ])


class Dataplane:
    """Maps, loaded programs and links of one capture.

    >>> dp = Dataplane(ring_bytes=8 << 20, insns=compile_cbpf("udp"))
    >>> dp.attach("eth0", "ingress")
    >>> dp.install(dp.build(compile_cbpf("tcp")))   # atomically, on every link
    """

    def __init__(self, insns: Sequence[Insn], *, ring_bytes: int, mechanism: str = "auto"):
        if ring_bytes < 4096 or ring_bytes & (ring_bytes - 1):
            raise ValueError(f"ring_bytes must be a power of two of at least 4096, not {ring_bytes}")
        self.ring_bytes = ring_bytes
        self.mechanism = mechanism
        self.maps: dict[str, Map] = {}
        self.links: dict[tuple[str, str | None, str], Link] = {}  # (ifname, netns, direction)
        # The reader thread detaches after a write error while the owner may be changing links.
        self._lock = threading.RLock()
        self.object = self.build(insns)
        try:
            for name in SHARED_MAPS:
                live = self.object.maps[name]
                self.maps[name] = Map.from_fd(os.dup(live.fd), live.key_codec, live.value_codec, owned=True)
        except BaseException:
            self.close()
            raise

    # ---- programs -------------------------------------------------------------------------------
    def build(self, insns: Sequence[Insn]) -> BPFObject:
        """Load a capture object for this filter, sharing this dataplane's maps (if it has them yet).

        Raises CompileError/VerifierError/FilterError; nothing that runs is touched.
        """
        verdict = constant_verdict(insns)
        if verdict is not None:
            obj = BPFObject.from_package("capture")
            rodata = next(spec for spec in obj.maps.values() if spec.name.endswith(".rodata"))
            rodata.set_initial_value(_VERDICT.pack(verdict))
        else:
            obj = BPFObject(compile_c(dataplane_source(insns), filename="capture_filter.bpf.c",
                                      include_dirs=(SOURCE_DIR,)), name="capture_filter")
        try:
            obj.maps["capture_ring"].set_max_entries(self.ring_bytes)
            obj.maps["capture_scratch"].set_max_entries(possible_cpus())
            for name, live in self.maps.items():
                obj.maps[name].reuse(live)
            obj.load()
        except BaseException:
            obj.close()
            raise
        return obj

    def install(self, obj: BPFObject) -> None:
        """Put `obj`'s programs behind every link (each swap is atomic) and release the previous object.

        If a swap fails, the links already swapped get the previous programs back and the swap's error is
        raised; a link that cannot be swapped back is noted on that error (it keeps `obj`'s program, which
        the kernel holds for it even after `obj` is closed).
        """
        with self._lock:
            done = []
            try:
                for (_ifname, _netns, direction), link in self.links.items():
                    link.update(obj.programs[f"capture_{direction}"])
                    done.append((link, direction))
            except BaseException as exc:
                for link, direction in done:  # all links keep running one and the same filter
                    try:
                        link.update(self.object.programs[f"capture_{direction}"])
                    except Exception as undo:  # noqa: BLE001 - the first error is the one to report
                        exc.add_note(f"restoring the previous filter on {link.ifname} {direction} failed, so "
                                     f"it keeps the new one: {undo}")
                raise
            old, self.object = self.object, obj
        if old is not None and old is not obj:
            old.close()

    # ---- links ----------------------------------------------------------------------------------
    def attach(self, ifname: str, direction: str, netns: str | None = None) -> None:
        """Attach the current program to `ifname`'s `direction` hook (no-op if already there)."""
        key = (ifname, netns, direction)
        with self._lock:
            if key not in self.links:
                self.links[key] = attach_tc(self.object.programs[f"capture_{direction}"], ifname, direction,
                                            mechanism=self.mechanism, netns=netns)

    def detach(self, ifname: str | None = None, direction: str | None = None,
               netns: str | None | object = ANY_NETNS) -> None:
        """Detach the links that match (None matches any interface or direction; `netns` None is the root
        namespace, ANY_NETNS any namespace); detaching continues past a failure."""
        errors = []
        with self._lock:
            for key in list(self.links):
                if (ifname is None or key[0] == ifname) and (direction is None or key[2] == direction) and \
                        (netns is ANY_NETNS or key[1] == netns):
                    link = self.links.pop(key)
                    try:
                        link.detach()
                    except Exception as exc:  # noqa: BLE001 - keep detaching the others, then report
                        errors.append(exc)
        if errors:
            raise errors[0]

    # ---- maps -----------------------------------------------------------------------------------
    def configure(self, *, snaplen: int, clock_offset_ns: int, wakeup_bytes: int) -> None:
        """Write the config entry that every packet reads (takes effect with the next packet)."""
        self.maps["capture_config"][0] = {"clock_offset_ns": clock_offset_ns, "snaplen": snaplen,
                                          "wakeup_bytes": wakeup_bytes}

    def counters(self) -> dict[str, dict[str, int]]:
        """Counters per direction, summed over CPUs: {"ingress": {"seen": n, ...}, "egress": {...}}."""
        out = {}
        for index, direction in enumerate(DIRECTIONS):
            per_cpu = self.maps["capture_counters"][index]
            out[direction] = {field: sum(cpu[field] for cpu in per_cpu) for field in per_cpu[0]}
        return out

    def close(self) -> None:
        """Detach everything, then free programs and maps."""
        try:
            self.detach()
        finally:
            if getattr(self, "object", None) is not None:
                self.object.close()
                self.object = None
            for m in self.maps.values():
                m.close()
            self.maps.clear()

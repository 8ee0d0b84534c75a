"""BPF ELF objects: open (parse), adjust, load (CO-RE relocation + verifier), and release.

`BPFObject` follows the spec/live split of cilium/ebpf loosely: between open and load, `.maps` and
`.programs` describe what will be created and can be adjusted (`MapSpec.set_max_entries`,
`MapSpec.reuse`, `ProgramSpec.set_type`); after load they are live `Map`/`Program` objects.
"""
from __future__ import annotations

import errno
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Self

from . import limits
from ._binding import captured_libbpf_output, check, ffi, lib
from .btf_codec import BTFTypes
from .errors import LoadError, PermissionDeniedError, VerifierError, error_from_errno
from .maps import MAP_TYPE_NAMES, Map, possible_cpus
from .program import PROG_TYPE_NAMES, Program

DATA_DIR = Path(__file__).resolve().parent / "data"
_LOG_BLOCK = re.compile(r"prog '([^']+)': -- BEGIN PROG LOAD LOG --\n(.*?)-- END PROG LOAD LOG --", re.DOTALL)
_FAILED_PROG = re.compile(r"prog '([^']+)': (?:BPF program load failed|failed to load)")


class MapSpec:
    """A map of an opened, not yet loaded object."""

    def __init__(self, obj: BPFObject, ptr: Any):
        self._obj = obj
        self._ptr = ptr
        self.name = ffi.string(lib.bpf_map__name(ptr)).decode()

    type = property(lambda s: MAP_TYPE_NAMES.get(lib.bpf_map__type(s._ptr), "unknown"))
    key_size = property(lambda s: lib.bpf_map__key_size(s._ptr))
    value_size = property(lambda s: lib.bpf_map__value_size(s._ptr))
    max_entries = property(lambda s: lib.bpf_map__max_entries(s._ptr))
    internal = property(lambda s: bool(lib.bpf_map__is_internal(s._ptr)))

    def set_max_entries(self, n: int) -> None:
        check(lib.bpf_map__set_max_entries(self._ptr, n), f"set max_entries of map {self.name!r}")

    def set_type(self, type_name: str) -> None:
        """Change the map type before load (an LRU instead of a hash, for example)."""
        type_id = {v: k for k, v in MAP_TYPE_NAMES.items()}.get(type_name)
        if type_id is None:
            raise ValueError(f"unknown map type {type_name!r}; known: {sorted(MAP_TYPE_NAMES.values())}")
        check(lib.bpf_map__set_type(self._ptr, type_id), f"set type of map {self.name!r}")

    def set_map_flags(self, flags: int) -> None:
        """Set the map's creation flags before load (BPF_F_NO_COMMON_LRU, ...)."""
        check(lib.bpf_map__set_map_flags(self._ptr, flags), f"set flags of map {self.name!r}")

    def reuse(self, other: Map | int) -> None:
        """Use an existing kernel map instead of creating one (libbpf map reuse): the two objects share it.

        The map keeps the key and value types of the object that defines it (`other`'s codecs); given a
        bare fd, those this object declares. libbpf copies the kernel's BTF type ids of the existing map,
        which number types in the other object's BTF and mean nothing in this one."""
        fd = other if isinstance(other, int) else other.fd
        own = (lib.bpf_map__btf_key_type_id(self._ptr), lib.bpf_map__btf_value_type_id(self._ptr))
        check(lib.bpf_map__reuse_fd(self._ptr, fd), f"reuse map fd for {self.name!r}",
              "the existing map must have the same type, key size, value size and max_entries")
        if isinstance(other, int):
            self._obj._reused_ids[self.name] = own
        else:
            self._obj._reused_codecs[self.name] = (other.key_codec, other.value_codec)

    def set_pin_path(self, path: str) -> None:
        """Pin the map at `path` (BPF file system) when the object loads: libbpf reuses the map pinned there
        if there is one (refused if its type or sizes differ), else creates the map and pins it."""
        check(lib.bpf_map__set_pin_path(self._ptr, path.encode()), f"set the pin path of map {self.name!r}")

    def initial_value(self) -> bytes | None:
        size = ffi.new("size_t *")
        p = lib.bpf_map__initial_value(self._ptr, size)
        return None if p == ffi.NULL else ffi.buffer(p, size[0])[:]

    def set_initial_value(self, data: bytes) -> None:
        check(lib.bpf_map__set_initial_value(self._ptr, ffi.from_buffer(data), len(data)),
              f"set initial value of {self.name!r}")

    def __repr__(self):
        return f"<MapSpec {self.name!r} {self.type}>"


class ProgramSpec:
    """A program of an opened, not yet loaded object."""

    def __init__(self, obj: BPFObject, ptr: Any):
        self._obj = obj
        self._ptr = ptr
        self.name = ffi.string(lib.bpf_program__name(ptr)).decode()
        self.section = ffi.string(lib.bpf_program__section_name(ptr)).decode()

    type = property(lambda s: PROG_TYPE_NAMES.get(lib.bpf_program__type(s._ptr), "unknown"))

    def set_type(self, type_name: str) -> None:
        ids = {v: k for k, v in PROG_TYPE_NAMES.items()}
        check(lib.bpf_program__set_type(self._ptr, ids[type_name]), f"set type of {self.name!r}")

    def set_autoload(self, autoload: bool) -> None:
        check(lib.bpf_program__set_autoload(self._ptr, autoload), f"set autoload of {self.name!r}")

    def __repr__(self):
        return f"<ProgramSpec {self.name!r} {self.section}>"


class BPFObject:
    """An eBPF ELF object: its programs and maps.

    >>> with BPFObject.from_package("counter") as obj:
    ...     obj.load()
    ...     obj.programs["count_packets"].test_run(bytes(64))
    """

    def __init__(self, source: str | os.PathLike | bytes, *, name: str | None = None):
        self._ptr = ffi.NULL
        self._buf = None
        self._charge: limits.Charge | None = None
        # Reused maps (MapSpec.reuse): the defining Map's codecs, or, given a bare fd, our own BTF ids.
        self._reused_codecs: dict[str, tuple[Any, Any]] = {}
        self._reused_ids: dict[str, tuple[int, int]] = {}
        self.loaded = False
        opts = ffi.new("struct bpf_object_open_opts *")
        opts.sz = ffi.sizeof("struct bpf_object_open_opts")
        keep = []
        if name:
            keep.append(ffi.new("char[]", name.encode()))
            opts.object_name = keep[-1]
        if isinstance(source, (bytes, bytearray, memoryview)):
            self._buf = bytes(source)
            what = name or "object in memory"
            with captured_libbpf_output() as lines:
                ptr = lib.bpf_object__open_mem(ffi.from_buffer(self._buf), len(self._buf), opts)
        else:
            path = os.fspath(source)
            what = path
            if not os.path.exists(path):
                raise LoadError(errno.ENOENT, f"opening BPF object {path!r}")
            with captured_libbpf_output() as lines:
                ptr = lib.bpf_object__open_file(path.encode(), opts)
        if ptr == ffi.NULL:
            err = ffi.errno or errno.EINVAL
            raise LoadError(err, f"opening BPF object {what!r}", _last_lines(lines) or "not a valid BPF ELF object")
        self._ptr = ffi.gc(ptr, lib.bpf_object__close)
        self.name = ffi.string(lib.bpf_object__name(ptr)).decode()
        # MapSpec/ProgramSpec until load(), Map/Program after it: typed Any so that neither side needs casts.
        self.maps: Mapping[str, Any] = {s.name: s for s in self._iter_maps()}
        self.programs: Mapping[str, Any] = {s.name: s for s in self._iter_programs()}

    @classmethod
    def from_package(cls, name: str) -> BPFObject:
        """Open one of the objects shipped inside pynetmon (pynetmon/data/NAME.bpf.o)."""
        path = DATA_DIR / f"{name}.bpf.o"
        if not path.exists():
            shipped = sorted(p.name[:-len(".bpf.o")] for p in DATA_DIR.glob("*.bpf.o"))
            raise LoadError(errno.ENOENT, f"no shipped BPF object named {name!r}", f"shipped: {', '.join(shipped)}")
        return cls(path)

    def _iter_maps(self):
        m = lib.bpf_object__next_map(self._ptr, ffi.NULL)
        while m != ffi.NULL:
            yield MapSpec(self, m)
            m = lib.bpf_object__next_map(self._ptr, m)

    def _iter_programs(self):
        p = lib.bpf_object__next_program(self._ptr, ffi.NULL)
        while p != ffi.NULL:
            yield ProgramSpec(self, p)
            p = lib.bpf_object__next_program(self._ptr, p)

    @property
    def btf(self) -> Any:
        """The object's `struct btf *` (NULL without BTF), for BTF lookups through the binding."""
        return lib.bpf_object__btf(self._ptr)

    def load(self) -> BPFObject:
        """CO-RE relocation against the running kernel's BTF, then create maps and load programs.

        Raises VerifierError (with the whole log) when the verifier rejects a program.
        """
        if self.loaded:
            return self
        if self._ptr == ffi.NULL:
            raise LoadError(errno.EBADF, "loading a closed BPF object")
        # libbpf zeroes the BTF type ids of maps the kernel takes no BTF for (queue, stack, ...) while
        # creating them; read them first so that those maps still get typed codecs.
        btf_ids = {name: (lib.bpf_map__btf_key_type_id(spec._ptr), lib.bpf_map__btf_value_type_id(spec._ptr))
                   for name, spec in self.maps.items()}
        self._charge_limits()
        with captured_libbpf_output() as lines:
            ret = lib.bpf_object__load(self._ptr)
        if ret < 0:
            self._charge.release()
            raise _load_error(-ret, self.name, "".join(lines))
        self.loaded = True
        types = BTFTypes(self.btf) if self.btf != ffi.NULL else None
        live_maps = {}
        for spec in self.maps.values():
            ptr = spec._ptr
            fd = lib.bpf_map__fd(ptr)
            if fd < 0:  # not created (autocreate off)
                continue
            kid, vid = self._reused_ids.get(spec.name, btf_ids[spec.name])
            kc = types.codec(kid) if types and kid else None
            vc = types.codec(vid) if types and vid else None
            kc, vc = self._reused_codecs.get(spec.name, (kc, vc))
            # The Map owns a copy of the descriptor, so that closing the object cannot free a number a
            # reading thread still holds (Map.close).
            live_maps[spec.name] = Map(os.dup(fd), spec.name, lib.bpf_map__type(ptr), lib.bpf_map__key_size(ptr),
                                       lib.bpf_map__value_size(ptr), lib.bpf_map__max_entries(ptr), kc, vc,
                                       flags=lib.bpf_map__map_flags(ptr), owned_fd=True)
        self.maps = live_maps
        self.programs = {
            s.name: Program(lib.bpf_program__fd(s._ptr), s.name, lib.bpf_program__type(s._ptr), s.section)
            for s in self.programs.values() if lib.bpf_program__fd(s._ptr) >= 0
        }
        return self

    def set_rodata(self, **values: int | bytes) -> None:
        """Set `const volatile` globals (load-time knobs) by name before load: an int is stored in the
        variable's own size (native order), bytes must have exactly its size. An unknown name raises,
        listing the names there are.

        >>> obj.set_rodata(flows_keep=0x3, netns_inum=4026531840)
        """
        if self.loaded:
            raise LoadError(errno.EBUSY, f"setting read-only globals of {self.name!r}", "the object is already loaded")
        spec = next((m for m in self.maps.values() if isinstance(m, MapSpec) and m.name.endswith(".rodata")), None)
        data = spec.initial_value() if spec is not None else None
        if spec is None or data is None:
            raise LoadError(errno.ENOENT, f"setting read-only globals of {self.name!r}", "it has no .rodata")
        layout = _datasec_layout(self.btf, lib.bpf_map__btf_value_type_id(spec._ptr))
        buf = bytearray(data)
        for name, value in values.items():
            if name not in layout:
                raise LoadError(errno.ENOENT, f"setting read-only global {name!r} of {self.name!r}",
                                f"it has {', '.join(sorted(layout)) or 'none'}")
            off, size = layout[name]
            raw = value if isinstance(value, bytes) else int(value).to_bytes(size, "little", signed=value < 0)
            if len(raw) != size:
                raise LoadError(errno.EINVAL, f"setting read-only global {name!r}", f"{len(raw)} bytes for {size}")
            buf[off:off + size] = raw
        spec.set_initial_value(bytes(buf))

    def _charge_limits(self) -> None:
        # Checked from the specs, before the kernel allocates anything: ResourceLimitError when the maps
        # would go over a kernel-memory or ring-size limit, or the descriptors over RLIMIT_NOFILE.
        new = [limits.MapNeed(s.name, s.type, s.key_size, s.value_size, s.max_entries)
               for s in self.maps.values() if lib.bpf_map__fd(s._ptr) < 0]  # a reused map exists already
        what = f"BPF object {self.name!r}"
        # Each map is two descriptors: libbpf's and the Map's own copy (Map.close).
        limits.check_fds(what, 2 * len(self.maps) + len(self.programs) + limits.FD_FIXED_COST)
        self._charge = limits.charge(what, new, possible_cpus(), owner=self)

    def close(self) -> None:
        """Release every map and program descriptor of the object (attached links keep programs alive)."""
        if self._charge is not None:
            self._charge.release()
        if self._ptr != ffi.NULL:
            for m in self.maps.values():
                if isinstance(m, Map):
                    m.close()
            for p in self.programs.values():
                if isinstance(p, Program):
                    p._fd = -1
            ffi.release(self._ptr)
            self._ptr = ffi.NULL

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "loaded" if self.loaded else "opened"
        return f"<BPFObject {self.name!r} {state}: programs={list(self.programs)} maps={list(self.maps)}>"


def _datasec_layout(btf, datasec_id: int) -> dict[str, tuple[int, int]]:
    """{variable name: (offset, size)} of a BTF DATASEC (.rodata, .bss)."""
    t = lib.btf__type_by_id(btf, datasec_id) if datasec_id else ffi.NULL
    if t == ffi.NULL or lib.btf_kind(t) != lib.BTF_KIND_DATASEC:
        return {}
    infos = ffi.cast("struct btf_var_secinfo *", ffi.cast("char *", t) + ffi.sizeof("struct btf_type"))
    layout = {}
    for i in range(lib.btf_vlen(t)):
        var = lib.btf__type_by_id(btf, infos[i].type)
        layout[ffi.string(lib.btf__name_by_offset(btf, var.name_off)).decode()] = (infos[i].offset, infos[i].size)
    return layout


def _last_lines(lines: list[str], n: int = 6) -> str:
    text = "".join(lines).strip().splitlines()
    return "; ".join(line.removeprefix("libbpf: ").strip() for line in text[-n:])


def _load_error(err: int, obj_name: str, output: str) -> Exception:
    blocks = _LOG_BLOCK.findall(output)
    if blocks:
        prog, log = blocks[-1]
        return VerifierError(err, prog, log)
    failed = _FAILED_PROG.findall(output)
    detail = _last_lines(output.splitlines(keepends=True))
    if err == errno.EPERM:
        return PermissionDeniedError(err, f"loading BPF object {obj_name!r}", detail)
    if failed:
        return VerifierError(err, failed[-1], output)
    exc = error_from_errno(err, f"loading BPF object {obj_name!r}", detail)
    if not isinstance(exc, PermissionDeniedError):
        exc = LoadError(err, f"loading BPF object {obj_name!r}", detail)
    return exc

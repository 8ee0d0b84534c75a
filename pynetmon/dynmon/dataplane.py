"""One direction's dataplane: the user's code compiled, loaded, and read.

`PathDataplane` owns the loaded object of one path and exposes what the rest of dynmon needs:

* `program`: the Program to attach (TC for "tc", XDP for "xdp");
* `maps`: the user's maps by name (what the other path shares, and what metrics are checked against);
* `read_map(name, empty)`: the decoded entries of one map (`MapEntries`), emptied if asked;
  `read_maps({name: empty})` several at once (the swap-on-read variant reads them from one flip).

Swap-on-read (swap_path.py, on the core engine in pynetmon/swap/) provides another class with the same
constructor and the same members (`paths.LoadedPath`), whose `program` is the pivot and whose `read_map`
flips instances. `paths.build_path_dataplane` picks between the two; the helpers below (`compile_path`,
`open_path_object`, `check_metric_maps`, `reuse_shared_maps`, `select_program`, `read_entries`) are shared
by both.
"""
from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path

from ..btf_codec import per_cpu_stride
from ..errors import CompileError, ConfigError
from ..link.xdp_chain import NEXT_MAP as XDP_NEXT_MAP
from ..maps import Map
from ..object import BPFObject
from ..program import Program
from ..toolchain import compile_c
from .config import ELF_MAGIC, PathConfig
from .dialect import EXTERN, MapDecl, translate
from .entries import FieldPath, MapEntries, RawRead, kind_of, map_address_fields
from .sharing import (
    LIBBPF,
    MapScope,
    SharedMap,
    check_pin_path,
    reuse_problem,
    scopes_of,
    shares,
    undefined_extern,
)
from .tailcalls import tail_call_targets

log = logging.getLogger("pynetmon.dynmon")
PROGRAM_TYPES = {"tc": "sched_cls", "xdp": "xdp"}


def compile_path(path: PathConfig, direction: str, hook: str, *, pcn_log: bool = False
                 ) -> tuple[bytes, str | None, tuple[MapDecl, ...]]:
    """The eBPF object of a path (compiled from C, cached by content, or as given), the name of the
    program to attach when the translation knows it (Polycube-style code: the generated wrapper), and the
    maps the code declared with BCC macros (their scopes: sharing.py)."""
    origin = f"{direction}-path"
    if path.object:
        return _read_object(path.object, f"{origin}.object"), None, ()
    code = path.code
    if isinstance(code, bytes):
        return code, None, ()
    if isinstance(code, Path):
        if code.suffix == ".o":
            return _read_object(code, f"{origin}.code"), None, ()
        code = _read_text(code, f"{origin}.code")
    unit = translate(code, direction=direction, hook=hook, origin=f"{origin}.code", pcn_log=pcn_log)
    try:
        image = compile_c(unit.source, filename=f"{origin}.bpf.c")
    except CompileError as exc:
        # A compile stopped by its time limit has no diagnostics: its message says why.
        raise CompileError(f"{origin}.code does not compile ({unit.dialect} style)",
                           exc.diagnostics or str(exc)) from None
    return image, unit.program, unit.maps


def _read_object(location, where: str) -> bytes:
    try:
        data = Path(location).read_bytes()
    except OSError as exc:
        raise ConfigError([(where, f"cannot read eBPF object {str(location)!r}: {exc.strerror}")]) from None
    if not data.startswith(ELF_MAGIC):
        raise ConfigError([(where, f"{str(location)!r} is not an ELF eBPF object")])
    return data


def _read_text(location: Path, where: str) -> str:
    try:
        return location.read_text()
    except OSError as exc:
        raise ConfigError([(where, f"cannot read {str(location)!r}: {exc.strerror}")]) from None


def open_path_object(image: bytes, direction: str, instance: str = "") -> BPFObject:
    """Open (not load) a path's object under a name that tells the direction (and instance) apart."""
    return BPFObject(image, name=f"dynmon_{direction[:2]}{instance}")


def user_map_names(obj: BPFObject) -> list[str]:
    """The maps the user's code defines (not libbpf's .bss/.data/.rodata, nor the XDP wrapper's
    `pnm_xdp_next`, the link to the next program of the interface's XDP chain)."""
    return [name for name, spec in obj.maps.items()
            if not getattr(spec, "internal", False) and "." not in name and name != XDP_NEXT_MAP]


def check_metric_maps(path: PathConfig, direction: str, obj: BPFObject) -> None:
    """Every metric must name a map the code defines; all unknown names are reported together."""
    names = user_map_names(obj)
    problems = []
    for i, metric in enumerate(path.metric_configs):
        if metric.map_name not in names:
            known = ", ".join(sorted(names)) or "(none)"
            problems.append((f"{direction}-path.metric-configs[{i}].map-name",
                             f"map {metric.map_name!r} is not defined by the code; maps are: {known}"))
    if problems:
        raise ConfigError(problems)


def reuse_shared_maps(obj: BPFObject, direction: str, shared: Mapping[str, SharedMap], shared_origin: str,
                      scopes: Mapping[str, MapScope] | None = None) -> list[str]:
    """Make the maps of `obj` that are the other path's maps (sharing.py: `_SHARED`/`_PUBLIC` with `extern`,
    libbpf-style maps of one name) use the existing kernel maps in `shared`. ConfigError names every map
    whose two declarations disagree and every `extern` map nothing defines. Returns the names reused."""
    scopes = scopes or {}
    reused, problems = [], []
    for name in user_map_names(obj):
        mine = scopes.get(name, LIBBPF)
        offered = shared.get(name)
        where = f"{direction}-path.code"
        line = f" (line {mine.line})" if mine.line else ""
        if offered is not None and shares(mine, offered.scope):
            problem = reuse_problem(name, mine, obj.maps[name], offered.map, shared_origin)
            if problem:
                problems.append((where, problem + line))
                continue
            obj.maps[name].reuse(offered.map)
            reused.append(name)
        elif mine.kind == EXTERN:
            problems.append((where, undefined_extern(name, mine, shared) + line))
    if problems:
        raise ConfigError(problems)
    return reused


def pin_maps(obj: BPFObject, direction: str, scopes: Mapping[str, MapScope], suffix: Mapping[str, str] | None = None
             ) -> None:
    """Give each `_PINNED` map of `obj` its pin path (plus `suffix[name]`, for the second instance of a
    swap-on-read map): libbpf then uses the map pinned there, or creates and pins it."""
    for name, scope in scopes.items():
        if scope.kind == "pinned" and name in obj.maps:
            path = check_pin_path(scope.pin, f"{direction}-path.code") + (suffix or {}).get(name, "")
            obj.maps[name].set_pin_path(path)


def select_program(obj: BPFObject, direction: str, hook: str, preferred: str | None,
                   targets: frozenset[str] = frozenset()) -> str:
    """Choose the program to attach and switch autoload off for every other one (so only it is verified),
    except the tail-call `targets` of its program arrays (tailcalls.py): they load with it, and libbpf puts
    them in the arrays. The entry is the one program of the hook's type that no array names."""
    wanted = PROGRAM_TYPES[hook]
    if preferred is not None and preferred in obj.programs:
        chosen = preferred
    else:
        candidates = [name for name, spec in obj.programs.items() if spec.type == wanted and name not in targets]
        listing = ", ".join(f"{n} ({s.section})" for n, s in obj.programs.items()) or "none"
        section = 'SEC("tc")' if hook == "tc" else 'SEC("xdp")'
        if not candidates:
            raise ConfigError([(f"{direction}-path.code",
                                f"no {section} program to attach on the {hook.upper()} hook; programs: {listing}")])
        if len(candidates) > 1:
            raise ConfigError([(f"{direction}-path.code",
                                f"more than one {section} program ({', '.join(candidates)}); a path attaches one")])
        chosen = candidates[0]
    for name, spec in obj.programs.items():
        if name != chosen and name not in targets:
            spec.set_autoload(False)
    return chosen


class PathDataplane:
    """The loaded program of one path and its maps.

    >>> dp = PathDataplane(config.ingress_path, "ingress", "tc")
    >>> attach_tc(dp.program, "eth0", "ingress")
    >>> dp.read_map("PKT_COUNTER", empty=False).values
    [42]
    """

    def __init__(self, path: PathConfig, direction: str, hook: str, shared: Mapping[str, SharedMap] | None = None,
                 *, shared_origin: str = "the other path", pcn_log: bool = False):
        self.path = path
        self.direction = direction
        self.hook = hook
        self.swap_maps: frozenset[str] = frozenset()  # no swap-on-read map: every read is a plain batch read
        image, preferred, decls = compile_path(path, direction, hook, pcn_log=pcn_log)
        self._obj = open_path_object(image, direction)
        try:
            check_metric_maps(path, direction, self._obj)
            self.map_scopes: dict[str, MapScope] = scopes_of(decls, user_map_names(self._obj))
            reuse_shared_maps(self._obj, direction, shared or {}, shared_origin, self.map_scopes)
            pin_maps(self._obj, direction, self.map_scopes)
            program_name = select_program(self._obj, direction, hook, preferred, tail_call_targets(image))
            self._obj.load()
            self.program: Program = self._obj.programs[program_name]
            self.maps: dict[str, Map] = {name: self._obj.maps[name] for name in user_map_names(self._obj)
                                         if name in self._obj.maps}
            self._addresses = {name: map_address_fields(self._obj.btf, name) for name in self.maps}
        except BaseException:
            self._obj.close()
            raise
        log.debug("%s path loaded: program %s (id %d), maps %s", direction, program_name, self.program.id,
                  ", ".join(self.maps))

    def read_map(self, name: str, empty: bool = False) -> MapEntries:
        """Every entry of map `name`, decoded. `empty=True` removes what was read (hash maps: batch
        lookup-and-delete, so no update falls between read and delete; arrays: reset to zero after the
        read; queues and stacks are always popped)."""
        return read_entries(self.maps[name], empty, self._addresses.get(name, ({}, {})))

    def read_maps(self, requests: Mapping[str, bool]) -> dict[str, MapEntries]:
        """`read_map` for several maps at once: {name: empty} → {name: MapEntries}."""
        return {name: self.read_map(name, empty) for name, empty in requests.items()}

    def close(self) -> None:
        """Release the object (a program still attached through a link keeps running until detached)."""
        self._obj.close()

    def __repr__(self) -> str:
        return f"<PathDataplane {self.direction} {self.hook} program={self.program.name} maps={list(self.maps)}>"


def read_entries(m: Map, empty: bool, addresses: tuple[dict[FieldPath, str], dict[FieldPath, str]] = ({}, {})
                 ) -> MapEntries:
    """Read one map on the batch path (one syscall per few thousand entries) and decode it."""
    kind = kind_of(m.type)
    if kind == "queue":
        values = m.pop_items()
        return MapEntries(m.name, m.type, kind, [], values, False, *addresses)
    if kind == "array" and empty:
        values = [v for _, v in m.pop_items()]
        return MapEntries(m.name, m.type, kind, [], values, m.per_cpu, *addresses)
    raw_keys, raw_values, count = m.read_raw(delete=empty)
    ncpus = m.ncpus if m.per_cpu else 1
    stride = per_cpu_stride(m.value_size) if m.per_cpu else m.value_size
    raw = RawRead(raw_keys, raw_values, count, m.key_size, stride, ncpus, m.key_codec, m.value_codec)

    def decode() -> tuple[list, list]:  # on first use of .keys/.values (see MapEntries)
        if m.per_cpu:
            flat = m.value_codec.decode_many(raw_values, count * ncpus, stride)
            values = [flat[i * ncpus:(i + 1) * ncpus] for i in range(count)]
        else:
            values = m.value_codec.decode_many(raw_values, count)
        keys = m.key_codec.decode_many(raw_keys, count) if kind == "hash" else []
        return keys, values

    return MapEntries(m.name, m.type, kind, None, None, m.per_cpu, *addresses, raw=raw, decode=decode)


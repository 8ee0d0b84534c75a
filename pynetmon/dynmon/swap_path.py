"""Dynmon's path dataplane with swap-on-read metrics, on the core swap-on-read engine (pynetmon/swap/).

`SwapPathDataplane` offers what `dataplane.PathDataplane` offers (`paths.LoadedPath`): the pivot as
`program`, the user's maps as `maps`, and flipping reads of the swap-on-read maps in `read_map(s)`. What it
adds to the engine is Dynmon's: the path's code compiled from its config, metric maps checked, maps shared
with the other path, and errors named by their JSON path in the dataplane-config.
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..errors import ConfigError, NotSupportedError
from ..maps import Map
from ..object import BPFObject
from ..program import Program
from ..swap import Quiescer, SwapDataplane
from .config import PathConfig
from .dataplane import (
    check_metric_maps,
    compile_path,
    open_path_object,
    pin_maps,
    read_entries,
    reuse_shared_maps,
    select_program,
    user_map_names,
)
from .entries import MapEntries, kind_of, map_address_fields
from .sharing import MapScope, SharedMap, scopes_of
from .tailcalls import tail_call_targets

# The second instance's copy of a `_PINNED` swap-on-read map is pinned beside it: Polycube's rewriter names
# it MAP_NAME_1 (and wants it pinned beforehand); pynetmon pins `<path>_1`, creating it when missing.
PIN_SUFFIX = "_1"

__all__ = ["SwapPathDataplane"]


class SwapPathDataplane:
    """Dynmon's path dataplane with swap-on-read metrics: the same members as `PathDataplane` (`program`,
    `maps`, `read_map`), with the pivot as `program` and flipping reads for the swap-on-read maps.

    Built by `paths.build_path_dataplane` when a metric of the path asks for swap-on-read. A swap-on-read
    map belongs to this path alone: it exists once per instance, so it cannot be one map shared with the
    other path's code (`check_swap_maps_not_shared`).
    """

    def __init__(self, path: PathConfig, direction: str, hook: str, shared: Mapping[str, SharedMap] | None = None,
                 *, shared_origin: str = "the other path", pcn_log: bool = False,
                 quiescer: Quiescer | None = None):
        self.path = path
        self.direction = direction
        self.hook = hook
        self._option_paths: dict[str, str] = {}
        for i, metric in enumerate(path.metric_configs):
            if metric.extraction_options.swap_on_read:
                self._option_paths.setdefault(
                    metric.map_name, f"{direction}-path.metric-configs[{i}].extraction-options.swap-on-read")
        image, preferred, decls = compile_path(path, direction, hook, pcn_log=pcn_log)
        first = open_path_object(image, direction)
        try:
            check_metric_maps(path, direction, first)
            self.map_scopes: dict[str, MapScope] = scopes_of(decls, user_map_names(first))
            externs = [(where, name) for name, where in self._option_paths.items()
                       if self.map_scopes.get(name, MapScope("local")).kind == "extern"]
            if externs:
                raise ConfigError([(where, (f"map {name!r} is swap-on-read but declared \"extern\" (the other "
                                            "path's map); a swap-on-read map exists once per instance and cannot be "
                                            "shared between the paths: declare it in this path"))
                                   for where, name in externs])
            # Swap maps are never taken from elsewhere: each instance needs its own copy.
            outside = {n: m for n, m in (shared or {}).items() if n not in self._option_paths}
            reuse_shared_maps(first, direction, outside, shared_origin, self.map_scopes)
            pin_maps(first, direction, self.map_scopes)
            targets = tail_call_targets(image)
            program_name = select_program(first, direction, hook, preferred, targets)
            _check_program_arrays(first, direction, self.map_scopes)
        except BaseException:
            first.close()
            raise
        pending = [first]

        def open_instance() -> BPFObject:
            if pending:
                return pending.pop()
            obj = open_path_object(image, direction)
            select_program(obj, direction, hook, program_name, targets)
            # A pinned swap map's second copy is pinned at <path>_1; the other pinned maps are the first's.
            pin_maps(obj, direction, self.map_scopes, dict.fromkeys(self._option_paths, PIN_SUFFIX))
            return obj  # SwapDataplane makes it share every non-swap map with the first instance

        try:
            self.swap = SwapDataplane(open_instance, program_name, list(self._option_paths),
                                      quiescer=quiescer)
        except ConfigError as exc:
            problems = [(self._option_paths.get(where, where), reason) for where, reason in exc.problems]
            raise ConfigError(problems) from None
        except NotSupportedError as exc:
            where = next(iter(self._option_paths.values()))
            raise ConfigError([(where, str(exc))]) from exc
        finally:
            for obj in pending:
                obj.close()
        a = self.swap.instances[0]
        self.program: Program = self.swap.program
        self.maps: dict[str, Map] = {name: a.maps[name] for name in user_map_names(a) if name in a.maps}
        self.swap_maps = frozenset(self._option_paths)
        self._addresses = {name: map_address_fields(a.btf, name) for name in self.maps}

    def read_map(self, name: str, empty: bool = False) -> MapEntries:
        """`MapEntries` of map `name`: an atomic flip-and-collect read for swap-on-read maps, a plain batch
        read of the shared map otherwise."""
        if name not in self.swap_maps:
            return read_entries(self.maps[name], empty, self._addresses.get(name, ({}, {})))
        return self._entries(name, *self.swap.read_columns(name, empty))

    def read_maps(self, requests: Mapping[str, bool]) -> dict[str, MapEntries]:
        """`read_map` for several maps ({name: empty} → {name: MapEntries}) with one flip for all of the
        swap-on-read ones: a mutually consistent snapshot, and one wait instead of one per map."""
        swapped = [name for name in requests if name in self.swap_maps]
        columns: dict[str, tuple[list[Any], list[Any]]] = {}
        if swapped:
            columns = self.swap.read_columns_many(swapped, empty=[n for n in swapped if requests[n]])
        return {name: self._entries(name, *columns[name]) if name in columns
                else read_entries(self.maps[name], empty, self._addresses.get(name, ({}, {})))
                for name, empty in requests.items()}

    def _entries(self, name: str, keys: list[Any], values: list[Any]) -> MapEntries:
        addresses = self._addresses.get(name, ({}, {}))
        m = self.maps[name]
        kind = kind_of(m.type)
        if kind == "array":
            if keys != sorted(keys):
                pairs = sorted(zip(keys, values), key=lambda kv: kv[0])
                values = [v for _, v in pairs]
            return MapEntries(name, m.type, kind, [], values, m.per_cpu, *addresses)
        return MapEntries(name, m.type, kind, keys, values, m.per_cpu, *addresses)

    def close(self) -> None:
        """Release both instances and the pivot (detach first: see `SwapDataplane.close`)."""
        self.swap.close()

    def __repr__(self) -> str:
        return (f"<SwapPathDataplane {self.direction} {self.hook} program={self.swap.program_name} "
                f"swap={sorted(self.swap_maps)} flips={self.swap.flips}>")


def _check_program_arrays(obj: BPFObject, direction: str, scopes: dict[str, MapScope]) -> None:
    """Each instance needs program arrays of its own (its tail-called programs write its own swap maps); a
    program array that is the other path's or a pinned one is one map for both: refused."""
    shared = sorted(name for name, spec in obj.maps.items()
                    if spec.type == "prog_array" and scopes.get(name, MapScope("local")).kind not in ("local", "libbpf"))
    if shared:
        raise ConfigError([(f"{direction}-path.code",
                            (f"program array(s) {', '.join(map(repr, shared))} are shared or pinned; with swap-on-read "
                             "each of the two instances needs its own program arrays (declare them plainly)"))])

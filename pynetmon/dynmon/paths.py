"""What a path's dataplane is to the rest of Dynmon, and which one a path's config gets.

`LoadedPath` is the interface `Dynmon` (monitor.py) uses: `dataplane.PathDataplane` implements it for
plain paths, `swap_path.SwapPathDataplane` for paths with swap-on-read metrics. `build_path_dataplane`
picks between the two.
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol

from ..errors import ConfigError
from ..maps import Map
from ..program import Program
from .config import PathConfig
from .dataplane import PathDataplane
from .entries import MapEntries
from .sharing import MapScope, SharedMap, shares
from .swap_path import SwapPathDataplane

__all__ = ["LoadedPath", "build_path_dataplane", "check_swap_maps_not_shared"]


class LoadedPath(Protocol):
    """One direction's loaded dataplane, as Dynmon uses it."""

    direction: str
    hook: str
    program: Program              # what to attach (the pivot for a swap-on-read path)
    maps: dict[str, Map]          # the user's maps by name
    map_scopes: dict[str, MapScope]  # how the code declared each map: which the other path shares (sharing.py)
    swap_maps: frozenset[str]     # maps read through swap-on-read flips (empty for a plain path)

    def read_map(self, name: str, empty: bool = False) -> MapEntries:
        """Every entry of map `name`, decoded; emptied if asked."""
        ...

    def read_maps(self, requests: Mapping[str, bool]) -> dict[str, MapEntries]:
        """`read_map` for several maps ({name: empty}), from one snapshot of the path."""
        ...

    def close(self) -> None:
        """Release what the path loaded."""
        ...


def build_path_dataplane(path: PathConfig, direction: str, hook: str, shared: Mapping[str, SharedMap] | None = None,
                         *, shared_origin: str = "the other path", pcn_log: bool = False) -> LoadedPath:
    """A PathDataplane, or the swap-on-read variant when a metric of the path asks for swap-on-read."""
    if path.swap_on_read:
        return SwapPathDataplane(path, direction, hook, shared, shared_origin=shared_origin, pcn_log=pcn_log)
    return PathDataplane(path, direction, hook, shared, shared_origin=shared_origin, pcn_log=pcn_log)


def check_swap_maps_not_shared(dataplane: LoadedPath | None, other: LoadedPath | None) -> None:
    """ConfigError when a swap-on-read map of one path is one map with a map of the other path's code
    (sharing.py: `_SHARED`/`extern`, libbpf-style maps of one name): the two paths would share one copy of
    a map that has to exist once per instance. Same-named private maps are two maps: no problem."""
    if dataplane is None or other is None:
        return
    problems = []
    for mine, theirs in ((dataplane, other), (other, dataplane)):
        for name in sorted(n for n in mine.swap_maps & set(theirs.maps)
                           if shares(mine.map_scopes[n], theirs.map_scopes[n])):
            owner = mine.direction
            problems.append((f"{owner}-path.code",
                             (f"map {name!r} is swap-on-read on the {owner} path and also defined by the "
                             f"{theirs.direction} path's code; a swap-on-read map cannot be shared between "
                             "paths (rename one of them, or drop swap-on-read)")))
    if problems:
        raise ConfigError(problems)

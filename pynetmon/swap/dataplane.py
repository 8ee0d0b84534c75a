"""Swap-on-read: atomic reads of the maps a monitor's programs keep writing, through the pivot program.

The user's code is loaded twice (instances A and B). Maps that are not swap-on-read are created once and
shared by both instances (libbpf map reuse, so any number of maps declared in any style work unchanged);
each swap-on-read map exists once per instance. The shipped pivot program (bpf/pivot.bpf.c) is what gets
attached: it reads the active index from a one-entry array and tail-calls into slot 0 (A) or 1 (B).

A read flips the index, waits until no invocation that saw the old index can still be running
(quiesce.py: a hop over every CPU, or an RCU grace period), and then reads and empties the now
idle instance's copy of *every* swap-on-read map of the path: the flip moved all of them at once, so each
one's period is collected into `collected` (what has not been returned yet). A read of map M returns M's
collected total; an emptying read also resets it. So every increment lands in exactly one emptying read,
and a non-emptying read returns the whole history.

Folding periods together adds numbers (fields of structs and elements of arrays and per-CPU lists one by
one) and keeps the newest value of anything that is not a number. That is right for counters (packets,
bytes, histogram buckets); it is wrong for gauges (a last-seen timestamp, a maximum, connection state):
such maps should not be swap-on-read, because their state also restarts empty in every period. Leave them
shared (not swap-on-read) and they keep their state. Char arrays (labels) keep the newest value written.

>>> dp = SwapDataplane(code, "handle_rx", {"pkts_by_port"})
>>> link = attach_tc(dp.program, "eth0", "ingress")
>>> dp.read_map("pkts_by_port", empty=True)    # [(key, value), ...] since the last emptying read
>>> link.detach(); dp.close()
"""
from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Self

from ..errors import BPFError, ConfigError, NotSupportedError
from ..maps import BATCH_TYPES, DELETABLE_BATCH_TYPES, Map
from ..object import BPFObject, MapSpec
from ..program import Program
from .collected import DecodedTotals, RawTotals, fold, totals_for
from .quiesce import Quiescer, default_quiescer

__all__ = ["SwapDataplane", "fold"]

# Map types whose contents can be read whole and emptied (hash: lookup-and-delete batch; array: zeroed).
SWAPPABLE_TYPES = BATCH_TYPES
# The pivot program for each attachable program type (a program array accepts one program type only).
PIVOT_PROGRAMS = {"sched_cls": "pivot_tc", "xdp": "pivot_xdp"}

class SwapDataplane:
    """One attach point's user program, loaded twice behind the pivot; `program` is what to attach.

    `code` is a compiled object (bytes or a path) or a callable returning a freshly opened, not yet loaded
    `BPFObject` (so that callers can adjust map sizes or types before each of the two loads). `program`
    names the entry program (type sched_cls or xdp); `swap_maps` names the swap-on-read maps.

    Code that tail-calls works: each instance has program arrays of its own (see `_share_maps`); the pivot
    takes one of the kernel's 33 tail calls. Raises ConfigError for a swap map that does not exist or cannot
    be swapped, NotSupportedError when the code cannot run behind the pivot (the kernel refuses it as a
    tail-call target), and the load errors (VerifierError...) of the code itself. Nothing is attached here.
    """

    def __init__(self, code: bytes | str | os.PathLike | Callable[[], BPFObject], program: str, swap_maps: Iterable[str], *, name: str | None = None,
                 quiescer: Quiescer | None = None):
        self.program_name = program
        self.swap_maps = tuple(dict.fromkeys(swap_maps))
        self.quiescer = quiescer or default_quiescer()
        self._lock = threading.Lock()
        self._open = _opener(code, name)
        self._objects: list[BPFObject] = []
        # What the flips collected per swap-on-read map (collected.py); filled once the first instance loaded.
        self.collected: dict[str, RawTotals | DecodedTotals] = {}
        self.flips = 0
        try:
            first = self._open()
            self._objects.append(first)
            prog_type = _check_code(first, program, self.swap_maps)
            first.load()
            self.collected = {name: totals_for(first.maps[name]) for name in self.swap_maps}
            second = self._open()
            self._objects.append(second)
            _share_maps(second, first, self.swap_maps)
            second.load()
            self._pivot = _load_pivot(prog_type)
            self._objects.append(self._pivot)
            self._fill_slots(second)
        except BaseException:
            self.close()
            raise
        self.instances = (first, second)
        self.program: Program = self._pivot.programs[PIVOT_PROGRAMS[prog_type]]
        self._active_map: Map = self._pivot.maps["pivot_active"]
        self._active = 0

    def _fill_slots(self, second: BPFObject) -> None:
        slots = self._pivot.maps["pivot_slots"]
        for slot, obj in enumerate((self._objects[0], second)):
            prog = obj.programs[self.program_name]
            try:
                slots[slot] = prog.fd
            except BPFError as exc:
                raise NotSupportedError(
                    f"program {self.program_name!r} cannot run behind the swap-on-read pivot: the kernel "
                    f"refused it as a tail-call target of a {prog.type} program ({exc}); swap-on-read needs "
                    "a plain SEC(\"tc\") or SEC(\"xdp\") program") from exc
        self._pivot.maps["pivot_active"][0] = 0

    # ---- reading --------------------------------------------------------------------------------
    @property
    def active(self) -> int:
        """The instance (0 = A, 1 = B) that receives new packets."""
        return self._active

    @property
    def maps(self) -> Mapping[str, Map]:
        """Instance A's maps: the shared ones are the only copy; swap maps here are A's copy only."""
        return self.instances[0].maps

    def shared_map(self, name: str) -> Map:
        """A map both instances write (not swap-on-read): read it directly, as with any single program."""
        if name in self.collected:
            raise ValueError(f"map {name!r} is swap-on-read: read it with read_map()")
        return self.instances[0].maps[name]

    def read_map(self, name: str, empty: bool = False) -> list[tuple[Any, Any]]:
        """Atomic read of swap-on-read map `name`: [(key, value), ...] as `Map.items()` decodes them.

        Flips every swap-on-read map of this dataplane to the other instance, waits for the dataplane to
        stop writing the old one, and collects it. Returns everything collected for `name` since its last
        emptying read (its whole history if it was never read with `empty=True`); `empty=True` restarts it.
        """
        return list(zip(*self.read_columns(name, empty)))

    def read_columns(self, name: str, empty: bool = False) -> tuple[list, list]:
        """`read_map` as two lists, keys and values (no pairing: the fastest form)."""
        if name not in self.collected:
            raise ValueError(f"map {name!r} is not swap-on-read here; swap-on-read maps: "
                             f"{list(self.swap_maps)}")
        with self._lock:
            self._flip_and_collect()
            collected = self.collected[name]
            columns = collected.columns()
            if empty:
                collected.clear()
            return columns

    def read_maps(self, names: Iterable[str] | None = None,
                  empty: bool | Iterable[str] = False) -> dict[str, list[tuple[Any, Any]]]:
        """Several swap-on-read maps from one flip, so they are mutually consistent (every packet that
        reached one of them in this snapshot reached the others in the same snapshot).

        `names` defaults to every swap-on-read map; `empty` is True/False for all, or the names to empty.
        """
        return {name: list(zip(*columns)) for name, columns in self.read_columns_many(names, empty).items()}

    def read_columns_many(self, names: Iterable[str] | None = None,
                          empty: bool | Iterable[str] = False) -> dict[str, tuple[list, list]]:
        """`read_maps` as {name: (keys, values)} (no pairing: the fastest form)."""
        names = list(self.swap_maps if names is None else names)
        unknown = [n for n in names if n not in self.collected]
        if unknown:
            raise ValueError(f"not swap-on-read here: {unknown}; swap-on-read maps: {list(self.swap_maps)}")
        emptied = set(names) if empty is True else set() if empty is False else set(empty)
        with self._lock:
            self._flip_and_collect()
            result = {}
            for name in names:
                collected = self.collected[name]
                result[name] = collected.columns()
                if name in emptied:
                    collected.clear()
            return result

    def flip(self) -> str:
        """Flip and collect without returning anything (returns the wait mechanism used)."""
        with self._lock:
            return self._flip_and_collect()

    def _flip_and_collect(self) -> str:
        idle = self._active
        self._active_map[0] = 1 - idle
        self._active = 1 - idle
        how = self.quiescer.wait()
        self.flips += 1
        maps = self.instances[idle].maps
        for name in self.swap_maps:
            _collect(maps[name], self.collected[name])
        return how

    def missed(self) -> int:
        """Packets the pivot could not hand to an instance (a failed tail call); stays 0 when healthy."""
        return sum(sum(v) for v in self._pivot.maps["pivot_missed"].values())

    @property
    def wait_mechanism(self) -> str:
        return self.quiescer.mechanism

    # ---- lifetime -------------------------------------------------------------------------------
    def close(self) -> None:
        """Release both instances and the pivot. Detach the pivot first: once the pivot's program array is
        released the kernel empties it, and packets then bypass the user's code."""
        while self._objects:
            self._objects.pop().close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return (f"<SwapDataplane {self.program_name!r} swap={list(self.swap_maps)} "
                f"active={'AB'[self._active]} "
                f"flips={self.flips} wait={self.quiescer.mechanism}>")


def _opener(code, name: str | None) -> Callable[[], BPFObject]:
    if callable(code):
        return code
    if isinstance(code, (bytes, bytearray, memoryview)):
        data = bytes(code)
        return lambda: BPFObject(data, name=name)
    path = os.fspath(code)
    return lambda: BPFObject(path, name=name)


def _check_code(obj: BPFObject, program: str, swap_maps: tuple[str, ...]) -> str:
    """What must hold before loading anything; returns the program's type."""
    if program not in obj.programs:
        raise ConfigError([("", (f"no program named {program!r} in the code; "
                                f"programs: {sorted(obj.programs)}"))])
    prog_type = obj.programs[program].type
    if prog_type not in PIVOT_PROGRAMS:
        section = obj.programs[program].section
        raise NotSupportedError(f"swap-on-read needs a TC or XDP program; {program!r} (SEC({section!r})) is "
                                f"{prog_type} to this libbpf")
    problems = []
    for name in swap_maps:
        spec = obj.maps.get(name)
        if spec is None:
            problems.append((name, (f"swap-on-read map {name!r} is not declared in the code; maps: "
                                   f"{sorted(n for n, m in obj.maps.items() if not m.internal)}")))
        elif spec.type not in SWAPPABLE_TYPES:
            problems.append((name, (f"map {name!r} is a {spec.type} map; swap-on-read works on "
                                   f"{', '.join(sorted(SWAPPABLE_TYPES))}")))
    if problems:
        raise ConfigError(problems)
    return prog_type


def _share_maps(second: BPFObject, first: BPFObject, swap_maps: tuple[str, ...]) -> None:
    """Make `second` use `first`'s maps, except the swap-on-read ones and the program arrays: each
    instance's arrays hold its own programs (libbpf fills statically initialised ones at load), so code
    that tail-calls writes the swap maps of the instance the pivot chose, and a flip moves the whole chain
    of tail calls at once."""
    for name, spec in second.maps.items():
        assert isinstance(spec, MapSpec)
        if name in swap_maps or spec.type == "prog_array":
            continue
        live = first.maps.get(name)
        if live is not None:
            spec.reuse(live)


def _load_pivot(prog_type: str) -> BPFObject:
    pivot = BPFObject.from_package("pivot")
    try:
        for prog_name, spec in pivot.programs.items():
            spec.set_autoload(prog_name == PIVOT_PROGRAMS[prog_type])
        pivot.load()
    except BaseException:
        pivot.close()
        raise
    return pivot


def _collect(m: Map, into: RawTotals | DecodedTotals) -> None:
    """Read every entry of an idle instance's map, empty it, and add it to `into`."""
    if m.type in DELETABLE_BATCH_TYPES:
        keys, values, count = m.read_raw(delete=True)  # one kernel operation per batch: read and removed
    else:
        keys, values, count = m.read_raw()
        _zero_array(m, keys, values, count)
    into.add(keys, values, count)


def _zero_array(m: Map, keys: bytes, values: bytes, count: int) -> None:
    """Reset the elements of an idle array that are not zero already (arrays cannot delete)."""
    if not count:
        return
    size = len(values) // count
    zero = bytes(size)
    if values.count(0) == len(values):
        return
    dirty = [i for i in range(count) if values[i * size:(i + 1) * size] != zero]
    ks = m.key_size
    m.update_batch((keys[i * ks:(i + 1) * ks], zero) for i in dirty)

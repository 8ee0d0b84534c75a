"""Keeping the cubes in line with the declarative config (`pynetmon serve --config FILE`, declared.py).

A reload (at start, on SIGHUP, when the file's content changes) reads and checks the whole file first:
a file that does not parse or validate changes nothing. Then it is applied as a diff against what the
previous config made: cubes whose description is unchanged keep running (with their counters), new ones
are created, changed ones replaced, removed ones deleted — all through the same `operations.create_*` and
`Registry.delete` the REST API uses. If any create fails, what this reload did is undone (created cubes
deleted, replaced ones made again from their old description) and the running set is what it was.

Interfaces come and go between reloads: on a link event (link_watch.py) the applied config is expanded
again against the interfaces there are, so a new veth matching `veth*` gets its monitors and a vanished
one loses them; these changes are made one cube at a time (one interface's failure does not stop the
others) and reported in `GET /config`.

The file is polled (stat of the path, following symlinks, then a hash of the bytes): a Kubernetes
ConfigMap update swaps the `..data` symlink, so the path resolves to a new inode. One thread does every
reload and every interface change, in order.
"""
from __future__ import annotations

import hashlib
import logging
import os
import socket
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from .. import netns as _netns
from ..errors import ConfigError, InterfaceNotFoundError
from . import declared, operations
from .declared import Desired, LoadedConfig
from .problems import ApiError, from_exception
from .registry import Registry

log = logging.getLogger("pynetmon.service")

POLL_INTERVAL = 2.0  # seconds between looks at the file (kubelet takes up to a minute to update a ConfigMap)


class ApplyError(Exception):
    """A config that validated but could not be applied (a create failed); nothing of it stays."""

    def __init__(self, problems: list[tuple[str, str]]):
        super().__init__("; ".join(f"{p}: {r}" if p else r for p, r in problems))
        self.problems = problems


@dataclass
class Reload:
    """The outcome of one reload."""

    time: float
    trigger: str
    success: bool
    sha256: str | None
    problems: list[tuple[str, str]] = field(default_factory=list)
    changes: dict[str, list[str]] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        error = "; ".join(f"{p}: {r}" if p else r for p, r in self.problems) or None
        return {"time": self.time, "trigger": self.trigger, "success": self.success, "sha256": self.sha256,
                "error": error, "problems": [{"path": p, "reason": r} for p, r in self.problems],
                "changes": self.changes}


class Reconciler:
    """Applies the config file at `path` to `registry` and keeps it applied."""

    def __init__(self, registry: Registry, path: Path, *, environ: Mapping[str, str] | None = None,
                 poll_interval: float = POLL_INTERVAL):
        self.registry = registry
        self.path = path
        self.owner = str(path)
        self.environ = environ
        self.poll_interval = poll_interval
        self.loaded: LoadedConfig | None = None       # the config that is applied
        self.applied: dict[str, Desired] = {}          # what it made, by cube name
        self.interface_errors: dict[str, tuple[str, str]] = {}  # cube → (its key, why it could not be made)
        self.last: Reload | None = None
        self.last_success: float = 0.0
        self.reloads = 0
        self.failures = 0
        self._lock = threading.RLock()                 # one reload or interface change at a time
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._pending_reload: str | None = None
        self._links_dirty = False
        self._links_retry = False
        self._signature: tuple | None = None
        self._fingerprint: str | None = None
        self._thread: threading.Thread | None = None

    # -- reloads -------------------------------------------------------------------------------
    def reload(self, trigger: str = "request") -> bool:
        """Read, check and apply the file now. True when it is applied; on False the running set is
        unchanged and `last` says why."""
        with self._lock:
            self._signature, self._fingerprint = self._stat(), self._hash()
            sha = self._main_sha()
            try:
                loaded = declared.load(self.path, self.environ)
                desired = declared.expand(loaded, self._interfaces())
                self._check_names(desired)
                changes = self._apply(desired)
            except (ConfigError, ApplyError) as exc:
                return self._record(Reload(time.time(), trigger, False, sha, list(exc.problems)))
            watched = self._watched()
            self.loaded = loaded
            if self._watched() != watched:  # it names other dataplane files: watch those from now on
                self._signature, self._fingerprint = self._stat(), self._hash()
            self.interface_errors.clear()
            return self._record(Reload(time.time(), trigger, True, loaded.sha256, changes=changes))

    def _record(self, outcome: Reload) -> bool:
        self.last = outcome
        self.reloads += 1
        if outcome.success:
            self.last_success = outcome.time
            changed = ", ".join(f"{k} {', '.join(v)}" for k, v in outcome.changes.items() if v) or "no changes"
            log.info("config %s applied (%s): %s", self.path, outcome.trigger, changed)
        else:
            self.failures += 1
            log.error("config %s not applied (%s); the running monitors are unchanged: %s", self.path,
                      outcome.trigger, outcome.to_json()["error"])
        return outcome.success

    def _check_names(self, desired: dict[str, Desired]) -> None:
        """A cube name the config wants that a REST-made cube has: the REST cube stays, the reload fails."""
        taken = {c.name: c for c in self.registry.cubes() if c.owner != self.owner}
        problems = [(d.entry, (f"cube {d.name!r} (on {d.interface}) exists already as a {taken[d.name].service} "
                               "cube made through the REST API (kept in the state file); rename the entry or "
                               "delete that cube"))
                    for d in desired.values() if d.name in taken]
        if problems:
            raise ConfigError(problems)

    def _apply(self, desired: dict[str, Desired]) -> dict[str, list[str]]:
        """Make the declared cubes what `desired` says, all or nothing; ApplyError when a create fails."""
        current = dict(self.applied)
        added = [n for n in desired if n not in current]
        changed = [n for n in desired if n in current and current[n].key != desired[n].key]
        removed = [n for n in current if n not in desired]
        created: list[str] = []
        replaced: list[str] = []
        updated: list[str] = []
        doing: Desired | None = None
        try:
            for name in added:
                doing = desired[name]
                self._create(doing)
                created.append(name)
            for name in changed:
                doing = desired[name]
                if self._update_live(current[name], doing):
                    updated.append(name)
                    continue
                self._delete(name)
                replaced.append(name)
                self._create(doing)
        except Exception as exc:
            assert doing is not None
            problems = self._problems(exc, doing)
            self._undo(created, replaced, [(desired[n], current[n]) for n in updated], current)
            raise ApplyError(problems) from exc
        for name in removed:
            self._delete(name)
        self.applied = dict(desired)
        return {"added": added, "updated": updated, "replaced": replaced, "removed": removed}

    def _update_live(self, old: Desired, new: Desired) -> bool:
        """Change a running cube in place where its service can, keeping what it counted: a ready
        monitor whose only changes are options it can change while running (`live_options`: flows'
        `top`, ...); a Dynmon whose dataplane changed (same type and interface: the new one is loaded
        beside the old, which runs until the swap and stays on error); a capture whose filter, snaplen or
        direction changed (same file). False when the cube has to be replaced."""
        if old.service != new.service or old.interface != new.interface:
            return False
        if new.service == "monitor":
            return self._update_monitor(old, new)
        if new.service == "dynmon":
            if old.body["type"] != new.body["type"]:
                return False
            self.registry.get(new.name, "dynmon").set_config(new.body["dataplane-config"])
            return True
        live = ("capture", "filter", "snaplen")
        if {k: v for k, v in new.body.items() if k not in live} != {k: v for k, v in old.body.items() if k not in live}:
            return False
        from .models import PacketCaptureBody
        from .models import validate as validate_body
        changes = {k: new.body[k] for k in live if k in new.body and new.body.get(k) != old.body.get(k)}
        if "snaplen" in old.body and "snaplen" not in new.body:
            return False  # back to the default: a new capture
        self.registry.get(new.name, "packetcapture").update(validate_body(PacketCaptureBody, changes))
        return True

    def _update_monitor(self, old: Desired, new: Desired) -> bool:
        if {k: v for k, v in new.body.items() if k != "options"} != {k: v for k, v in old.body.items() if k != "options"}:
            return False
        from ..monitors import registry as kinds
        cls = kinds.get(new.body["kind"])
        before, after = dict(old.body.get("options", {})), dict(new.body.get("options", {}))
        changes = {k for k in before.keys() | after.keys() if before.get(k) != after.get(k)}
        if not changes <= cls.live_options:
            return False
        cube = self.registry.get(new.name, "monitor")
        if cube.status != "attached" and new.interface is not None:
            return False  # waiting for its interface: nothing runs to update
        defaults = cls.Options.model_fields
        cube.update({k: after[k] if k in after else defaults[k].default for k in changes})
        return True

    def _undo(self, created: list[str], replaced: list[str], updated: list[tuple[Desired, Desired]],
              previous: dict[str, Desired]) -> None:
        for name in reversed(created):
            self._delete(name)
        for new, old in reversed(updated):
            try:
                self._update_live(new, old)
            except Exception as exc:  # noqa: BLE001 - logged; the monitor runs with the new options
                log.error("config %s: cannot restore %s %r as it was after a failed reload: %s",
                          self.path, old.service, old.name, exc)
        for name in reversed(replaced):
            self._delete(name)
            try:
                self._create(previous[name])
            except Exception as exc:  # noqa: BLE001 - logged; the status shows the cube missing
                log.error("config %s: cannot restore %s %r after a failed reload: %s", self.path,
                          previous[name].service, name, exc)
                self.applied.pop(name, None)

    def _exists(self, name: str) -> bool:
        return any(c.name == name for c in self.registry.cubes())

    # -- one cube ------------------------------------------------------------------------------
    def _create(self, d: Desired) -> None:
        owner = (self.owner, d.entry)
        body = dict(d.body)
        if d.service == "monitor":
            # restored=True: a named interface that does not exist (yet) is waited for
            operations.create_monitor(self.registry, d.name, body, restored=True, owner=owner)
            return
        if d.service == "dynmon":
            cube: Any = operations.create_dynmon(self.registry, d.name, body, owner=owner)
        else:
            cube = operations.create_capture(self.registry, d.name, body, restored=True, owner=owner)
        try:
            try:
                cube.attach(d.interface)
            except InterfaceNotFoundError:
                cube.wait_for(d.interface)  # attached when it appears
        except BaseException:
            self.registry.delete(d.name, owner=self.owner)
            raise

    def _delete(self, name: str) -> None:
        try:
            self.registry.delete(name, owner=self.owner)
        except ApiError as exc:
            if exc.status != 404:
                raise

    def _problems(self, exc: BaseException, d: Desired) -> list[tuple[str, str]]:
        """The error of making `d`, with paths into the config file."""
        err = from_exception(exc)
        where = f"cube {d.name!r}" + (f" on {d.interface}" if d.interface else "")
        out = []
        for path, reason in err.problems or [("", err.message)]:
            if path in ("port", "interface"):
                path = "interfaces"
            elif path.startswith("dataplane-config"):  # the entry's field: inline, or its file
                path = d.config_field + path[len("dataplane-config"):]
            out.append((declared._join(d.entry, path), f"{reason} ({where})"))
        return out

    # -- interfaces ----------------------------------------------------------------------------
    def _interfaces(self) -> list[str]:
        with _netns.enter(self.registry.netns):
            return [name for _, name in socket.if_nameindex()]

    def interfaces_changed(self, retry_failed: bool = True) -> None:
        """Expand the applied config against the interfaces there are now and create or delete the cubes
        of pattern-matched interfaces, each on its own. `retry_failed`: try again the cubes that failed
        before (after a link event; not on every periodic sweep)."""
        with self._lock:
            if self.loaded is None:
                return
            desired = declared.expand(self.loaded, self._interfaces())
            for name in [n for n in self.applied if n not in desired]:
                gone = self.applied.pop(name)
                self._delete(name)
                log.info("config %s: interface %s is gone: %s %r deleted", self.path, gone.interface,
                         gone.service, name)
            for name, d in desired.items():
                if name in self.applied and self.applied[name].key == d.key:
                    continue
                failed = self.interface_errors.get(name)
                if failed is not None and failed[0] == d.key and not retry_failed:
                    continue
                try:
                    if name in self.applied:
                        self._delete(name)
                        del self.applied[name]
                    if any(c.name == name and c.owner != self.owner for c in self.registry.cubes()):
                        raise ApiError(409, f"a cube made through the REST API is named {name!r}")
                    self._create(d)
                except Exception as exc:  # noqa: BLE001 - reported in GET /config; the others go on
                    text = "; ".join(f"{p}: {r}" for p, r in self._problems(exc, d))
                    self.interface_errors[name] = (d.key, text)
                    log.error("config %s: cannot make %s %r for interface %s: %s", self.path, d.service, name,
                              d.interface, text)
                    continue
                self.applied[name] = d
                self.interface_errors.pop(name, None)
                log.info("config %s: %s %r made for interface %s", self.path, d.service, name, d.interface)

    # -- the watching thread -------------------------------------------------------------------
    def start(self) -> Reconciler:
        self._thread = threading.Thread(target=self._run, name="pynetmon-config", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None and self._thread.is_alive():
            self._thread.join(timeout=30)

    def request_reload(self, trigger: str = "SIGHUP") -> None:
        """Reload soon, in the watching thread, even if the file did not change (SIGHUP)."""
        self._pending_reload = trigger
        self._wake.set()

    def link_event(self, ifname: str, present: bool) -> None:
        """A link appeared or vanished (link_watch.py): re-expand the patterns soon."""
        self._links_dirty = self._links_retry = True
        self._wake.set()

    def sweep(self) -> None:
        """The link watcher's periodic check (events may have been lost)."""
        self._links_dirty = True
        self._wake.set()

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(self.poll_interval)
            self._wake.clear()
            if self._stop.is_set():
                return
            try:
                trigger, self._pending_reload = self._pending_reload, None
                if trigger is None and self._changed():
                    trigger = "file change"
                if trigger is not None:
                    self.reload(trigger)
                if self._links_dirty:
                    retry, self._links_dirty, self._links_retry = self._links_retry, False, False
                    self.interfaces_changed(retry)
            except Exception:  # the watcher must outlive any one failure
                log.exception("config %s", self.path)

    def _watched(self) -> list[Path]:
        return [self.path, *(self.loaded.files if self.loaded is not None else ())]

    def _stat(self) -> tuple:
        out: list[tuple[int, ...]] = []
        for path in self._watched():
            try:
                st = os.stat(path)  # follows symlinks: a ConfigMap's swapped `..data` gives a new inode
                out.append((st.st_dev, st.st_ino, st.st_mtime_ns, st.st_size))
            except OSError as exc:
                out.append((exc.errno,))
        return tuple(out)

    def _hash(self) -> str:
        h = hashlib.sha256()
        for path in self._watched():
            try:
                h.update(declared.read_bounded(path, ""))
            except ConfigError as exc:
                h.update(str(exc).encode())
            h.update(b"\0")
        return h.hexdigest()

    def _main_sha(self) -> str | None:
        try:
            return hashlib.sha256(declared.read_bounded(self.path, "")).hexdigest()
        except ConfigError:
            return None

    def _changed(self) -> bool:
        """True when the files' content differs from what the last reload read (a touch is no change)."""
        signature = self._stat()
        if signature == self._signature:
            return False
        self._signature = signature
        return self._hash() != self._fingerprint

    # -- reading the state -----------------------------------------------------------------------
    def status(self) -> dict[str, Any]:
        """What `GET /config` shows."""
        with self._lock:
            cubes = {c.name: c for c in self.registry.cubes() if c.owner == self.owner}
            applied = [{"name": n, "service": d.service, "entry": d.entry, "interface": d.interface,
                        "status": cubes[n].status if n in cubes else "missing"}
                       for n, d in sorted(self.applied.items())]
            return {
                "file": self.owner,
                "sha256": self.last.sha256 if self.last else None,
                "applied-sha256": self.loaded.sha256 if self.loaded else None,
                "last-reload": self.last.to_json() if self.last else None,
                "last-success-time": self.last_success or None,
                "reloads": self.reloads,
                "failed-reloads": self.failures,
                "entries": self.loaded.config.model_dump(mode="json", by_alias=True, exclude_none=True)
                if self.loaded else None,
                "cubes": applied,
                "interface-errors": [{"name": n, "error": e} for n, (_, e) in sorted(self.interface_errors.items())],
            }

    def families(self) -> list[Metric]:
        """The reload metrics, in Prometheus' and Alertmanager's naming."""
        ok = GaugeMetricFamily("pynetmon_config_last_reload_success",
                               "1 when the last reload of the config file applied it", value=1 if self.last and
                               self.last.success else 0)
        when = GaugeMetricFamily("pynetmon_config_last_reload_success_timestamp_seconds",
                                 "time of the last reload that applied the config file", value=self.last_success)
        reloads = CounterMetricFamily("pynetmon_config_reloads", "reloads of the config file (start, SIGHUP, "
                                      "file change)", value=self.reloads)
        failed = CounterMetricFamily("pynetmon_config_reloads_failed", "reloads that left the running set "
                                     "unchanged (invalid file, or a create failed and was undone)",
                                     value=self.failures)
        cubes = GaugeMetricFamily("pynetmon_config_cubes", "cubes the applied config file runs",
                                  value=len(self.applied))
        info = GaugeMetricFamily("pynetmon_config_info", "the applied config file (value 1)",
                                 labels=["sha256"])
        if self.loaded is not None:
            info.add_metric([self.loaded.sha256], 1)
        return [ok, when, reloads, failed, cubes, info]

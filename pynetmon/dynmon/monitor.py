"""`Dynmon`: a dynamic monitor whose dataplane is injected as Polycube-style configuration.

>>> mon = Dynmon("monitor")
>>> mon.set_dataplane_config("examples/dynmon/packet_counter.json")
>>> mon.attach("eth0")                       # TC ingress/egress as the config says
>>> mon.metrics("ingress", "packets_total")  # {"name": "packets_total", "value": [42], "timestamp": ...}
>>> print(mon.open_metrics())
>>> mon.close()

Changing the configuration builds and loads the whole new dataplane first, then swaps the attached
programs in place (no moment without a program), then releases the old one. A failure at any stage
(invalid JSON, unknown map, compile error, verifier rejection, attach error) leaves the running
dataplane attached and counting.
"""
from __future__ import annotations

import logging
import operator
import threading
from collections.abc import Mapping
from typing import Any, Self

from prometheus_client.core import Metric

from ..errors import ConfigError, Error
from ..link import DIRECTIONS
from .attachment import Attachment, check_mode, ingress_hook
from .config import DataplaneConfig, PathConfig, parse_config
from .dialect import EXTERN, map_declarations
from .entries import MapEntries
from .json_text import JsonRenderer, dumps
from .metrics import metric_json, timestamp_us
from .openmetrics import FORMATS, exposition, shape_problem
from .paths import LoadedPath, build_path_dataplane, check_swap_maps_not_shared
from .polycube import polycube_text, raw_json_value
from .series import MetricRenderer
from .sharing import LIBBPF, SELF, SharedMap

log = logging.getLogger("pynetmon.dynmon")


class MetricNotFoundError(Error, KeyError):
    """No metric of that name is configured on that path."""

    def __init__(self, direction: str, name: str, known: list[str]):
        msg = f"no {direction} metric named {name!r}; {direction} metrics are: {', '.join(known) or '(none)'}"
        Error.__init__(self, msg)
        self.direction = direction
        self.metric = name

    def __str__(self) -> str:
        return self.args[0]


class Dynmon:
    """A dynamic monitor: user code on the ingress and/or egress path of one interface, read as metrics.

    Thread safety: configuration changes are serialized; reads may run while a new configuration is
    compiled and loaded (they wait only for the final swap, which takes microseconds).
    """

    def __init__(self, name: str, config: Any = None, *, pcn_log: bool = False):
        """`config`: an optional first dataplane-config. `pcn_log=True` sends Polycube's pcn_log() calls to
        the trace pipe (/sys/kernel/tracing/trace_pipe); by default they compile to nothing."""
        self.name = name
        self.pcn_log = pcn_log
        self._change_lock = threading.RLock()   # one configuration change / attach / detach at a time
        self._state_lock = threading.RLock()    # what reads see: taken by reads and by the final swap
        self._configs: dict[str, PathConfig | None] = dict.fromkeys(DIRECTIONS)
        self._paths: dict[str, LoadedPath | None] = dict.fromkeys(DIRECTIONS)
        # (direction, metric name, labels) → its MetricRenderer (pynetmon/dynmon/series.py): see families()
        self._family_cache: dict[tuple, MetricRenderer] = {}
        # (direction, metric name, per_cpu) → its JsonRenderer (pynetmon/dynmon/json_text.py): see metrics_json()
        self._json_cache: dict[tuple, JsonRenderer] = {}
        self._text_cache: dict[str, tuple[list, str]] = {}  # format → (families, open_metrics() text)
        self._attachment: Attachment | None = None
        self._mode = "tc"
        self._closed = False
        if config is not None:
            self.set_dataplane_config(config)

    # ---- configuration ------------------------------------------------------------------------------
    @property
    def dataplane_config(self) -> dict:
        """The configuration that runs, in Polycube's JSON shape (empty paths as {})."""
        with self._state_lock:
            return {f"{d}-path": (self._configs[d].to_json() if self._configs[d] else {}) for d in DIRECTIONS}

    def set_dataplane_config(self, config: Any) -> None:
        """Inject a dataplane-config (dict, JSON text, path of a JSON file, or a DataplaneConfig).

        A path missing from `config` keeps running as it is; `{}` removes a path's program. Raises
        ConfigError (every problem with its JSON path), CompileError (clang's diagnostics at the user's
        lines), VerifierError (the verifier's log) or an attach error; the old dataplane then still runs.
        """
        parsed = parse_config(config)
        self._replace({d: parsed.path(d) for d in DIRECTIONS if parsed.path(d) is not None})

    def reset_dataplane_config(self) -> None:
        """Remove both paths' programs (the interface stays attached, with nothing running on it)."""
        self._replace({d: PathConfig() for d in DIRECTIONS})

    def _replace(self, changes: dict[str, PathConfig]) -> None:
        with self._change_lock:
            self._check_open()
            effective = {d: changes.get(d, self._configs[d]) for d in DIRECTIONS}
            _check_shared_names(effective)
            built = self._build(changes, ingress_hook(self._mode))
            try:
                if self._attachment is not None:
                    self._attachment.apply({d: built[d].program if built[d] else None for d in changes})
            except BaseException:
                _close_all(built.values())
                raise
            with self._state_lock:
                old = [self._paths[d] for d in changes]
                self._paths.update(built)
                self._configs.update({d: (None if c.empty else c) for d, c in changes.items()})
                _close_all(old)
                self._family_cache.clear()
                self._json_cache.clear()
                self._text_cache.clear()
            log.info("dynmon %r: dataplane replaced on %s", self.name, ", ".join(changes))

    def _build(self, changes: dict[str, PathConfig], hook_for_ingress: str, keep: dict | None = None) -> dict:
        """Load the changed paths (ingress first, unless its code uses `extern` maps the new egress path
        defines), so the second can share the first's maps; all or nothing."""
        built: dict[str, LoadedPath | None] = {}
        try:
            for direction in _load_order(changes):
                if direction not in changes:
                    continue
                cfg = changes[direction]
                if cfg.empty:
                    built[direction] = None
                    continue
                other = "egress" if direction == "ingress" else "ingress"
                other_dp = built.get(other) if other in changes else self._paths[other]
                # What the other path offers; which of it this path shares follows its declarations.
                shared = {name: SharedMap(m, other_dp.map_scopes.get(name, LIBBPF))
                          for name, m in other_dp.maps.items()} if other_dp is not None else {}
                if keep:
                    shared.update({name: SharedMap(m, SELF) for name, m in keep.items()})
                hook = hook_for_ingress if direction == "ingress" else "tc"
                dp = build_path_dataplane(cfg, direction, hook, shared, shared_origin=f"the {other} path's code",
                                          pcn_log=self.pcn_log)
                built[direction] = dp
                _check_shapes(cfg, direction, dp)
                check_swap_maps_not_shared(dp, other_dp)
        except BaseException:
            _close_all(built.values())
            raise
        return built

    # ---- attachment ---------------------------------------------------------------------------------
    def attach(self, ifname: str, mode: str = "tc", *, netns: str | None = None) -> None:
        """Attach to `ifname`: "tc" (default) runs both paths on TC; "xdp_skb"/"xdp_drv" run the ingress
        path on XDP (generic / driver mode) and the egress path on TC egress. One interface at a time.

        Code in Polycube style is recompiled for XDP when needed (its maps are kept, so counts go on);
        libbpf-style code needs a SEC("xdp") program for the XDP modes. An interface that does not exist
        (in `netns`) raises InterfaceNotFoundError naming it, also before any dataplane is set.
        """
        check_mode(mode)
        with self._change_lock:
            self._check_open()
            if self._attachment is not None:
                a = self._attachment
                raise Error(f"dynmon {self.name!r} is already attached to {a.ifname} ({a.mode}); detach() first "
                            "(a dynmon runs on one interface at a time)")
            attachment = Attachment(ifname, mode, netns)  # InterfaceNotFoundError when it does not exist
            rebuilt = None
            hook = ingress_hook(mode)
            current = self._paths["ingress"]
            if current is not None and current.hook != hook:
                rebuilt = self._build({"ingress": self._configs["ingress"]}, hook, keep=current.maps)["ingress"]
            paths = dict(self._paths, **({"ingress": rebuilt} if rebuilt else {}))
            try:
                attachment.apply({d: dp.program for d, dp in paths.items() if dp is not None})
            except BaseException:
                _close_all([rebuilt])
                raise
            with self._state_lock:
                if rebuilt is not None:
                    self._paths["ingress"] = rebuilt
                    _close_all([current])
                    self._family_cache.clear()
                    self._json_cache.clear()
                    self._text_cache.clear()
                self._attachment = attachment
                self._mode = mode
            log.info("dynmon %r attached to %s (%s)", self.name, ifname, mode)

    def detach(self) -> None:
        """Remove the programs from the interface (the loaded dataplane and its maps stay)."""
        with self._change_lock:
            if self._attachment is not None:
                attachment, self._attachment = self._attachment, None
                attachment.detach()

    @property
    def attachment(self) -> dict | None:
        """Where the monitor is attached ({"ifname", "mode", "netns", "links"}), or None."""
        return self._attachment.describe() if self._attachment else None

    # ---- metrics ------------------------------------------------------------------------------------
    def metrics(self, direction: str | None = None, name: str | None = None, *, per_cpu: bool = False,
                raw: bool = False) -> Any:
        """Metrics in Polycube's JSON shape.

        `metrics()` → {"ingress-metrics": [...], "egress-metrics": [...]}; `metrics("ingress")` → the
        list of {"name", "value", "timestamp"}; `metrics("ingress", "packets_total")` → one of them.
        Per-CPU maps are summed unless `per_cpu=True`. `raw=True` gives Polycube's numbers instead
        (`__be` fields and addresses as the native integers of their bytes, per-CPU values unsummed:
        pynetmon/dynmon/polycube.py). Reading a metric with empty-on-read empties it.
        The metrics of a path are read together: one snapshot (one swap-on-read flip), each map read once.
        """
        if direction is None:
            with self._state_lock:
                return {f"{d}-metrics": self.metrics(d, per_cpu=per_cpu, raw=raw) for d in DIRECTIONS}
        direction = _direction(direction)
        with self._state_lock:
            metrics = self._chosen(direction, name)
            entries = self._read(direction, metrics)
            if raw:
                out = [{"name": m.name, "value": self._raw_value(direction, m, entries[m.map_name]),
                        "timestamp": timestamp_us()} for m in metrics]
            else:
                out = [metric_json(m.name, entries[m.map_name], per_cpu) for m in metrics]
        return out[0] if name is not None else out

    def _raw_value(self, direction: str, metric, entries: MapEntries) -> list:
        m = self._paths[direction].maps[metric.map_name]
        return raw_json_value(entries, m.key_codec, m.value_codec)

    def polycube_open_metrics(self) -> str:
        """The metrics that have open-metrics-metadata as Polycube's dynmon writes them (`#HELP`/`#TYPE`
        per sample, `NAME_<i>` per array element, integers; see pynetmon/dynmon/polycube.py). Not strict
        OpenMetrics: `open_metrics()` is; this is for clients that parse Polycube's text."""
        paths = []
        with self._state_lock:
            for direction in DIRECTIONS:
                cfg = self._configs[direction]
                exported = [m for m in (cfg.metric_configs if cfg else []) if m.open_metrics_metadata is not None]
                entries = self._read(direction, exported)
                paths.append([(m, self._raw_value(direction, m, entries[m.map_name])) for m in exported])
        return polycube_text(paths[0], paths[1])

    def _chosen(self, direction: str, name: str | None) -> list:
        """The metric configs of a path, or the one named `name` (MetricNotFoundError naming the others)."""
        cfg = self._configs[direction]
        metrics = cfg.metric_configs if cfg else []
        if name is None:
            return metrics
        chosen = [m for m in metrics if m.name == name]
        if not chosen:
            raise MetricNotFoundError(direction, name, [m.name for m in metrics])
        return chosen

    def metrics_json(self, direction: str | None = None, name: str | None = None, *, per_cpu: bool = False) -> bytes:
        """`metrics(...)` as the JSON text the REST service sends (compact, UTF-8), written in bulk: a
        metric whose map did not change since the previous call costs a read and a comparison, one that
        changed costs the entries that changed (see pynetmon/dynmon/json_text.py)."""
        if direction is None:
            with self._state_lock:
                parts = [f'"{d}-metrics":' + self._metrics_text(d, None, per_cpu) for d in DIRECTIONS]
            return ("{" + ",".join(parts) + "}").encode("utf-8")
        return self._metrics_text(_direction(direction), name, per_cpu).encode("utf-8")

    def _metrics_text(self, direction: str, name: str | None, per_cpu: bool) -> str:
        with self._state_lock:
            metrics = self._chosen(direction, name)
            entries = self._read(direction, metrics)
            dp = self._paths[direction]
            items = []
            for m in metrics:
                key = (direction, m.name, per_cpu)
                renderer = self._json_cache.get(key)
                if renderer is None or renderer.dataplane is not dp:
                    renderer = self._json_cache[key] = JsonRenderer(dp, per_cpu)
                value = renderer.value_text(entries[m.map_name])
                items.append(f'{{"name":{dumps(m.name)},"value":{value},"timestamp":{timestamp_us()}}}')
        return items[0] if name is not None else "[" + ",".join(items) + "]"

    def families(self, labels: Mapping[str, str] | None = None) -> list[Metric]:
        """Every metric that has open-metrics-metadata, as prometheus_client metric families (what
        `open_metrics()` renders; a custom collector can yield them). `labels` are added to every sample
        (a configured static label of the same name is exported as `exported_<name>`).

        A metric name that both paths export gives two families of that name, one per path, whose samples
        carry a `direction` label ("ingress" / "egress"); `open_metrics()` writes them as one family.

        Each path is read as one snapshot (one swap-on-read flip). A metric whose map content is
        unchanged since the previous call with the same `labels` gives the very same family objects as
        then (treat them as read-only), so callers can reuse whatever they derived from them.
        """
        labels = dict(labels or {})
        fams: list[Metric] = []
        with self._state_lock:
            both = both_paths_names(self._configs)
            for direction in DIRECTIONS:
                cfg, dp = self._configs[direction], self._paths[direction]
                exported = [m for m in (cfg.metric_configs if cfg else []) if m.open_metrics_metadata is not None]
                entries = self._read(direction, exported)
                for m in exported:
                    # A name both paths use: one family, its samples told apart by `direction`.
                    mine = {**labels, "direction": direction} if m.name in both else labels
                    fams.extend(self._families_of(direction, dp, m, entries[m.map_name], mine))
        return fams

    def _families_of(self, direction: str, dp, metric, entries: MapEntries, labels: dict) -> list[Metric]:
        # One renderer per (path, metric, labels): it keeps what the next read needs (the last read's
        # families, label texts of live keys), no more; a new dataplane or config gets a new one.
        key = (direction, metric.name, tuple(labels.items()))
        renderer = self._family_cache.get(key)
        if renderer is None or not renderer.serves(dp, metric, labels):
            renderer = self._family_cache[key] = MetricRenderer(dp, metric, labels)
        return renderer.families(entries)

    def open_metrics(self, fmt: str = "openmetrics") -> str:
        """Every metric that has open-metrics-metadata, as OpenMetrics text (ends with "# EOF").

        `fmt="prometheus"` gives Prometheus' text format 0.0.4 instead (for `promtool check metrics` and
        scrapers that do not negotiate OpenMetrics); the samples are the same.
        """
        if fmt not in FORMATS:  # before reading: an empty-on-read metric must not be emptied for nothing
            raise ValueError(f"format must be one of {', '.join(FORMATS)}, not {fmt!r}")
        fams = self.families()
        with self._state_lock:
            last = self._text_cache.get(fmt)
            if last is not None and len(last[0]) == len(fams) and all(map(operator.is_, last[0], fams)):
                return last[1]  # every family is the one rendered last time: so is the text
        text = exposition(fams, fmt)
        with self._state_lock:
            self._text_cache[fmt] = (fams, text)
        return text

    def _read(self, direction: str, metrics: list) -> dict[str, MapEntries]:
        """The entries of every map `metrics` read, from one snapshot of the path (call with _state_lock
        held). A map read by several metrics is read once, and emptied if any of them is empty-on-read."""
        if not metrics:
            return {}
        requests: dict[str, bool] = {}
        for m in metrics:
            requests[m.map_name] = requests.get(m.map_name, False) or m.extraction_options.empty_on_read
        return self._paths[direction].read_maps(requests)

    def path_dataplane(self, direction: str) -> LoadedPath | None:
        """The loaded dataplane of a path (a PathDataplane or the swap-on-read variant), or None."""
        return self._paths[_direction(direction)]

    # ---- lifetime -----------------------------------------------------------------------------------
    def close(self) -> None:
        """Detach and release everything. Idempotent."""
        with self._change_lock:
            if self._closed:
                return
            try:
                self.detach()
            finally:
                with self._state_lock:
                    _close_all(self._paths.values())
                    self._paths = dict.fromkeys(DIRECTIONS)
                    self._family_cache.clear()
                    self._json_cache.clear()
                    self._text_cache.clear()
                    self._configs = dict.fromkeys(DIRECTIONS)
                    self._closed = True

    def _check_open(self) -> None:
        if self._closed:
            raise Error(f"dynmon {self.name!r} is closed")

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        where = f" on {self._attachment.ifname} ({self._attachment.mode})" if self._attachment else ""
        paths = ", ".join(f"{d}={c.name or 'unnamed'}" for d, c in self._configs.items() if c) or "no dataplane"
        return f"<Dynmon {self.name!r}{where}: {paths}>"


def _direction(direction: str) -> str:
    d = direction.removesuffix("-metrics").removesuffix("-path")
    if d not in DIRECTIONS:
        raise ValueError(f"direction must be 'ingress' or 'egress', not {direction!r}")
    return d


def _load_order(changes: Mapping[str, PathConfig]) -> tuple[str, ...]:
    """Ingress first, unless both paths change and only the ingress code declares `extern` maps (they
    refer to the egress path's _SHARED/_PUBLIC maps, which must exist first)."""
    def externs(direction: str) -> bool:
        code = changes[direction].code if direction in changes else None
        try:
            return isinstance(code, str) and any(d.scope == EXTERN for d in map_declarations(code))
        except ConfigError:
            return False  # reported with its JSON path when the path is built
    if "ingress" in changes and "egress" in changes and externs("ingress") and not externs("egress"):
        return ("egress", "ingress")
    return DIRECTIONS


def _close_all(dataplanes) -> None:
    for dp in dataplanes:
        if dp is not None:
            try:
                dp.close()
            except Exception:
                log.exception("closing a dataplane failed")


def _check_shared_names(configs: dict[str, PathConfig | None]) -> None:
    """A metric name may be used by both paths (Polycube: two metrics, one per path); exported to
    OpenMetrics, both become one family told apart by a `direction` label, so their types must agree."""
    problems = []
    ingress, egress = (_exported(configs[d]) for d in DIRECTIONS)
    for name in sorted(ingress.keys() & egress.keys()):
        (i, mine), (_, theirs) = egress[name], ingress[name]
        if mine.type != theirs.type:
            problems.append((f"egress-path.metric-configs[{i}].open-metrics-metadata.type",
                             (f"metric {name!r} is a {theirs.type} on the ingress path and a {mine.type} here; a "
                              "name used by both paths is one OpenMetrics family (told apart by the direction "
                              "label), so both must have the same type")))
    if problems:
        raise ConfigError(problems)


def _exported(cfg: PathConfig | None) -> dict[str, tuple[int, Any]]:
    """{metric name: (index, open-metrics-metadata)} of a path's metrics exported to OpenMetrics."""
    return {m.name: (i, m.open_metrics_metadata) for i, m in enumerate(cfg.metric_configs if cfg else [])
            if m.open_metrics_metadata is not None}


def both_paths_names(configs: Mapping[str, PathConfig | None]) -> frozenset[str]:
    """The OpenMetrics metric names that both paths export (their samples get a `direction` label)."""
    ingress, egress = (_exported(configs[d]) for d in DIRECTIONS)
    return frozenset(ingress.keys() & egress.keys())


def _check_shapes(cfg: PathConfig, direction: str, dp) -> None:
    problems = []
    for i, metric in enumerate(cfg.metric_configs):
        problem = shape_problem(metric, dp.maps[metric.map_name])
        if problem:
            problems.append((f"{direction}-path.metric-configs[{i}].{problem[0]}", problem[1]))
    if problems:
        raise ConfigError(problems)


__all__ = ["DataplaneConfig", "Dynmon", "MetricNotFoundError"]

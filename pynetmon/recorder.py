"""Record any metric source over time into a pandas DataFrame, in the background.

>>> with pynetmon.Recorder(monitor, interval=0.5) as rec:   # a monitor, Dynmon, Map or callable
...     time.sleep(10)
>>> rec.frame()           # one row per sample, one column per numeric leaf ("ingress.packets_total")
>>> rec.rates()           # per-second rates of the counters, resets and wraps handled

A source is sampled once at start, every `interval` seconds (on a fixed schedule, so late samples do
not drift), and once more at stop, so that a recording covers exactly the time it ran. Each sample is
flattened into numeric columns: nested dict keys joined with ".", lists as "[i]", Dynmon's metric lists
({"name", "value"}) by metric name, histograms ({"buckets", "count", "sum"}) as their count and sum.
Memory is bounded: at most `max_rows` samples (the oldest are dropped) and `max_columns` columns.
"""
from __future__ import annotations

import itertools
import math
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any, Self

from .frames.extra import require

__all__ = ["Recorder", "counter_deltas", "flatten_sample"]

Sample = dict[str, float]


def flatten_sample(obj: Any, prefix: str = "", out: Sample | None = None) -> Sample:
    """The numeric leaves of a snapshot as {column: number} (see the module docstring for names)."""
    out = {} if out is None else out
    if isinstance(obj, bool):
        out[prefix or "value"] = int(obj)
    elif isinstance(obj, (int, float)):
        out[prefix or "value"] = obj
    elif isinstance(obj, dict):
        if isinstance(obj.get("buckets"), list) and "count" in obj:  # a histogram: its totals
            for name in ("count", "sum"):
                if isinstance(obj.get(name), (int, float)):
                    out[f"{prefix}.{name}" if prefix else name] = obj[name]
            return out
        if _is_metric(obj):  # a Dynmon metric
            flatten_sample(obj["value"], f"{prefix}.{obj['name']}" if prefix else obj["name"], out)
            return out
        for key, value in obj.items():
            flatten_sample(value, f"{prefix}.{key}" if prefix else str(key), out)
    elif isinstance(obj, (list, tuple)):
        if len(obj) == 1 and not isinstance(obj[0], (dict, list, tuple)):
            flatten_sample(obj[0], prefix, out)  # Polycube's one-element arrays: the number itself
        else:
            for i, value in enumerate(obj):
                # Metrics in a list are told apart by their names, not their places.
                flatten_sample(value, prefix if _is_metric(value) else f"{prefix}[{i}]", out)
    return out


def _is_metric(obj: Any) -> bool:
    return isinstance(obj, dict) and isinstance(obj.get("name"), str) and "value" in obj


def _map_sampler(m: Any) -> Callable[[], Any]:
    """A Map as a source: {key: value} with per-CPU values summed (keys as text: "0", "saddr=1,dport=80")."""
    def sample() -> dict:
        out = {}
        for key, value in m.items():
            if m.per_cpu:
                value = _sum_cpus(value)
            out[_key_text(key)] = value
        return out
    return sample


def _sum_cpus(values: list) -> Any:
    if isinstance(values[0], dict):
        return {k: _sum_cpus([v[k] for v in values]) for k in values[0]}
    if isinstance(values[0], (int, float)):
        return sum(values)
    return values[0]


def _key_text(key: Any) -> str:
    if isinstance(key, dict):
        return ",".join(f"{k}={_key_text(v)}" for k, v in key.items())
    return key.hex() if isinstance(key, bytes) else str(key)


def _sampler(source: Any) -> Callable[[], Any]:
    from .maps import Map
    if isinstance(source, Map):
        return _map_sampler(source)
    if callable(getattr(source, "snapshot", None)):
        return source.snapshot
    if callable(getattr(source, "metrics", None)):  # Dynmon: every metric of both paths
        return source.metrics
    if callable(source):
        return source
    raise TypeError(f"a Recorder samples a Map, a monitor (snapshot()), a Dynmon (metrics()) or a callable "
                    f"returning a dict; got {type(source).__name__}")


def counter_deltas(values: list[float | None], wrap_bits: tuple[int, ...] = (32, 64)) -> list[float | None]:
    """Increments between consecutive readings of a counter (None for the first reading or a gap).

    A decrease is a wrap when the previous reading was in the upper half of a `wrap_bits` counter's range
    and the new one fits that range (the counter went round: add 2**bits), else a reset (the counter
    restarted from zero: the increment is the new reading)."""
    out: list[float | None] = [None]
    for prev, cur in itertools.pairwise(values):
        if prev is None or cur is None or _nan(prev) or _nan(cur):
            out.append(None)
        elif cur >= prev:
            out.append(cur - prev)
        else:
            for bits in wrap_bits:
                top = 1 << bits
                if top // 2 <= prev < top and cur < top:
                    out.append(cur + top - prev)
                    break
            else:
                out.append(cur)
    return out


def _nan(x: float) -> bool:
    return isinstance(x, float) and math.isnan(x)


class Recorder:
    """Samples `source` every `interval` seconds in a background thread (see the module docstring).

    `source`: a `Map`, an object with `snapshot()` (the ready monitors), an object with `metrics()`
    (Dynmon), or a callable returning a dict or a number. `max_rows` bounds the samples kept, `max_columns`
    the columns (leaves beyond it are dropped and counted in `dropped_columns`). Errors raised by the
    source are counted in `errors` (the last in `last_error`) and do not stop the recording.
    """

    def __init__(self, source: Any, interval: float = 1.0, *, max_rows: int = 10_000, max_columns: int = 1_000,
                 start: bool = True):
        if not interval > 0:
            raise ValueError(f"interval must be a positive number of seconds, not {interval!r}")
        if max_rows < 2 or max_columns < 1:
            raise ValueError(f"max_rows must be at least 2 and max_columns at least 1 "
                             f"(got {max_rows}, {max_columns})")
        self.interval = float(interval)
        self.max_rows = max_rows
        self.max_columns = max_columns
        self._sample = _sampler(source)
        self._rows: deque[tuple[float, float, Sample]] = deque(maxlen=max_rows)  # (wall, monotonic, sample)
        self._columns: dict[str, None] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.errors = 0
        self.last_error: BaseException | None = None
        self.dropped_columns = 0
        if start:
            self.start()

    # ---- running ----------------------------------------------------------------------------------
    def start(self) -> Recorder:
        """Start sampling (a first sample is taken at once). Starting a running recorder does nothing."""
        if self._thread is not None and self._thread.is_alive():
            return self
        self._stop.clear()
        self.sample()
        self._thread = threading.Thread(target=self._run, name="pynetmon-recorder", daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        begin = time.monotonic()
        ticks = 1
        while not self._stop.wait(max(0.0, begin + ticks * self.interval - time.monotonic())):
            self.sample()
            # A sample that took longer than the interval skips the ticks it missed instead of bursting.
            ticks = max(ticks + 1, math.floor((time.monotonic() - begin) / self.interval) + 1)

    def sample(self) -> Sample | None:
        """Take one sample now (the thread calls this; callers may too). Returns it, or None on error."""
        wall, mono = time.time(), time.monotonic()
        try:
            raw = self._sample()
        except Exception as exc:  # noqa: BLE001 - a failing source must not end the recording
            with self._lock:
                self.errors += 1
                self.last_error = exc
            return None
        flat = flatten_sample(raw)
        with self._lock:
            for name in list(flat):
                if name not in self._columns:
                    if len(self._columns) >= self.max_columns:
                        del flat[name]
                        self.dropped_columns += 1
                        continue
                    self._columns[name] = None
            self._rows.append((wall, mono, flat))
        return flat

    def stop(self) -> None:
        """Stop sampling after one last sample (so the recording ends now, not at the last tick)."""
        thread = self._thread
        if thread is None:
            return
        self._stop.set()
        thread.join()
        self._thread = None
        self.sample()

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def __len__(self) -> int:
        return len(self._rows)

    # ---- results ----------------------------------------------------------------------------------
    def frame(self) -> Any:
        """The samples as a DataFrame: a DatetimeIndex `time` (UTC) and one column per leaf (NaN where
        a sample lacked it), plus `elapsed`, seconds since the first kept sample (monotonic clock)."""
        pd = require("pandas", "Recorder.frame()")
        with self._lock:
            rows = list(self._rows)
            columns = list(self._columns)
        if not rows:
            return pd.DataFrame(columns=["elapsed", *columns], index=pd.DatetimeIndex([], name="time", tz="UTC"))
        first = rows[0][1]
        data = {"elapsed": [mono - first for _, mono, _ in rows]}
        for name in columns:
            data[name] = [sample.get(name, math.nan) for _, _, sample in rows]
        index = pd.DatetimeIndex(pd.to_datetime([wall for wall, _, _ in rows], unit="s", utc=True), name="time")
        return pd.DataFrame(data, index=index)

    def deltas(self, columns: list[str] | None = None) -> Any:
        """Increments of counter columns between samples (first row dropped), resets and wraps handled
        (`counter_deltas`), plus `interval`, the seconds between the two samples."""
        pd = require("pandas", "Recorder.deltas()")
        frame = self.frame()
        names = self._counter_columns(frame, columns)
        elapsed = frame["elapsed"].tolist()
        data: dict[str, list] = {"interval": [None] + [b - a for a, b in itertools.pairwise(elapsed)]}
        for name in names:
            values = [None if _nan(v) else v for v in frame[name].tolist()]
            data[name] = counter_deltas(values)
        out = pd.DataFrame(data, index=frame.index).iloc[1:]
        return out.astype(float)

    def rates(self, columns: list[str] | None = None) -> Any:
        """Per-second rates of counter columns (every numeric column unless `columns` is given): the
        increment since the previous sample (resets and wraps handled) over the time between them."""
        deltas = self.deltas(columns)
        interval = deltas.pop("interval")
        return deltas.div(interval, axis=0)

    def _counter_columns(self, frame: Any, columns: list[str] | None) -> list[str]:
        if columns is None:
            return [c for c in frame.columns if c != "elapsed"]
        unknown = [c for c in columns if c not in frame.columns]
        if unknown:
            raise KeyError(f"no recorded column(s) {unknown}; recorded: {[c for c in frame.columns if c != 'elapsed']}")
        return list(columns)

    def _repr_html_(self) -> str:
        from .frames.html import table_html
        frame = self.frame().tail(10)
        columns = ["time", *frame.columns]
        rows = ([str(t), *(f"{v:g}" if isinstance(v, float) else v for v in row)]
                for t, row in zip(frame.index, frame.itertuples(index=False)))
        state = "running" if self.running else "stopped"
        return table_html(columns, rows, f"Recorder ({state}, every {self.interval:g} s): {len(self)} samples",
                          f"last {len(frame)} shown; {self.errors} source errors" if self.errors else
                          f"last {len(frame)} shown")

    def __repr__(self) -> str:
        return f"<Recorder every {self.interval:g}s, {len(self)} samples, {'running' if self.running else 'stopped'}>"

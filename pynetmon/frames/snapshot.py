"""`Snapshot`: a monitor snapshot (a plain dict) that Jupyter shows as a compact table.

>>> Snapshot(monitor.snapshot())          # in a notebook cell: an HTML table of metric paths and values
>>> Snapshot(monitor.snapshot()).to_pandas()
"""
from __future__ import annotations

from typing import Any

from .html import snapshot_html
from .table import snapshot_frame


class Snapshot(dict):
    """A dict (JSON-serialisable as it is) with a rich display and a `to_pandas()` of its leaves."""

    def _repr_html_(self) -> str:
        return snapshot_html(self)

    def to_pandas(self) -> Any:
        """One row per leaf: `path` ("rtt_us.count", "flows[0].bytes") and `value`."""
        return snapshot_frame(self)

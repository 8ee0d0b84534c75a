"""Maps, ring buffers and snapshots as NumPy arrays and pandas DataFrames (the `pynetmon[data]` extra).

- `dtype`: BTF codecs → NumPy structured dtypes (nested structs, arrays, bitfields, big-endian fields),
  per-CPU sums, and the way back to the Python shapes `Map.items()` gives;
- `arrays`: whole maps and batches of ring/perf buffer records as structured arrays, filled from the
  kernel's batch buffers;
- `table`: structured arrays → DataFrames (one column per leaf field, addresses as text);
- `html`: compact HTML tables for Jupyter's rich display; `Snapshot` wraps a monitor snapshot for it.

Nothing here imports numpy or pandas at import time: `extra.require` does, on first use.
"""
from __future__ import annotations

__all__ = ["Snapshot"]


def __getattr__(name: str):
    # Loaded on first use, so that `import pynetmon.frames` stays cheap.
    if name == "Snapshot":
        from .snapshot import Snapshot
        return Snapshot
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

"""Swap-on-read: atomic reads of maps that BPF programs keep writing, for any monitor.

The mechanism, top to bottom: the user's program is loaded twice behind the pivot program
(`bpf/pivot.bpf.c`, `dataplane.SwapDataplane`); a read flips the pivot's active index, waits until no
program run that saw the old index can still be running (`quiesce.Quiescer`), and collects the idle
instance's maps into running totals (`collected`). Nothing here knows a monitor's configuration: Dynmon
uses it through `pynetmon.dynmon.swap_path.SwapPathDataplane`.
"""
from .collected import DecodedTotals, RawTotals, fold
from .dataplane import SwapDataplane
from .quiesce import Quiescer, default_quiescer

__all__ = ["DecodedTotals", "Quiescer", "RawTotals", "SwapDataplane", "default_quiescer", "fold"]

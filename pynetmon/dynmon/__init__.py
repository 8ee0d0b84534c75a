"""Dynmon: Polycube's dynamic monitor in Python.

The data path, top to bottom: dataplane-config JSON → `config.parse_config` (validated model) →
`dialect.translate` (libbpf or Polycube/BCC style → one translation unit) → clang (`toolchain`) →
`dataplane.PathDataplane` (loaded program + maps, one per direction) → `attachment.Attachment` (TC/XDP
links, replaced in place) → `PathDataplane.read_map` (batch reads → `entries.MapEntries`) →
`metrics` (Polycube JSON) / `openmetrics` (OpenMetrics text).
"""
from .config import DataplaneConfig, MetricConfig, PathConfig, parse_config
from .dataplane import PathDataplane
from .entries import MapEntries
from .monitor import Dynmon, MetricNotFoundError
from .paths import LoadedPath, build_path_dataplane
from .swap_path import SwapPathDataplane

__all__ = ["DataplaneConfig", "Dynmon", "LoadedPath", "MapEntries", "MetricConfig", "MetricNotFoundError",
           "PathConfig", "PathDataplane", "SwapPathDataplane", "build_path_dataplane", "parse_config"]

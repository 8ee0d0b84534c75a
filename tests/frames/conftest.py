"""Fixtures of the data-feature tests."""
from __future__ import annotations

import matplotlib
import pytest

import pynetmon

matplotlib.use("Agg")  # plots are drawn off screen: nothing is shown or needs a display


@pytest.fixture
def maptypes(bpf):
    """bpf/maptypes.bpf.c freshly loaded: one map per type and BTF shape the core supports."""
    with pynetmon.BPFObject.from_package("maptypes") as obj:
        yield obj.load()

"""Fixtures of the core tests: the `maptypes` object (bpf/maptypes.bpf.c), loaded once per module."""
from __future__ import annotations

import pytest

import pynetmon


@pytest.fixture(scope="module")
def _maptypes_loaded():
    # Module scope keeps property tests fast (one load for hundreds of examples). A failure is handed
    # on rather than raised here, so that the `bpf` fixture decides between skip and fail.
    try:
        obj = pynetmon.BPFObject.from_package("maptypes").load()
    except Exception as exc:  # noqa: BLE001
        yield exc
        return
    with obj:
        yield obj


@pytest.fixture
def maptypes(bpf, _maptypes_loaded) -> pynetmon.BPFObject:
    """The loaded maptypes object; every map is emptied before the test."""
    if isinstance(_maptypes_loaded, Exception):
        raise _maptypes_loaded
    for m in _maptypes_loaded.maps.values():
        m.clear()
    return _maptypes_loaded

"""Shared fixtures. Tests that need BPF use `bpf` (or the `hosts` fixture, which implies it).

Outside CI a test that needs BPF is skipped when the kernel or privileges are missing; in CI
(CI=true) it fails instead, so a broken environment can never look green.
"""
from __future__ import annotations

from pathlib import Path

import pytest

from pynetmon.testing import IN_CI, bpf_unavailable_reason, require_bpf  # noqa: F401 - re-exported to tests

TESTDATA = Path(__file__).resolve().parent / "data"  # inside the repository: a clone runs its tests


@pytest.fixture
def bpf():
    """Marks a test as needing BPF (fails in CI, skips elsewhere, when it is missing)."""
    require_bpf()


@pytest.fixture
def hosts(bpf):
    """Two fresh test hosts (netns + veth, eth0 each, a /30 from 198.18.0.0/15); removed afterwards."""
    from pynetmon.testhosts import TestHosts
    with TestHosts() as pair:
        yield pair


@pytest.fixture
def counter_object(bpf):
    import pynetmon
    with pynetmon.BPFObject.from_package("counter") as obj:
        obj.load()
        yield obj


@pytest.fixture(scope="session")
def testdata() -> Path:
    assert TESTDATA.is_dir(), f"test data missing at {TESTDATA}"
    return TESTDATA

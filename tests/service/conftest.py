"""Fixtures for the service tests: a real daemon process per test (or per module where state allows)."""
from __future__ import annotations

import pytest

from .daemon import Daemon


@pytest.fixture
def daemon():
    """A `pynetmon serve` attaching in its own namespace, no token."""
    d = Daemon()
    try:
        yield d
    finally:
        status = d.stop()
        assert status == 0, f"daemon exited {status}:\n{d.log()}"


@pytest.fixture
def host_daemon(hosts):
    """A daemon that attaches in test host b's namespace (--netns), with the hosts: (daemon, a, b)."""
    a, b = hosts
    d = Daemon("--netns", b.netns)
    try:
        yield d, a, b
    finally:
        status = d.stop()
        assert status == 0, f"daemon exited {status}:\n{d.log()}"

"""Fixtures of the capture tests: test hosts whose link carries only the test's own packets."""
from __future__ import annotations

import pytest

from pynetmon.link import tc_programs

from .helpers import disable_ipv6


@pytest.fixture
def quiet_hosts(hosts):
    """The `hosts` pair without IPv6 (no router solicitations, no MLD): every packet is the test's."""
    a, b = hosts
    disable_ipv6(a, b)
    yield a, b
    for host in (a, b):  # whatever a test did, the capture left nothing attached
        for direction in ("ingress", "egress"):
            assert tc_programs("eth0", direction, netns=host.netns) == [], f"left attached on {host.netns}"

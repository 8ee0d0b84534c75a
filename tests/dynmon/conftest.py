"""Fixtures of the dynmon tests."""
from __future__ import annotations

import pytest


@pytest.fixture
def quiet_hosts(hosts):
    """Test hosts without IPv6, so that "count every packet" programs see only the test's packets
    (fresh interfaces otherwise send router solicitations and MLD reports at unpredictable times)."""
    for host in hosts:
        host.run("sysctl", "-q", "-w", "net.ipv6.conf.all.disable_ipv6=1")
        host.run("sysctl", "-q", "-w", "net.ipv6.conf.eth0.disable_ipv6=1")
    return hosts

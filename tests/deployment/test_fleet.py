"""A fleet on one machine (pynetmon/testfleet.py): three nodes as network namespaces on a bridge, each with
its own `pynetmon serve` on its own address, a real Prometheus finding them through file_sd; PromQL through
Prometheus' HTTP API, per node and fleet-wide, equals the traffic sent among the nodes, exactly."""
from __future__ import annotations

import pytest

from pynetmon.testfleet import FLOWS, TestFleet, checks, send_matrix


@pytest.fixture
def fleet(bpf):
    with TestFleet() as f:
        yield f


def assert_prometheus_sees(fleet: TestFleet, sent: dict, received: dict) -> None:
    for promql, expected, by in checks(sent, received):
        got = fleet.wait_for(promql, expected, by)
        assert got == expected, f"{promql}: Prometheus says {got}, the nodes were sent {expected}"


def test_prometheus_sums_the_fleet_exactly(fleet):
    fleet.start({"monitors": {"flows": FLOWS}}, use_config=False)
    fleet.start_prometheus()
    names = [n.name for n in fleet.nodes]
    # Every node is a target with its `node` label, and up.
    assert fleet.values("up") == dict.fromkeys(names, 1.0)
    assert fleet.wait_for('sum by (node) (pynetmon_monitor_up{monitor="flows.eth0"})', dict.fromkeys(names, 1.0)) \
        == dict.fromkeys(names, 1.0)
    # Distinct counts on each path, so that a count credited to the wrong node shows.
    sent, received = send_matrix(fleet, {(0, 1): 101, (1, 2): 203, (2, 0): 307, (0, 2): 41})
    assert received == {"node-1": 307, "node-2": 101, "node-3": 244}
    assert_prometheus_sees(fleet, sent, received)

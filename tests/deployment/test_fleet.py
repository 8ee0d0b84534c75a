"""A fleet on one machine (pynetmon/testfleet.py): three nodes as network namespaces on a bridge, each with
its own `pynetmon serve --config` on its own address, a real Prometheus finding them through file_sd;
PromQL through Prometheus' HTTP API, per node and fleet-wide, equals the traffic sent among the nodes,
exactly — before and after a ConfigMap-style rewrite of every node's config, which must not reset the
counters of the monitor it leaves unchanged."""
from __future__ import annotations

import pytest

from pynetmon.testfleet import CONFIG_AFTER, CONFIG_BEFORE, NO_SOCKET, TestFleet, add, checks, send_matrix


@pytest.fixture
def fleet(bpf):
    with TestFleet() as f:
        yield f


def assert_prometheus_sees(fleet: TestFleet, cases) -> None:
    for promql, expected, by in cases:
        got = fleet.wait_for(promql, expected, by)
        assert got == expected, f"{promql}: Prometheus says {got}, expected {expected}"


def test_prometheus_sums_the_fleet_exactly_across_a_config_change(fleet):
    check_fleet(fleet)


def check_fleet(fleet: TestFleet) -> None:
    """The whole scenario (also run by `make test-image` with node-1 from the container image)."""
    fleet.start(CONFIG_BEFORE)
    fleet.start_prometheus()
    names = [n.name for n in fleet.nodes]
    every = dict.fromkeys(names, 1.0)
    # Every node is a target with its `node` label, up, running the config's two monitors.
    assert fleet.values("up") == every
    assert fleet.wait_for("sum by (node) (pynetmon_monitor_up)", dict.fromkeys(names, 2.0)) == dict.fromkeys(names, 2.0)
    assert fleet.values("pynetmon_config_last_reload_success") == every
    # Distinct counts on each path, so that a count credited to the wrong node shows.
    sent, received = send_matrix(fleet, {(0, 1): 101, (1, 2): 203, (2, 0): 307, (0, 2): 41})
    assert received == {"node-1": 307, "node-2": 101, "node-3": 244}
    assert_prometheus_sees(fleet, checks(sent, received))

    # The ConfigMap changes: flows stays as it was, dns goes, drops comes.
    fleet.rewrite(CONFIG_AFTER)
    fleet.wait_applied()
    for node in fleet.nodes:
        reload = fleet.config_status(node)["last-reload"]
        assert reload["success"] and reload["trigger"] != "start", reload
        assert reload["changes"] == {"added": ["drops"], "updated": [], "replaced": [], "removed": ["dns.eth0"]}
    sent2, received2 = send_matrix(fleet, {(1, 0): 11, (2, 1): 23, (0, 2): 37})
    # flows kept its counters: the totals are both rounds', and Prometheus saw no counter reset.
    assert_prometheus_sees(fleet, [*checks(add(sent, sent2), add(received, received2)),
                                   (f"sum by (node) ({NO_SOCKET})", received2, "node")])
    assert fleet.values('sum by (node) (resets(flow_packets_total{monitor="flows.eth0"}[5m]))') \
        == dict.fromkeys(names, 0.0)
    # dns.eth0 is gone from every node (its series stale in Prometheus), flows and drops run on each.
    running = {"flows.eth0": 3.0, "drops": 3.0}
    assert fleet.wait_for("count by (monitor) (pynetmon_monitor_up == 1)", running, by="monitor") == running
    assert fleet.values("sum by (node) (pynetmon_config_reloads_total)") == dict.fromkeys(names, 2.0)

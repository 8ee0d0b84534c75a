"""Swap-on-read through Dynmon's configuration: both code styles behind the pivot, the errors a config gets
at injection (with their JSON paths), and configuration changes that keep the old dataplane on failure."""
from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest

from pynetmon import ConfigError
from pynetmon.dynmon import Dynmon
from pynetmon.dynmon.swap_path import SwapPathDataplane
from pynetmon.link import tc_programs

from .programs import exactness_config, program_source

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "dynmon"
SWAP_OPTION = "ingress-path.metric-configs[0].extraction-options.swap-on-read"


def _ntp_config(empty: bool) -> dict:
    config = json.loads((EXAMPLES / "ntp_packets_counter.json").read_text())
    config["ingress-path"]["metric-configs"][0]["extraction-options"] = {"swap-on-read": True,
                                                                         "empty-on-read": empty}
    return config


def _send_ntp(a, b, count: int) -> None:
    assert a.send_udp(b.ip, 123, count) == count


def test_polycube_style_code_runs_behind_the_pivot(hosts):
    a, b = hosts
    with Dynmon("ntp", _ntp_config(empty=False)) as mon:
        mon.attach(b.ifname, netns=b.netns)
        dp = mon.path_dataplane("ingress")
        assert isinstance(dp, SwapPathDataplane)
        assert tc_programs(b.ifname, "ingress", netns=b.netns) == [dp.program.id]
        _send_ntp(a, b, 20)
        assert mon.metrics("ingress", "ntp_packets_total")["value"] == [20]
        _send_ntp(a, b, 5)
        assert mon.metrics("ingress", "ntp_packets_total")["value"] == [25]  # not emptied: the whole history
        assert "ntp_packets_total{IP_PROTO=\"UDP\",L4=\"NTP\"} 25.0" in mon.open_metrics()
        assert dp.swap.flips == 3 and dp.swap.missed() == 0


def test_empty_on_read_with_swap(hosts):
    a, b = hosts
    with Dynmon("ntp", _ntp_config(empty=True)) as mon:
        mon.attach(b.ifname, netns=b.netns)
        _send_ntp(a, b, 7)
        assert mon.metrics("ingress", "ntp_packets_total")["value"] == [7]
        assert mon.metrics("ingress", "ntp_packets_total")["value"] == [0]
        _send_ntp(a, b, 3)
        assert mon.metrics("ingress", "ntp_packets_total")["value"] == [3]


TAIL_CALLING = program_source(
    """struct { __uint(type, BPF_MAP_TYPE_PROG_ARRAY); __uint(max_entries, 2); __type(key, __u32);
                __type(value, __u32); } jumps SEC(".maps");
       struct { __uint(type, BPF_MAP_TYPE_ARRAY); __uint(max_entries, 1); __type(key, __u32);
                __type(value, __u64); } hits SEC(".maps");""",
    "__u32 k = 0; __u64 *v = bpf_map_lookup_elem(&hits, &k); if (v) *v += 1; "
    "bpf_tail_call(ctx, &jumps, 0); return 0;")
QUEUE = program_source(
    """struct { __uint(type, BPF_MAP_TYPE_QUEUE); __uint(max_entries, 8); __type(value, __u32); } events
       SEC(".maps");""",
    "__u32 v = 1; bpf_map_push_elem(&events, &v, 0); return 0;")


@pytest.mark.parametrize("code, map_name, reason", [
    (TAIL_CALLING, "hits", "uses tail calls"),
    (QUEUE, "events", "is a queue map; swap-on-read works on"),
])
def test_config_errors_name_the_swap_option_and_keep_the_running_dataplane(hosts, code, map_name, reason):
    a, b = hosts
    bad = {"ingress-path": {"code": code, "metric-configs": [
        {"name": "m", "map-name": map_name, "extraction-options": {"swap-on-read": True}}]}}
    with Dynmon("keep", _ntp_config(empty=False)) as mon:
        mon.attach(b.ifname, netns=b.netns)
        running = mon.path_dataplane("ingress")
        with pytest.raises(ConfigError) as info:
            mon.set_dataplane_config(bad)
        (where, message), = info.value.problems
        assert where == SWAP_OPTION and reason in message, info.value.problems
        assert mon.path_dataplane("ingress") is running
        _send_ntp(a, b, 4)
        assert mon.metrics("ingress", "ntp_packets_total")["value"] == [4]


def test_a_swap_map_cannot_be_shared_with_the_other_path(bpf):
    config = exactness_config()
    with Dynmon("shared", config) as mon:
        egress = copy.deepcopy(config["ingress-path"])
        egress["metric-configs"] = [{"name": "egress_seen", "map-name": "truth"}]
        with pytest.raises(ConfigError) as info:
            mon.set_dataplane_config({"egress-path": egress})
        assert {where for where, _ in info.value.problems} == {"ingress-path.code"}
        reasons = " ".join(reason for _, reason in info.value.problems)
        for name in ("by_len", "by_slot"):
            assert f"{name!r} is swap-on-read on the ingress path and also defined by the egress" in reasons
        assert mon.path_dataplane("egress") is None
        # The other order: the plain path exists first, then a swap path wants one of its maps.
        mon.reset_dataplane_config()
        mon.set_dataplane_config({"egress-path": egress})
        with pytest.raises(ConfigError, match="swap-on-read on the ingress path and also defined by the"):
            mon.set_dataplane_config({"ingress-path": config["ingress-path"]})


def test_replacing_a_swap_config_swaps_the_pivot_in_place(hosts):
    a, b = hosts
    with Dynmon("replace", _ntp_config(empty=False)) as mon:
        mon.attach(b.ifname, netns=b.netns)
        first = mon.path_dataplane("ingress")
        _send_ntp(a, b, 3)
        assert mon.metrics("ingress", "ntp_packets_total")["value"] == [3]
        mon.set_dataplane_config(_ntp_config(empty=True))
        second = mon.path_dataplane("ingress")
        assert second is not first
        assert tc_programs(b.ifname, "ingress", netns=b.netns) == [second.program.id]
        _send_ntp(a, b, 6)
        assert mon.metrics("ingress", "ntp_packets_total")["value"] == [6]
        mon.detach()
        assert tc_programs(b.ifname, "ingress", netns=b.netns) == []

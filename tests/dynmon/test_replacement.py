"""Re-injection: atomic (every packet counted by exactly one generation of the program), and a bad config
of any kind leaves the running dataplane attached and counting."""
from __future__ import annotations

import os
import socket
import threading
import time

import pytest

from pynetmon import CompileError, ConfigError, Map, VerifierError
from pynetmon.dynmon import Dynmon
from pynetmon.link import tc_programs

from .helpers import example, exchange, path_config

SO_RCVBUFFORCE = getattr(socket, "SO_RCVBUFFORCE", 33)  # Linux; Python does not export it
COUNTER = example("packet_counter")["ingress-path"]["code"]
VERIFIER_REJECTS = """
static __always_inline int handle_rx(struct CTXTYPE *ctx, struct pkt_metadata *md) {
    unsigned char *data = (void *)(long)ctx->data;
    return data[20] == 17 ? RX_DROP : RX_OK;   /* no bounds check against data_end */
}
"""
BROKEN_C = COUNTER.replace("*count += 1;", "*count += one;")
# Polycube's way to give both paths one map: _SHARED where it is defined, "extern" where it is used.
SHARED_COUNTER = COUNTER.replace("BPF_ARRAY(PKT_COUNTER", "BPF_ARRAY_SHARED(PKT_COUNTER")
EXTERN_COUNTER = COUNTER.replace("BPF_ARRAY(PKT_COUNTER, uint64_t, 1)",
                                 'BPF_TABLE("extern", int, uint64_t, PKT_COUNTER, 1)')


def _count(mon) -> int:
    return mon.metrics("ingress", "packets_total")["value"][0]


BAD = {
    "missing field": ({"ingress-path": {"name": "x", "code": COUNTER, "metric-configs": [{"name": "p"}]}},
                      ConfigError, "ingress-path.metric-configs[0].map-name: field required"),
    "unknown map": ({"ingress-path": path_config(COUNTER, ("p", "FOO"))}, ConfigError,
                    ("ingress-path.metric-configs[0].map-name: map 'FOO' is not defined by the code; maps are: "
                     "PKT_COUNTER")),
    "broken C": ({"ingress-path": path_config(BROKEN_C, ("p", "PKT_COUNTER"))}, CompileError,
                 "ingress-path.code:10:15: error: use of undeclared identifier 'one'"),
    "verifier rejection": ({"ingress-path": path_config(VERIFIER_REJECTS)}, VerifierError, "dynmon_ingress"),
    "unknown metric type": ({"ingress-path": path_config(COUNTER, ("p", "PKT_COUNTER", {
        "open-metrics-metadata": {"type": "countr"}}))}, ConfigError,
        "ingress-path.metric-configs[0].open-metrics-metadata.type: 'countr' is not a metric type"),
    "metric type that does not fit the map": ({"ingress-path": path_config(COUNTER, ("p", "PKT_COUNTER", {
        "open-metrics-metadata": {"type": "summary"}}))}, ConfigError,
        "a summary needs struct values with numeric 'count' and 'sum' fields"),
    "shared map defined twice differently": (
        {"ingress-path": path_config(SHARED_COUNTER),
         "egress-path": path_config(COUNTER.replace("BPF_ARRAY(PKT_COUNTER, uint64_t, 1)",
                                                    'BPF_TABLE("extern", int, uint32_t, PKT_COUNTER, 4)'))},
        ConfigError, ("extern map 'PKT_COUNTER' is declared here with key 4 B and value 4 B but the ingress path's "
                      "code defines it as array (key 4 B, value 8 B, 1 entries) (line 2)")),
    "extern map nobody shares": (
        {"ingress-path": path_config(COUNTER),
         "egress-path": path_config(EXTERN_COUNTER)},
        ConfigError, ("egress-path.code: reference to undefined table 'PKT_COUNTER' (declared \"extern\"): the other "
                      "path declares it local; extern needs a _SHARED or _PUBLIC declaration")),
    "invalid JSON": ('{"ingress-path": ', ConfigError, "not valid JSON"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_a_bad_config_leaves_the_old_dataplane_counting(quiet_hosts, case):
    a, b = quiet_hosts
    config, error, words = BAD[case]
    with Dynmon("keep", example("packet_counter")) as mon:
        mon.attach("eth0", netns=b.netns)
        running = mon.path_dataplane("ingress").program.id
        exchange(a, b, 5)
        with pytest.raises(error) as info:
            mon.set_dataplane_config(config)
        assert words in str(info.value)
        assert tc_programs("eth0", "ingress", netns=b.netns) == [running]
        assert tc_programs("eth0", "egress", netns=b.netns) == []
        exchange(a, b, 7)
        assert _count(mon) == 12
        assert mon.dataplane_config["ingress-path"]["metric-configs"][0]["map-name"] == "PKT_COUNTER"
    if error is VerifierError:
        assert "invalid access to packet" in info.value.log or "R" in info.value.log


def test_reinjection_loses_no_packet(quiet_hosts):
    """Traffic flows while the dataplane is replaced three times; the counts of all four generations add
    up to exactly what was sent (a gap would lose packets, an overlap would count some twice)."""
    a, b = quiet_hosts
    sink = b.socket()
    sink.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, 64 << 20)
    sink.bind((b.ip, 5555))
    sink.settimeout(10)
    generations: list[Map] = []
    stop = threading.Event()
    sent = [0]

    def send():
        while not stop.is_set() and sent[0] < 40000:
            sent[0] += a.send_udp(b.ip, 5555, 50)

    def wait_until_counting(generation: Map) -> None:
        deadline = time.monotonic() + 10
        while generation[0] == 0:
            assert time.monotonic() < deadline, "no packet reached the new program"
            time.sleep(0.001)

    try:
        with Dynmon("atomic", example("packet_counter")) as mon:
            mon.attach("eth0", netns=b.netns)
            link = mon._attachment.links["ingress"]
            sender = threading.Thread(target=send)
            sender.start()
            try:
                for i in range(4):
                    live = mon.path_dataplane("ingress").maps["PKT_COUNTER"]
                    # Our own descriptor keeps the generation's map alive after its dataplane is closed.
                    generations.append(Map.from_fd(os.dup(live.fd), live.key_codec, live.value_codec, owned=True))
                    wait_until_counting(generations[-1])
                    if i < 3:
                        mon.set_dataplane_config(example("packet_counter"))
            finally:
                stop.set()
                sender.join()
            for _ in range(sent[0]):
                sink.recv(256)
            assert mon._attachment.links["ingress"] is link  # updated in place, never re-created
        counts = [g[0] for g in generations]
        assert all(counts) and sum(counts) == sent[0], (counts, sent[0])
    finally:
        sink.close()
        for g in generations:
            g.close()


def test_absent_path_keeps_running_and_empty_path_removes(quiet_hosts):
    a, b = quiet_hosts
    both = {"ingress-path": path_config(SHARED_COUNTER, ("in", "PKT_COUNTER")),
            "egress-path": path_config(EXTERN_COUNTER, ("out", "PKT_COUNTER"))}
    with Dynmon("paths", both) as mon:
        mon.attach("eth0", netns=a.netns)
        exchange(b, a, 3)
        exchange(a, b, 4)
        assert mon.metrics("ingress", "in")["value"] == [7]  # one shared map
        egress_id = mon.path_dataplane("egress").program.id
        # Only the ingress path given: egress keeps running; the new ingress shares egress's map.
        mon.set_dataplane_config({"ingress-path": path_config(SHARED_COUNTER, ("in2", "PKT_COUNTER"))})
        assert tc_programs("eth0", "egress", netns=a.netns) == [egress_id]
        exchange(b, a, 2)
        assert mon.metrics("ingress", "in2")["value"] == [9]
        # {} removes the egress program.
        mon.set_dataplane_config({"egress-path": {}})
        assert tc_programs("eth0", "egress", netns=a.netns) == []
        assert mon.metrics("egress") == []
        assert mon.dataplane_config["egress-path"] == {}
        mon.reset_dataplane_config()
        assert tc_programs("eth0", "ingress", netns=a.netns) == []
        # Attached with nothing to run: a new config attaches right away.
        mon.set_dataplane_config(example("packet_counter"))
        exchange(b, a, 1)
        assert mon.metrics("ingress", "packets_total")["value"] == [1]


def test_unknown_metric_name(hosts):
    from pynetmon.dynmon import MetricNotFoundError
    with Dynmon("names", example("packet_counter")) as mon:
        with pytest.raises(MetricNotFoundError, match="no ingress metric named 'nope'; ingress metrics are: "
                                                      "packets_total"):
            mon.metrics("ingress", "nope")
        with pytest.raises(ValueError, match="direction must be"):
            mon.metrics("sideways")

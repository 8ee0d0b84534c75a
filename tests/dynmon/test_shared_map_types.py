"""A map shared between a Polycube-style and a libbpf-style path takes its key and value types from the
object that defines it (issue 11 §7). libbpf's map reuse copies the existing map's BTF type ids, which
number types in the *other* object's BTF: read in the reusing object they named whatever type had that
number there (here the 32-byte map-definition struct), and metrics() failed to unpack the values."""
from __future__ import annotations

from pynetmon import BPFObject
from pynetmon.dynmon import Dynmon
from pynetmon.dynmon.dialect import translate
from pynetmon.toolchain import compile_c

# Another map before the shared one: clang then numbers the egress object's types so that the id of the
# shared map's value type in the ingress object is the egress object's map-definition struct.
INGRESS = """
BPF_TABLE("hash", u32, u64, OTHER, 16);
BPF_TABLE_SHARED("array", int, uint64_t, SHARED_X, 2);
static __always_inline int handle_rx(struct CTXTYPE *ctx, struct pkt_metadata *md) {
    int k = 1;
    uint64_t *v = SHARED_X.lookup(&k);
    if (v)
        __sync_fetch_and_add(v, 1);
    return RX_OK;
}
"""
EGRESS = """
#include <linux/bpf.h>
#include <linux/pkt_cls.h>
#include <bpf/bpf_helpers.h>
struct { __uint(type, BPF_MAP_TYPE_HASH); __uint(max_entries, 4); __type(key, __u64); __type(value, __u32); } E1 SEC(".maps");
struct { __uint(type, BPF_MAP_TYPE_ARRAY); __uint(max_entries, 2); __type(key, int); __type(value, __u64); } SHARED_X SEC(".maps");
SEC("tc") int count_egress(struct __sk_buff *skb) {
    int k = 0;
    __u64 *v = bpf_map_lookup_elem(&SHARED_X, &k);
    if (v)
        __sync_fetch_and_add(v, 1);
    return TC_ACT_UNSPEC;
}
"""


def _metric(name: str) -> dict:
    return {"name": name, "map-name": "SHARED_X", "open-metrics-metadata": {"help": "h", "type": "counter"}}


def test_reused_map_keeps_the_defining_objects_types(bpf):
    ingress = compile_c(translate(INGRESS, direction="ingress").source, filename="ingress.bpf.c")
    with BPFObject(ingress, name="ing") as first, BPFObject(compile_c(EGRESS), name="egr") as second:
        first.load()
        second.maps["SHARED_X"].reuse(first.maps["SHARED_X"])
        second.load()
        shared = second.maps["SHARED_X"]
        assert shared.value_codec.size == 8 and shared.key_codec.size == 4
        first.maps["SHARED_X"][1] = 7
        assert shared[1] == 7 and list(shared.values()) == [0, 7]


def test_polycube_ingress_and_libbpf_egress_share_a_map_in_dynmon(bpf):
    cfg = {"ingress-path": {"name": "in", "code": INGRESS, "metric-configs": [_metric("seen_in")]},
           "egress-path": {"name": "out", "code": EGRESS, "metric-configs": [_metric("seen_out")]}}
    with Dynmon("shared_types", cfg) as mon:
        mon.path_dataplane("ingress").maps["SHARED_X"][1] = 3
        metrics = mon.metrics()
    assert metrics["ingress-metrics"][0]["value"] == [0, 3]
    assert metrics["egress-metrics"][0]["value"] == [0, 3]

"""Which maps the ingress and egress paths share, as Polycube (BCC) decides it: same name without
`_SHARED` → two maps; `_SHARED`/`_PUBLIC` in one path and `extern` in the other → one map; `_PINNED` → the
map pinned at its path; libbpf-style maps of one name → one map (pynetmon's rule for that dialect).
Real programs on a test host's interface, real datagrams, exact counts (library path; the same through
`pynetmon serve` in tests/service/test_dynmon_semantics.py)."""
from __future__ import annotations

import os
import uuid

import pytest

from pynetmon import ConfigError
from pynetmon.dynmon import Dynmon

from .helpers import exchange, path_config

# %(decl)s: the map's declaration; %(slot)d: the slot this path counts into. Every packet is counted.
CODE = """
%(decl)s
static __always_inline int handle_rx(struct CTXTYPE *ctx, struct pkt_metadata *md) {
    COUNTS.increment(%(slot)d);
    return RX_OK;
}
"""
LIBBPF = """
#include <linux/bpf.h>
#include <linux/pkt_cls.h>
#include <bpf/bpf_helpers.h>
struct { __uint(type, BPF_MAP_TYPE_ARRAY); __uint(max_entries, 2); __type(key, __u32); __type(value, __u64); }
    COUNTS SEC(".maps");
SEC("tc") int count(struct __sk_buff *skb) {
    __u32 k = %(slot)d;
    __u64 *v = bpf_map_lookup_elem(&COUNTS, &k);
    if (v)
        __sync_fetch_and_add(v, 1);
    return TC_ACT_UNSPEC;
}
"""
PLAIN = "BPF_ARRAY(COUNTS, u64, 2);"
SHARED = "BPF_ARRAY_SHARED(COUNTS, u64, 2);"
TABLE_SHARED = 'BPF_TABLE_SHARED("array", int, u64, COUNTS, 2);'
PUBLIC = 'BPF_TABLE_PUBLIC("array", int, u64, COUNTS, 2);'
EXTERN = 'BPF_TABLE("extern", int, u64, COUNTS, 2);'


def _config(ingress: str, egress: str, template: str = CODE) -> dict:
    return {"ingress-path": path_config(template % {"decl": ingress, "slot": 0}, ("in_counts", "COUNTS")),
            "egress-path": path_config(template % {"decl": egress, "slot": 1}, ("out_counts", "COUNTS"))}


def _run(hosts, config: dict) -> tuple[list, list]:
    """Attach on a's eth0; a sends 10 datagrams (a's egress), b sends 4 (a's ingress). Both views."""
    a, b = hosts
    with Dynmon("sharing", config) as mon:
        mon.attach("eth0", netns=a.netns)
        exchange(a, b, 10)
        exchange(b, a, 4)
        metrics = mon.metrics()
    return metrics["ingress-metrics"][0]["value"], metrics["egress-metrics"][0]["value"]


def test_same_name_without_shared_is_two_maps(quiet_hosts):
    # Polycube loads each path as its own BCC module: a plain declaration is private to its path.
    assert _run(quiet_hosts, _config(PLAIN, PLAIN)) == ([4, 0], [0, 10])


@pytest.mark.parametrize("ingress, egress", [(SHARED, EXTERN), (TABLE_SHARED, EXTERN), (PUBLIC, EXTERN),
                                             (EXTERN, TABLE_SHARED)],
                         ids=["array_shared-extern", "table_shared-extern", "public-extern", "extern-shared"])
def test_shared_or_public_with_extern_is_one_map(quiet_hosts, ingress, egress):
    # extern-shared: the egress path defines the map, so it is loaded first (BCC would need that order).
    assert _run(quiet_hosts, _config(ingress, egress)) == ([4, 10], [4, 10])


def test_two_shared_declarations_are_two_maps(quiet_hosts):
    # BCC creates a map for each _SHARED declaration; only "extern" refers to another path's map.
    assert _run(quiet_hosts, _config(SHARED, SHARED)) == ([4, 0], [0, 10])


def test_libbpf_style_maps_of_one_name_are_one_map(quiet_hosts):
    assert _run(quiet_hosts, _config("", "", LIBBPF)) == ([4, 10], [4, 10])


def test_extern_with_a_libbpf_style_definition_is_one_map(quiet_hosts):
    config = _config(EXTERN, "")
    config["egress-path"]["code"] = LIBBPF % {"slot": 1}
    assert _run(quiet_hosts, config) == ([4, 10], [4, 10])


@pytest.fixture
def pin_path():
    path = f"/sys/fs/bpf/pynetmon_test_{uuid.uuid4().hex[:12]}"
    yield path
    for p in (path, path + "_1"):
        if os.path.exists(p):
            os.unlink(p)


def test_pinned_is_the_map_at_its_path(quiet_hosts, pin_path):
    pinned = f'BPF_TABLE_PINNED("array", int, u64, COUNTS, 2, "{pin_path}");'
    assert _run(quiet_hosts, _config(pinned, pinned)) == ([4, 10], [4, 10])
    assert os.path.exists(pin_path)  # pinned maps outlive the monitor, as in BCC
    # Another monitor (another process could do the same) declaring that path finds the counts there.
    with Dynmon("again", {"ingress-path": path_config(CODE % {"decl": pinned, "slot": 0}, ("c", "COUNTS"))}) as mon:
        assert mon.metrics("ingress", "c")["value"] == [4, 10]


def test_pinned_map_of_another_shape_is_refused(quiet_hosts, pin_path):
    pinned = f'BPF_TABLE_PINNED("array", int, u64, COUNTS, 2, "{pin_path}");'
    _run(quiet_hosts, _config(pinned, PLAIN))
    other = f'BPF_TABLE_PINNED("array", int, u32, COUNTS, 2, "{pin_path}");'
    with pytest.raises(Exception, match="COUNTS"):
        Dynmon("shape", {"ingress-path": path_config(CODE % {"decl": other, "slot": 0}, ("c", "COUNTS"))})


@pytest.mark.parametrize("path, reason", [
    ("/etc/passwd", "under /sys/fs/bpf/"),
    ("/sys/fs/bpf/../../../etc/x", "normalised absolute path"),
    ("/sys/fs/bpf/a b", "letters, digits"),
    ("sys/fs/bpf/x", "under /sys/fs/bpf/"),
])
def test_pin_paths_outside_the_bpf_file_system_are_refused(bpf, path, reason):
    pinned = f'BPF_TABLE_PINNED("array", int, u64, COUNTS, 2, "{path}");'
    with pytest.raises(ConfigError, match=reason) as info:
        Dynmon("bad_pin", {"ingress-path": path_config(CODE % {"decl": pinned, "slot": 0}, ("c", "COUNTS"))})
    assert info.value.problems[0][0] == "ingress-path.code"
    assert not os.path.exists("/etc/x")


def test_a_swap_on_read_map_cannot_be_an_extern_map(bpf):
    config = _config(SHARED, EXTERN)
    config["egress-path"]["metric-configs"][0]["extraction-options"] = {"swap-on-read": True}
    with pytest.raises(ConfigError) as info:
        Dynmon("swap_extern", config)
    (where, reason), = info.value.problems
    assert where == "egress-path.metric-configs[0].extraction-options.swap-on-read"
    assert "'COUNTS' is swap-on-read but declared \"extern\"" in reason


def test_a_swap_on_read_map_may_share_its_name_with_a_private_map_of_the_other_path(quiet_hosts):
    # Two maps (Polycube's rule), so nothing is shared: refused before, accepted now.
    config = _config(PLAIN, PLAIN)
    config["ingress-path"]["metric-configs"][0]["extraction-options"] = {"swap-on-read": True}
    assert _run(quiet_hosts, config) == ([4, 0], [0, 10])

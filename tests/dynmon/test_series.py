"""The bulk path of Dynmon's families (pynetmon/dynmon/series.py) on real loaded maps of every readable
type and label shape: its text is byte for byte what prometheus_client writes for the generic path's
families of the same read, its samples equal the map's content, and it stays so as values change, keys
come and go - with only the changed samples rewritten and unchanged maps giving the same objects."""
from __future__ import annotations

import json
import re

from prometheus_client.exposition import generate_latest as generate_text
from prometheus_client.openmetrics.exposition import generate_latest as generate_openmetrics
from prometheus_client.openmetrics.parser import text_string_to_metric_families

from pynetmon.dynmon import Dynmon
from pynetmon.dynmon.openmetrics import families
from pynetmon.exposition import PrerenderedFamily, exposition

from .helpers import path_config

CODE = r"""
struct key5 { u32 saddr; u32 daddr; u16 sport; u16 dport; u32 proto; };
struct stats { u64 packets; u64 bytes; struct { u32 drops; s32 delta; } inner; };
struct named { char name[8]; };
struct addr_val { u64 seen; pynetmon_ipv4_t last; };
BPF_HASH(H_U32, u32, u64, 64);
BPF_HASH(H_FLOW, struct key5, struct stats, 64);
BPF_HASH(H_NAMED, struct named, u32, 64);
BPF_HASH(H_ADDR, pynetmon_ipv4_t, struct addr_val, 64);
BPF_PERCPU_HASH(PC_HASH, u32, u64, 64);
BPF_LRU_HASH(LRU, u64, s64, 64);
BPF_ARRAY(ARR, u64, 4);
BPF_ARRAY(ARR1, u32, 1);
BPF_PERCPU_ARRAY(PC_ARR, struct stats, 2);
static __always_inline int handle_rx(struct CTXTYPE *ctx, struct pkt_metadata *md) {
    u32 k = 0;
    H_U32.increment(k);
    return RX_OK;
}
"""

MAPS = ["H_U32", "H_FLOW", "H_NAMED", "H_ADDR", "PC_HASH", "LRU", "ARR", "ARR1", "PC_ARR"]


def _metric(map_name: str, typ: str) -> tuple:
    return (f"m_{map_name.lower()}", map_name, {"open-metrics-metadata": {
        "help": f'{map_name} "help"', "type": typ,
        "labels": [{"name": "site", "value": 'a "quoted" \\ value\nü'}]}})


def _config() -> dict:
    types = ["counter", "gauge", "untyped"]
    return {"ingress-path": path_config(CODE, *(_metric(m, types[i % 3]) for i, m in enumerate(MAPS)))}


def _fill(maps, step: int) -> None:
    maps["H_U32"].update_batch([(k, k * step) for k in range(1, 20)])
    maps["H_FLOW"].update_batch([({"saddr": 0xC0A80001 + k, "daddr": 0x0A000001, "sport": k, "dport": 443,
                                   "proto": 6}, {"packets": k * step, "bytes": 2_000_000 * k,
                                                 "inner": {"drops": k, "delta": -k}}) for k in range(10)])
    maps["H_NAMED"].update_batch([({"name": n}, i + step) for i, n in
                                  enumerate([b"curl", b'q"uo\\te', b"\x01\x02bin", b"\xc3\xbcni"])])
    maps["H_ADDR"].update_batch([(0x0A000000 + k, {"seen": k + step, "last": 0x7F000001}) for k in range(5)])
    ncpus = maps["PC_HASH"].ncpus
    maps["PC_HASH"].update_batch([(k, [k + c + step for c in range(ncpus)]) for k in range(6)])
    maps["LRU"].update_batch([(k << 40, -k * step) for k in range(8)])
    for i in range(4):
        maps["ARR"][i] = i * step
    maps["ARR1"][0] = 7 + step
    zero = {"packets": 0, "bytes": 0, "inner": {"drops": 0, "delta": 0}}
    maps["PC_ARR"][1] = [dict(zero, packets=step + c, bytes=2**53 + c) for c in range(ncpus)]


def _check(mon: Dynmon, labels: dict) -> list:
    """The families of one read: bulk where the shape allows, equal to the generic path's."""
    fams = mon.families(labels=labels)
    dp = mon.path_dataplane("ingress")
    # The generic path on a fresh read of the same (unchanged) maps: what the bulk text must equal.
    expected = []
    for metric in mon._configs["ingress"].metric_configs:
        expected.extend(families(metric, dp.read_map(metric.map_name), labels))

    class Fixed:
        def __init__(self, f):
            self.f = f

        def collect(self):
            return self.f

    assert exposition(fams) == generate_openmetrics(Fixed(expected)).decode()
    assert exposition(fams, "prometheus") == generate_text(Fixed(expected)).decode()
    parsed = {s.name + str(sorted(s.labels.items())): s.value
              for f in text_string_to_metric_families(exposition(fams)) for s in f.samples}
    assert parsed == {s.name + str(sorted(s.labels.items())): float(s.value) for f in expected for s in f.samples}
    # Samples built on demand from a prerendered family are the generic path's.
    assert [f.samples for f in fams] == [f.samples for f in expected]
    return fams


def test_bulk_text_equals_the_generic_path_for_every_map_type_and_label_shape(bpf):
    with Dynmon("bulk", _config()) as mon:
        maps = mon.path_dataplane("ingress").maps
        _fill(maps, 1)
        labels = {"monitor": "mon\"1"}
        fams = _check(mon, labels)
        bulk = {f.name for f in fams if isinstance(f, PrerenderedFamily)}
        # Every shape but the ones the generic path must write: address text in H_ADDR's value is skipped
        # (not a sample), all the rest here is bulk.
        assert {"m_h_u32", "m_h_flow_packets", "m_h_flow_inner_delta", "m_h_named", "m_h_addr_seen", "m_pc_hash",
                "m_lru", "m_arr", "m_arr1", "m_pc_arr_bytes"} <= bulk
        assert mon.families(labels=labels)[0] is fams[0]  # nothing changed: the same objects
        renderer = mon._family_cache[("ingress", "m_h_u32", tuple(labels.items()))]
        reads = renderer.bulk_reads

        maps["H_U32"][5] = 1_234_567  # one value changes (and now needs Go's exponent form)
        after = _check(mon, labels)
        assert after[0] is not fams[0] and renderer.bulk_reads == reads + 1
        assert 'm_h_u32_total{key="5",monitor="mon\\"1",site=' in after[0].lines
        assert "1.234567e+06\n" in after[0].lines

        del maps["H_U32"][3]  # keys go and come: label texts follow the map
        maps["H_U32"][1000] = 1
        del maps["H_NAMED"][{"name": b"curl"}]
        maps["H_FLOW"][{"saddr": 1, "daddr": 2, "sport": 3, "dport": 4, "proto": 17}] = {
            "packets": 1, "bytes": 1, "inner": {"drops": 0, "delta": 0}}
        _check(mon, labels)
        _fill(maps, 3)  # every value moves
        _check(mon, labels)
        for m in MAPS:  # emptied maps still announce their metric
            if "ARR" not in m:
                maps[m].clear()
        empty = _check(mon, labels)
        assert [f.samples for f in empty if f.name == "m_h_u32"] == [[]]
        _fill(maps, 4)  # and refilled, back on the bulk path
        _check(mon, {})


def _json_equal(mon: Dynmon) -> None:
    """metrics_json() is the JSON text of metrics(), as the REST service writes it, for every form."""
    from pynetmon.dynmon.json_text import dumps
    assert _no_ts(json.loads(mon.metrics_json())) == _no_ts(mon.metrics())
    for direction in ("ingress", "egress"):
        text = mon.metrics_json(direction).decode()
        assert _no_ts(json.loads(text)) == _no_ts(mon.metrics(direction))
        # byte for byte, but for the timestamps
        assert _TS.sub("", text) == _TS.sub("", dumps(mon.metrics(direction)))
    for per_cpu in (False, True):
        one = mon.metrics_json("ingress", "m_pc_hash", per_cpu=per_cpu)
        assert _no_ts(json.loads(one)) == _no_ts(mon.metrics("ingress", "m_pc_hash", per_cpu=per_cpu))


_TS = re.compile(r'"timestamp":\d+')


def _no_ts(obj):
    if isinstance(obj, dict):
        return {k: _no_ts(v) for k, v in obj.items() if k != "timestamp"}
    if isinstance(obj, list):
        return [_no_ts(v) for v in obj]
    return obj


def test_polycube_json_text_equals_metrics_for_every_map_type(bpf):
    with Dynmon("json", _config()) as mon:
        maps = mon.path_dataplane("ingress").maps
        _fill(maps, 1)
        _json_equal(mon)
        bulk = {name for (_, name, per_cpu), r in mon._json_cache.items() if r.bulk_reads and not per_cpu}
        assert {"m_h_u32", "m_h_flow", "m_pc_hash", "m_lru", "m_arr", "m_arr1", "m_pc_arr"} <= bulk
        maps["H_U32"][5] = 1_234_567_890_123
        del maps["H_U32"][3]
        maps["H_U32"][1000] = 1
        _json_equal(mon)
        _fill(maps, 3)
        _json_equal(mon)
        for m in MAPS:
            if "ARR" not in m:
                maps[m].clear()
        _json_equal(mon)
        _fill(maps, 4)
        _json_equal(mon)

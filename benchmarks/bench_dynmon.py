"""Dynmon: injection time (config → attached) and metric extraction of a 100k-entry hash map.

Run: `make bench PYTEST_ARGS=benchmarks/bench_dynmon.py` or
`.venv/bin/python -m pytest -q -s benchmarks/bench_dynmon.py`.

Injection: a fresh Dynmon, `set_dataplane_config` + `attach` on a test host's eth0 (TC), with a cold
compile cache (every run's code differs by a comment, so clang runs) and a warm one (same code);
re-injection into an attached monitor too. Peers in the same run: clang alone on the same translation
unit, and loading + attaching the precompiled object with the core API (the floor below which no
injection can go). Targets from the issue: < 400 ms cold, < 50 ms warm.

Extraction: a hash map with 100,000 entries (struct key of 5 fields, u64 value), filled from user
space. Peer: `Map.read_raw()` (the batch read alone); then read + BTF decode, Polycube JSON
(`metrics()` + `json.dumps`), `families()` with the map changed before each call (one counter moves,
untimed) and unchanged (its families are reused), and OpenMetrics text (`open_metrics()`,
prometheus_client's exposition) with the map changed. Medians of RUNS runs; ratios against the raw read
show the cost of decoding and formatting.
"""
from __future__ import annotations

import json
import statistics
import time
import uuid

import pytest
from rounds import env_int, fmt_spread, interleave, load_average, ratios

from pynetmon import BPFObject
from pynetmon.dynmon import Dynmon, parse_config
from pynetmon.dynmon.dataplane import read_entries
from pynetmon.dynmon.dialect import translate
from pynetmon.dynmon.openmetrics import families, render
from pynetmon.link import attach_tc
from pynetmon.testhosts import TestHosts
from pynetmon.toolchain import compile_c

RUNS = 7
QUICK = bool(env_int("PYNETMON_BENCH_QUICK", 0))
ENTRIES = 100_000

COUNTER = """
BPF_ARRAY(PKT_COUNTER, uint64_t, 1);
static __always_inline int handle_rx(struct CTXTYPE *ctx, struct pkt_metadata *md) {
    unsigned int zero = 0;
    uint64_t *count = PKT_COUNTER.lookup(&zero);
    if (count)
        *count += 1;
    return RX_OK;
}
"""

FLOWS = """
struct flow_key {
    u32 saddr;
    u32 daddr;
    u16 sport;
    u16 dport;
    u32 proto;
};
BPF_HASH(FLOWS, struct flow_key, u64, MAX_FLOWS);
static __always_inline int handle_rx(struct CTXTYPE *ctx, struct pkt_metadata *md) {
    struct flow_key key = {.proto = md->packet_len};
    FLOWS.increment(key);
    return RX_OK;
}
""".replace("MAX_FLOWS", str(ENTRIES + 4096))


def _config(code: str, metric: str, map_name: str, om_type: str = "counter") -> dict:
    return {"ingress-path": {"name": "bench", "code": code, "metric-configs": [
        {"name": metric, "map-name": map_name,
         "open-metrics-metadata": {"help": "benchmark", "type": om_type}}]}}


def _median_ms(fn, runs: int = RUNS, before=lambda: None) -> float:
    """Median of `runs` timed calls of `fn`, each after an untimed `before()`."""
    samples = []
    for _ in range(runs):
        before()
        t = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - t) * 1000)
    return statistics.median(samples)


def _table(title: str, rows: list[tuple[str, float, str]]) -> None:
    print(f"\n{title}")
    print(f"  {'what':58} {'median ms':>10}  note")
    for what, ms, note in rows:
        print(f"  {what:58} {ms:10.1f}  {note}")


@pytest.fixture(scope="module")
def host(request):
    from tests.conftest import require_bpf
    require_bpf()
    with TestHosts() as (_, b):
        yield b


def test_injection_time(host):
    """cold, warm, clang alone and the floor once per round, interleaved; ratios to the floor of the same
    round, median (min-max). Re-injection into one attached monitor is timed in its own rounds after."""
    def inject(code: str) -> None:
        with Dynmon("bench", _config(code, "packets_total", "PKT_COUNTER")) as mon:
            mon.attach("eth0", netns=host.netns)

    def cold() -> None:
        inject(COUNTER + f"/* {uuid.uuid4()} */\n")

    unit = translate(COUNTER, direction="ingress")
    image = compile_c(unit.source)

    def load_and_attach() -> None:
        with BPFObject(image) as obj:
            obj.load()
            attach_tc(obj.programs["dynmon_ingress"], "eth0", "ingress", netns=host.netns).detach()

    inject(COUNTER)  # fill the cache for the warm runs
    rounds = env_int("PYNETMON_BENCH_ROUNDS", RUNS)
    times = interleave({
        "cold": (cold, None),
        "warm": (lambda: inject(COUNTER), None),
        "clang": (lambda: compile_c(unit.source + f"/* {uuid.uuid4()} */\n", use_cache=False), None),
        "floor": (load_and_attach, None),
    }, rounds)
    with Dynmon("bench", _config(COUNTER, "packets_total", "PKT_COUNTER")) as mon:
        mon.attach("eth0", netns=host.netns)
        reinject_ms = _median_ms(lambda: mon.set_dataplane_config(_config(COUNTER, "packets_total", "PKT_COUNTER")))
    floor = times["floor"]
    med = {k: statistics.median(v) for k, v in times.items()}
    print(f"\n{rounds} interleaved rounds; {load_average()}")
    _table("Dynmon injection (config → attached, TC, 2 cores)", [
        ("inject, cold compile cache", med["cold"],
         f"target < 400 ms; {fmt_spread(ratios(times['cold'], floor), 1)}x the floor"),
        ("inject, warm compile cache", med["warm"],
         f"target < 50 ms; {fmt_spread(ratios(times['warm'], floor), 1)}x the floor"),
        ("re-inject into an attached monitor (warm)", reinject_ms, "BPF_LINK_UPDATE, old closed after"),
        ("peer: clang alone on the same translation unit", med["clang"],
         f"{fmt_spread(ratios(times['clang'], floor), 1)}x the floor"),
        ("peer (floor): load + attach + detach precompiled object", med["floor"], "core API only"),
    ])


def test_extraction_100k_hash(host):
    """Every row and the raw read in each of ROUNDS interleaved rounds; ratios to the raw read of the same
    round, median (min-max). "changed": one counter moves before the timed call, as between scrapes."""
    from prometheus_client.openmetrics.exposition import generate_latest as generate_openmetrics

    rounds = env_int("PYNETMON_BENCH_ROUNDS", RUNS)
    with Dynmon("bench", _config(FLOWS, "flow_packets", "FLOWS")) as mon:
        flows = mon.path_dataplane("ingress").maps["FLOWS"]
        first_key = {"saddr": 0xC6120000, "daddr": 0xC6120001, "sport": 0, "dport": 443, "proto": 6}
        flows.update_batch(({"saddr": 0xC6120000 + i, "daddr": 0xC6120001, "sport": i & 0xFFFF, "dport": 443,
                             "proto": 6}, i) for i in range(ENTRIES))
        assert len(flows.read_raw()[0]) == ENTRIES * flows.key_size
        bump = [0]

        def change():  # one counter moves before the timed call, as between two real scrapes
            bump[0] += 1
            flows[first_key] = bump[0]

        metric = parse_config(_config(FLOWS, "flow_packets", "FLOWS")).ingress_path.metric_configs[0]
        built = families(metric, read_entries(flows, False))

        class Fixed:
            def collect(self):
                return built

        assert render(built) == generate_openmetrics(Fixed())
        assert json.loads(mon.metrics_json("ingress", "flow_packets"))["value"] == \
            mon.metrics("ingress", "flow_packets")["value"]
        cases = {
            "raw": (flows.read_raw, None),
            "decode": (lambda: read_entries(flows, False).values, None),  # .values: decoding is lazy
            "json_text": (lambda: mon.metrics_json("ingress", "flow_packets"), change),
            "json_text_same": (lambda: mon.metrics_json("ingress", "flow_packets"), None),
            "json_objects": (lambda: json.dumps(mon.metrics("ingress", "flow_packets")), None),
            "families": (mon.families, change),
            "families_same": (mon.families, None),
            "om": (mon.open_metrics, change),
            "prom": (lambda: mon.open_metrics("prometheus"), change),
            "om_same": (mon.open_metrics, None),
        }
        if not QUICK:  # the generic path and prometheus_client take seconds per round: not in bench-quick
            cases.update({"build": (lambda: families(metric, read_entries(flows, False)), None),
                          "render": (lambda: render(built), None),
                          "library": (lambda: generate_openmetrics(Fixed()), None)})
        times = interleave(cases, rounds)
        text = mon.open_metrics()
        assert text.count("\nflow_packets_total{") == ENTRIES
    raw = times["raw"]
    rows = [
        ("peer: Map.read_raw() (batch lookup only)", "raw", ""),
        ("read + BTF decode into Python objects", "decode", ""),
        ("Polycube JSON text: metrics_json(), map changed", "json_text", "target <= 3x raw"),
        ("Polycube JSON text: metrics_json(), map unchanged", "json_text_same", ""),
        ("Polycube JSON: json.dumps(metrics()) (objects)", "json_objects", ""),
        ("families(), map changed", "families", "read + bulk lines"),
        ("families(), map unchanged", "families_same", "read + compare, reused"),
        ("OpenMetrics text: open_metrics(), map changed", "om", f"target <= 5x raw; {len(text) / 1e6:.1f} MB"),
        ("text 0.0.4: open_metrics('prometheus'), map changed", "prom", ""),
        ("OpenMetrics text: open_metrics(), map unchanged", "om_same", "reused"),
        ("  generic path: entries -> families (openmetrics.families)", "build", ""),
        ("  generic path: families -> text (pynetmon.exposition)", "render", ""),
        ("  peer: prometheus_client generate_latest of the same", "library", "identical bytes"),
    ]
    print(f"\nDynmon extraction of a {ENTRIES:,}-entry hash metric (struct key of 5 fields, u64 value); "
          f"{rounds} interleaved rounds; {load_average()}")
    print(f"  {'what':58} {'median ms':>10}  {'x raw: median (min-max)':>24}  note")
    for what, key, note in rows:
        if key not in times:
            continue
        print(f"  {what:58} {statistics.median(times[key]):10.1f}  {fmt_spread(ratios(times[key], raw)):>24}  {note}")

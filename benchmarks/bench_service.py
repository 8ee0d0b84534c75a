"""`GET /metrics` scrape latency of the daemon with 10 monitors of 10,000 series each.

Run: `make bench PYTEST_ARGS=benchmarks/bench_service.py` or
`.venv/bin/python -m pytest -q -s benchmarks/bench_service.py`.

The daemon's app runs in uvicorn on a loopback port inside this process (so the benchmark can fill the
monitors' hash maps directly, 10,000 keys each, without sending 100,000 flows of traffic); scrapes are
real HTTP requests. Scrapes are timed with no map changed since the previous scrape (rendered families
are reused), with one monitor's map changed and with every map changed before each scrape (one counter
per map moves, untimed: real counters move between scrapes). Peers measured in the same rounds: reading
the same maps as Polycube JSON text (`Dynmon.metrics_json()`), collecting the families, and
prometheus_client rendering the same families without any map read or reuse. Each round times every
row once (interleaved); medians (min-max) and p99 over SCRAPES rounds after WARMUP
(`PYNETMON_BENCH_ROUNDS` sets SCRAPES).
"""
from __future__ import annotations

import threading
import time

import httpx
import pytest
import uvicorn
from rounds import env_int, fmt_spread, interleave, load_average, percentile, ratios, spread

MONITORS = 10
SERIES = 10_000
SCRAPES = env_int("PYNETMON_BENCH_ROUNDS", 15)
WARMUP = 2

CODE = r"""
BPF_HASH(FLOWS, uint32_t, uint64_t, %d);
static __always_inline int handle_rx(struct CTXTYPE *ctx, struct pkt_metadata *md) {
    uint32_t key = ctx->len;
    uint64_t one = 1;
    uint64_t *v = FLOWS.lookup(&key);
    if (v) __sync_fetch_and_add(v, 1); else FLOWS.update(&key, &one);
    return RX_OK;
}
"""


def _config() -> dict:
    return {"ingress-path": {"name": "flows", "code": CODE % SERIES,
                             "metric-configs": [{"name": "flow_packets", "map-name": "FLOWS",
                                                 "open-metrics-metadata": {"help": "packets per flow",
                                                                           "type": "counter"}}]}}


@pytest.fixture(scope="module")
def daemon(request):
    from tests.conftest import require_bpf
    require_bpf()
    from pynetmon.service import ServiceConfig, create_app, operations
    from pynetmon.service.server import bind

    app = create_app(ServiceConfig(port=0), restore=False)
    registry = app.state.service.registry
    for i in range(MONITORS):
        cube = operations.create_dynmon(registry, f"mon{i}", {"dataplane-config": _config()})
        flows = cube.monitor.path_dataplane("ingress").maps["FLOWS"]
        flows.update_batch([(k + i * SERIES, k + 1) for k in range(SERIES)])
    sock = bind("127.0.0.1", 0)
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.05)
    url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    yield url, registry
    server.should_exit = True
    thread.join(timeout=30)
    sock.close()


def test_metrics_scrape_latency(daemon):
    from prometheus_client.exposition import generate_latest
    from prometheus_client.openmetrics.exposition import generate_latest as generate_openmetrics

    from pynetmon.service.collector import DaemonCollector

    url, registry = daemon
    client = httpx.Client(base_url=url, timeout=120)
    om = {"Accept": "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5"}
    text = {"Accept": "text/plain; version=0.0.4"}
    body = client.get("/metrics", headers=om).text
    series = sum(1 for line in body.splitlines() if line.startswith("flow_packets_total{"))
    assert series == MONITORS * SERIES, series
    assert 'flow_packets_total{key="0",monitor="mon0"} 1.0' in body

    # The reused renderings put together are exactly what prometheus_client writes for the whole scrape.
    client.get("/metrics", headers=om)
    assert client.get("/metrics", headers=om).content == generate_openmetrics(DaemonCollector(registry))
    assert client.get("/metrics", headers=text).content == generate_latest(DaemonCollector(registry))

    families = list(DaemonCollector(registry).collect())

    class Fixed:
        def collect(self):
            return families

    maps = [c.monitor.path_dataplane("ingress").maps["FLOWS"] for c in registry.cubes("dynmon")]
    bump = [0]

    def change(monitors: int):
        # One counter of each of `monitors` monitors moves, as between two real scrapes.
        def touch():
            bump[0] += 1
            for i, flows in enumerate(maps[:monitors]):
                flows[i * SERIES] = 1_000_000 + bump[0]
        return touch

    def scrape(headers):
        return lambda: client.get("/metrics", headers=headers)

    cases = {
        "GET /metrics, OpenMetrics, no map changed": (scrape(om), None),
        "GET /metrics, text 0.0.4, no map changed": (scrape(text), None),
        "GET /metrics, OpenMetrics, 1 of 10 maps changed": (scrape(om), change(1)),
        "GET /metrics, OpenMetrics, every map changed": (scrape(om), change(MONITORS)),
        "GET /metrics, text 0.0.4, every map changed": (scrape(text), change(MONITORS)),
        "peer: read all maps as Polycube JSON text (no HTTP)":
            (lambda: [c.monitor.metrics_json() for c in registry.cubes("dynmon")], None),
        "peer: collect families, no map changed (read + compare)": (lambda: DaemonCollector(registry).scrape(), None),
        "peer: collect families, every map changed (read + build)":
            (lambda: DaemonCollector(registry).scrape(), change(MONITORS)),
    }
    if not env_int("PYNETMON_BENCH_QUICK", 0):  # seconds per round: not in bench-quick
        cases["peer: prometheus_client OpenMetrics rendering only"] = (lambda: generate_openmetrics(Fixed()), None)
        cases["peer: prometheus_client text rendering only"] = (lambda: generate_latest(Fixed()), None)
    rows = list(interleave(cases, SCRAPES, warmup=WARMUP).items())
    client.close()
    base = rows[0][1]
    print(f"\n/metrics with {MONITORS} monitors x {SERIES} series = {MONITORS * SERIES} series, "
          f"{len(body) / 1e6:.1f} MB; {SCRAPES} interleaved rounds (ms: median (min-max), p99); {load_average()}")
    print("targets: every map changed, median < 100 ms, p99 < 150 ms")
    print(f"{'what':58} {'median (min-max)':>24} {'p99':>8} {'vs first: median (min-max)':>28}")
    for what, samples in rows:
        print(f"{what:58} {fmt_spread(spread(samples), 1):>24} {percentile(samples, 0.99):>8.1f} "
              f"{fmt_spread(ratios(samples, base)):>28}")

"""Many clients read metrics while the dataplane is replaced, again and again: every read succeeds and
shows the exact count."""
from __future__ import annotations

import threading
import time

import httpx

from .dataplanes import UDP_PORT, broken_config, counter_config

EGRESS_CODE = r"""
BPF_ARRAY(EGRESS_SEEN, uint64_t, 1);
static __always_inline int handle_rx(struct CTXTYPE *ctx, struct pkt_metadata *md) {
    unsigned int slot = 0;
    uint64_t *n = EGRESS_SEEN.lookup(&slot);
    if (n)
        __sync_fetch_and_add(n, %d);
    return RX_OK;
}
"""


def _egress(version: int) -> dict:
    return {"egress-path": {"name": f"egress v{version}", "code": EGRESS_CODE % version,
                            "metric-configs": [{"name": "egress_seen", "map-name": "EGRESS_SEEN",
                                                "open-metrics-metadata": {"help": "h", "type": "counter"}}]}}


def test_reads_during_config_replacement(host_daemon):
    d, a, b = host_daemon
    d.client.post("/polycube/v1/dynmon/busy", json={"dataplane-config": counter_config()}).raise_for_status()
    d.client.post("/polycube/v1/attach", json={"cube": "busy", "port": "eth0"}).raise_for_status()
    sent = a.send_udp(b.ip, UDP_PORT, 500)
    time.sleep(0.1)
    stop = threading.Event()
    failures: list[str] = []
    reads = [0]
    line = f'udp_packets_total{{monitor="busy",proto="udp"}} {float(sent)}'

    def reader(kind: str):
        with httpx.Client(base_url=d.url, timeout=30) as c:
            while not stop.is_set():
                if kind == "json":
                    r = c.get("/polycube/v1/dynmon/busy/metrics/ingress-metrics/udp_packets_total/value")
                    ok = r.status_code == 200 and r.json() == [sent]
                else:
                    r = c.get("/metrics", headers={"Accept": "text/plain"})
                    ok = r.status_code == 200 and line in r.text
                if not ok:
                    failures.append(f"{kind}: {r.status_code} {r.text[:300]}")
                reads[0] += 1

    threads = [threading.Thread(target=reader, args=(k,)) for k in ("json", "json", "prom", "prom", "json", "prom")]
    for t in threads:
        t.start()
    try:
        # The ingress path is left alone (its maps keep counting); the egress path is replaced each time,
        # and every third change is a config that does not compile.
        for version in range(1, 10):
            body = broken_config() if version % 3 == 0 else _egress(version)
            r = d.client.put("/polycube/v1/dynmon/busy/dataplane-config", json=body)
            assert r.status_code == (400 if version % 3 == 0 else 200), r.text
    finally:
        stop.set()
        for t in threads:
            t.join()
    assert not failures, failures[:5]
    assert reads[0] > 50
    value = d.client.get("/polycube/v1/dynmon/busy/metrics/ingress-metrics/udp_packets_total/value").json()
    assert value == [sent]
    assert d.client.get("/polycube/v1/dynmon/busy").json()["dataplane-config"]["egress-path"]["name"] == "egress v8"

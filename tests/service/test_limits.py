"""Every resource of a real daemon is bounded: a request over a limit is a 4xx (422 for what one request
asks alone, 507 for what the daemon has run out of, 413 for the body) that names the limit and the
`pynetmon serve` option raising it; nothing is created, and the daemon goes on serving."""
from __future__ import annotations

import time
from pathlib import Path

from .daemon import Daemon
from .dataplanes import UDP_PORT


def _array_config(entries: int, maps: int = 1) -> dict:
    decls = "\n".join(f"BPF_ARRAY(BIG{i}, uint64_t, {entries});" for i in range(maps))
    code = decls + r"""
static __always_inline int handle_rx(struct CTXTYPE *ctx, struct pkt_metadata *md) {
    unsigned int slot = 0;
    uint64_t *n = BIG0.lookup(&slot);
    if (n)
        __sync_fetch_and_add(n, 1);
    return RX_OK;
}
"""
    return {"ingress-path": {"name": "big", "code": code, "metric-configs": [{"name": "big", "map-name": "BIG0"}]}}


def _refused(r, status: int, limit: str, option: str) -> str:
    assert r.status_code == status, r.text
    text = r.json()["error"]
    assert limit in text and option in text, text
    return text


def test_kernel_memory_per_monitor_and_in_total(bpf):
    with Daemon("--max-kernel-memory", "3M", "--max-monitor-memory", "2M") as d:
        c = d.client
        # The case: 1<<30 entries (8 GiB) is refused from the spec, before anything is created.
        text = _refused(c.post("/polycube/v1/dynmon/huge", json={"dataplane-config": _array_config(1 << 30)}),
                        422, "kernel memory per monitor", "--max-monitor-memory")
        assert "'BIG0'" in text and "1073741824 entries" in text
        assert c.get("/polycube/v1/dynmon/huge").status_code == 404
        one_and_a_half_mib = (3 << 19) // 8
        assert c.post("/polycube/v1/dynmon/m1", json={"dataplane-config": _array_config(one_and_a_half_mib)}) \
            .status_code == 201
        _refused(c.post("/polycube/v1/dynmon/m2", json={"dataplane-config": _array_config(one_and_a_half_mib)}),
                 507, "kernel memory in total", "--max-kernel-memory")
        # Replacing a config counts the new dataplane next to the old one (both exist for a moment); the
        # refused replacement leaves the old one running.
        _refused(c.put("/polycube/v1/dynmon/m1/dataplane-config", json=_array_config(one_and_a_half_mib)),
                 422, "kernel memory per monitor", "--max-monitor-memory")
        assert c.get("/polycube/v1/dynmon/m1/metrics/ingress-metrics/big/value").status_code == 200
        assert c.delete("/polycube/v1/dynmon/m1").status_code == 204  # gives the memory back
        assert c.post("/polycube/v1/dynmon/m2", json={"dataplane-config": _array_config(one_and_a_half_mib)}) \
            .status_code == 201


def test_number_of_monitors_and_captures(bpf, tmp_path):
    with Daemon("--max-monitors", "2", "--max-captures", "1", "--capture-dir", str(tmp_path)) as d:
        c = d.client
        assert [c.post(f"/polycube/v1/dynmon/m{i}", json={}).status_code for i in range(2)] == [201, 201]
        _refused(c.post("/polycube/v1/dynmon/m2", json={}), 507, "monitors", "--max-monitors")
        assert c.post("/polycube/v1/packetcapture/c0", json={}).status_code == 201
        _refused(c.post("/polycube/v1/packetcapture/c1", json={}), 507, "captures", "--max-captures")
        assert c.delete("/polycube/v1/dynmon/m0").status_code == 204
        assert c.post("/polycube/v1/dynmon/m2", json={}).status_code == 201
        assert sorted(c.get("/polycube/v1/cubes").json()) == ["dynmon", "packetcapture"]


def _nofile(pid: int) -> int:
    """The soft RLIMIT_NOFILE of process `pid`."""
    lines = Path(f"/proc/{pid}/limits").read_text().splitlines()
    return int(next(line.split()[3] for line in lines if line.startswith("Max open files")))


def test_open_files_are_raised_at_start_and_never_exhausted(bpf):
    with Daemon("--max-open-files", "200") as d:
        assert _nofile(d.proc.pid) == 200
        text = _refused(d.client.post("/polycube/v1/dynmon/many", json={"dataplane-config": _array_config(1, 250)}),
                        507, "open files", "--max-open-files")
        assert "descriptors" in text
        assert d.client.post("/polycube/v1/dynmon/few", json={"dataplane-config": _array_config(1, 20)}) \
            .status_code == 201
    with Daemon(prefix=("prlimit", "--nofile=256:4096", "--")) as d:  # default: soft raised to the hard limit
        assert _nofile(d.proc.pid) == 4096


def test_ring_buffer_size_of_monitor_code(bpf):
    code = r"""#include <linux/bpf.h>
#include <linux/pkt_cls.h>
#include <bpf/bpf_helpers.h>
struct { __uint(type, BPF_MAP_TYPE_RINGBUF); __uint(max_entries, 1 << 24); } events SEC(".maps");
struct { __uint(type, BPF_MAP_TYPE_ARRAY); __uint(max_entries, 1); __type(key, __u32); __type(value, __u64); }
    seen SEC(".maps");
SEC("tc") int count(struct __sk_buff *skb) {
    __u32 k = 0; __u64 *v = bpf_map_lookup_elem(&seen, &k);
    if (v) __sync_fetch_and_add(v, 1);
    bpf_ringbuf_output(&events, &k, sizeof(k), 0);
    return TC_ACT_OK;
}
char LICENSE[] SEC("license") = "GPL";
"""
    config = {"ingress-path": {"name": "rb", "code": code, "metric-configs": [{"name": "seen", "map-name": "seen"}]}}
    with Daemon("--max-ring-bytes", "1M") as d:
        text = _refused(d.client.post("/polycube/v1/dynmon/rb", json={"dataplane-config": config}),
                        422, "ring buffer size", "--max-ring-bytes")
        assert "'events'" in text


def test_capture_buffer_is_bounded(hosts, tmp_path):
    a, b = hosts
    with Daemon("--netns", b.netns, "--capture-buffer-bytes", "8K", "--capture-dir", str(tmp_path)) as d:
        c = d.client
        assert c.post("/polycube/v1/packetcapture/nm", json={"capture": "ingress", "networkmode": True,
                                                             "filter": f"udp port {UDP_PORT}"}).status_code == 201
        c.post("/polycube/v1/attach", json={"cube": "nm", "port": "eth0"}).raise_for_status()
        assert a.send_udp(b.ip, UDP_PORT, 40, payload=bytes(1000)) == 40  # ~42 KB: nobody reads them
        deadline = time.monotonic() + 10
        stats = {}
        while time.monotonic() < deadline:
            stats = c.get("/polycube/v1/packetcapture/nm").json()["stats"]
            if stats["delivered"] + stats["dropped"] >= 40:
                break
            time.sleep(0.1)
        # 8 KiB hold 7 records of 1,058 bytes (16-byte header + 1,042-byte frame); the rest are dropped.
        assert (stats["delivered"], stats["dropped"]) == (7, 33), stats


def test_body_limit_names_its_option():
    with Daemon("--max-body", "2K") as d:
        _refused(d.client.post("/polycube/v1/attach", content=b"{" + b" " * 4096 + b"}"), 413, "2048 bytes",
                 "--max-body")

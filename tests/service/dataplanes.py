"""Dataplane configs the service tests inject (Polycube style, as users of dynmon_injector.py write them)."""
from __future__ import annotations

UDP_PORT = 7777

# The start of a Polycube-style handle_rx that goes on only for UDP to `%(port)d` (eth, ip, udp in scope).
UDP_TO_PORT = r"""static __always_inline int handle_rx(struct CTXTYPE *ctx, struct pkt_metadata *md) {
    void *data = (void *)(long)ctx->data;
    void *data_end = (void *)(long)ctx->data_end;
    struct ethhdr *eth = data;
    if ((void *)(eth + 1) > data_end || eth->h_proto != bpf_htons(ETH_P_IP))
        return RX_OK;
    struct iphdr *ip = (void *)(eth + 1);
    if ((void *)(ip + 1) > data_end || ip->protocol != IPPROTO_UDP)
        return RX_OK;
    struct udphdr *udp = (void *)ip + ip->ihl * 4;
    if ((void *)(udp + 1) > data_end || udp->dest != bpf_htons(%(port)d))
        return RX_OK;
"""

# Counts UDP datagrams to UDP_PORT (one array slot), and packets/bytes per source address (a hash).
COUNTER_CODE = r"""
#include <uapi/linux/if_ether.h>
#include <uapi/linux/ip.h>
#include <uapi/linux/udp.h>

struct flow_stats { uint64_t packets; uint64_t bytes; };

BPF_ARRAY(UDP_PACKETS, uint64_t, 1);
BPF_HASH(FLOWS, uint32_t, struct flow_stats, 1024);

""" + UDP_TO_PORT + r"""    unsigned int slot = 0;
    uint64_t *count = UDP_PACKETS.lookup(&slot);
    if (count)
        __sync_fetch_and_add(count, 1);
    uint32_t src = ip->saddr;
    struct flow_stats zero = {0, 0};
    struct flow_stats *fs = FLOWS.lookup_or_try_init(&src, &zero);
    if (fs) {
        __sync_fetch_and_add(&fs->packets, 1);
        __sync_fetch_and_add(&fs->bytes, (uint64_t)(data_end - data));
    }
    return RX_OK;
}
"""


def counter_config(port: int = UDP_PORT, *, name: str = "udp counter") -> dict:
    """A dataplane-config: ingress counts UDP to `port` (udp_packets_total) and per source (flows_*)."""
    return {
        "ingress-path": {
            "name": name,
            "code": COUNTER_CODE % {"port": port},
            "metric-configs": [
                {"name": "udp_packets_total", "map-name": "UDP_PACKETS",
                 "open-metrics-metadata": {"help": "UDP datagrams to the test port", "type": "counter",
                                           "labels": [{"name": "proto", "value": "udp"}]}},
                {"name": "flows", "map-name": "FLOWS",
                 "open-metrics-metadata": {"help": "per source address", "type": "counter", "labels": []}},
            ],
        },
        "egress-path": {},
    }


def broken_config() -> dict:
    """Does not compile: clang's message names the undeclared identifier."""
    cfg = counter_config()
    cfg["ingress-path"]["code"] = cfg["ingress-path"]["code"].replace("__sync_fetch_and_add(count, 1);",
                                                                      "__sync_fetch_and_add(count, undeclared_thing);")
    return cfg

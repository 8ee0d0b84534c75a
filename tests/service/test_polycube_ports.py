"""Polycube's `cube:port` names in attach and detach (`polycubectl attach mon br1:toveth1`): a Linux
bridge's member interface, against a real daemon, with real datagrams through the bridge port."""
from __future__ import annotations

import json
import time

import requests

from .dataplanes import UDP_PORT, counter_config


def test_bridge_port_names_as_polycube_writes_them(host_daemon):
    d, a, b = host_daemon
    # b's eth0 becomes a port of bridge br1 (b's address moves to the bridge, as on a real bridge host).
    b.run("ip", "link", "add", "br1", "type", "bridge")
    b.run("ip", "addr", "del", f"{b.ip}/{b.prefixlen}", "dev", "eth0")
    b.run("ip", "link", "set", "eth0", "master", "br1")
    b.run("ip", "addr", "add", f"{b.ip}/{b.prefixlen}", "dev", "br1")
    b.run("ip", "link", "set", "br1", "up")
    url = f"{d.url}/polycube/v1"
    r = requests.post(f"{url}/dynmon/mon/", json.dumps({"dataplane-config": counter_config()}), timeout=60)
    assert r.status_code == 201, r.text

    def attach(port: str) -> requests.Response:
        return requests.post(f"{url}/attach", json.dumps({"cube": "mon", "port": port}), timeout=10)

    # Wrong names: the missing interface or bridge is named; an interface of another master is a 409.
    r = attach("br9:eth0")
    assert r.status_code == 404 and "br9" in r.json()["message"], r.text
    r = attach("br1:veth7")
    assert r.status_code == 404 and "veth7" in r.json()["message"], r.text
    r = attach("br1:lo")
    assert r.status_code == 409 and "no master" in r.json()["message"], r.text
    r = attach("br1:eth0:x")
    assert r.status_code in (400, 422) and r.json()["problems"][0]["path"] == "port", r.text
    assert requests.get(f"{url}/mon/", timeout=5).json()["status"] == "detached"

    # Polycube's `to<peer>` port name: the member interface eth0; shown as given.
    attach("br1:toeth0").raise_for_status()
    cube = requests.get(f"{url}/mon/", timeout=5).json()
    assert cube["parent"] == "br1:toeth0" and cube["status"] == "attached"
    assert a.send_udp(b.ip, UDP_PORT, 5) == 5
    time.sleep(0.2)
    value = f"{url}/dynmon/mon/metrics/ingress-metrics/udp_packets_total/value"
    assert requests.get(value, timeout=5).json() == [5]  # the datagrams entered the bridge through eth0
    requests.post(f"{url}/detach", json.dumps({"cube": "mon", "port": "br1:toeth0"}), timeout=10).raise_for_status()
    assert requests.get(f"{url}/mon/", timeout=5).json()["parent"] == ""
    # The interface's own name after the bridge's works too, and so does the plain interface name.
    attach("br1:eth0").raise_for_status()
    assert requests.get(f"{url}/mon/", timeout=5).json()["parent"] == "br1:eth0"
    requests.post(f"{url}/detach", json.dumps({"cube": "mon", "port": "eth0"}), timeout=10).raise_for_status()
    attach("eth0").raise_for_status()
    assert requests.get(f"{url}/mon/", timeout=5).json()["parent"] == "eth0"

"""Polycube's packetcapture as its users drive it, against a real `pynetmon serve`: plain `requests` calls
with polycubectl's paths and bodies (the generic `/polycube/v1/{cube}/...` form), the `pynetmon capture
NAME set/show` commands, Polycube's defaults (no filter: nothing captured) and `dump` naming."""
from __future__ import annotations

import json
import subprocess
import time

import requests

from .daemon import Daemon
from .dataplanes import UDP_PORT


def _pcap_count(path) -> int:
    proc = subprocess.run(["tcpdump", "-nr", str(path)], capture_output=True, timeout=60, check=False)
    assert proc.returncode == 0, proc.stderr.decode()
    return len(proc.stdout.decode().splitlines())


def _wait_count(path, n: int) -> int:
    deadline, got = time.monotonic() + 15, -1
    while time.monotonic() < deadline:
        got = _pcap_count(path)
        if got >= n:
            break
        time.sleep(0.2)
    return got


def test_polycubectl_workflow_on_a_capture(hosts, tmp_path):
    a, b = hosts
    caps = tmp_path / "caps"
    d = Daemon("--netns", b.netns, "--capture-dir", str(caps), log_path=tmp_path / "serve.log")
    try:
        url = f"{d.url}/polycube/v1"
        # polycubectl packetcapture add sniff capture=ingress ; polycubectl attach sniff eth0
        requests.post(f"{url}/packetcapture/sniff/", json.dumps({"capture": "ingress"}), timeout=30).raise_for_status()
        requests.post(f"{url}/attach", json.dumps({"cube": "sniff", "port": "eth0"}), timeout=5).raise_for_status()
        cube = requests.get(f"{url}/sniff/", timeout=5).json()  # the generic form
        assert cube["name"] == "sniff" and cube["service-name"] == "packetcapture"
        # Polycube's defaults: no filter (shown as ""), so nothing is captured; the file is <name>.pcap
        # in the capture directory, which stands for Polycube's /tmp.
        assert requests.get(f"{url}/sniff/filter/", timeout=5).json() == ""
        pcap = caps / "sniff.pcap"
        assert requests.get(f"{url}/sniff/dump/", timeout=5).json() == f"capture dump in {pcap}"
        assert cube["dump-file"] == str(pcap)
        assert a.send_udp(b.ip, UDP_PORT, 5) == 5
        time.sleep(0.5)
        stats = requests.get(f"{url}/sniff/", timeout=5).json()["stats"]
        assert stats["seen"] >= 5 and stats["captured"] == 0, stats
        assert _pcap_count(pcap) == 0

        # pynetmon capture NAME set / show: polycubectl's words, through the daemon.
        d.cli("capture", "sniff", "set", f"filter=udp port {UDP_PORT}")
        assert d.cli("capture", "sniff", "filter", "show").stdout == f"udp port {UDP_PORT}\n"
        assert d.cli("capture", "sniff", "snaplen", "show").stdout == "262144\n"
        assert d.cli("capture", "sniff", "show", "dump").stdout == f"capture dump in {pcap}\n"
        assert a.send_udp(b.ip, UDP_PORT, 4) == 4
        a.send_udp(b.ip, UDP_PORT + 1, 3)  # filtered out
        assert _wait_count(pcap, 4) == 4
        d.cli("capture", "sniff", "set", "snaplen=80", "filter=all")
        shown = d.cli("capture", "sniff", "show").stdout.splitlines()
        assert "filter: all" in shown and "snaplen: 80" in shown and "networkmode: false" in shown, shown
        bad = d.cli("capture", "sniff", "set", "filter=udp and (", check=False)
        assert bad.returncode == 1 and "filter" in bad.stderr, bad.stderr
        assert d.cli("capture", "sniff", "filter", "show").stdout == "all\n"  # the old filter runs on

        # polycubectl sniff set dump="/tmp/day1/web": Polycube's /tmp is the capture directory, ".pcap" added.
        r = requests.patch(f"{url}/sniff/", json.dumps({"dump": "/tmp/day1/web"}), timeout=10)
        assert r.status_code == 200, r.text
        web = caps / "day1" / "web.pcap"
        assert requests.get(f"{url}/sniff/dump/", timeout=5).json() == f"capture dump in {web}"
        assert a.send_udp(b.ip, UDP_PORT, 2) == 2
        assert _wait_count(web, 2) == 2
        r = requests.patch(f"{url}/sniff/", json.dumps({"dump": "/home/user/capture"}), timeout=10)
        assert r.status_code == 400 and "/tmp" in r.json()["message"], r.text
        # Network mode: the sentence Polycube shows instead of a path.
        requests.patch(f"{url}/sniff/networkmode/", "true", timeout=10).raise_for_status()
        assert requests.get(f"{url}/sniff/dump/", timeout=5).json() == "the service is running in network mode"
        assert requests.get(f"{url}/sniff/", timeout=5).json()["dump-file"] is None
        # polycubectl del sniff
        assert requests.delete(f"{url}/sniff/", timeout=10).status_code == 204
        assert requests.get(f"{url}/packetcapture/sniff/", timeout=5).status_code == 404
    finally:
        assert d.stop() == 0, d.log()


def test_generic_cube_paths(daemon):
    url = f"{daemon.url}/polycube/v1"
    requests.post(f"{url}/packetcapture/cap1", json.dumps({}), timeout=30).raise_for_status()
    by_service = requests.get(f"{url}/packetcapture/cap1", timeout=5).json()
    generic = requests.get(f"{url}/cap1", timeout=5).json()
    assert generic["uuid"] == by_service["uuid"]
    assert requests.get(f"{url}/cap1/snaplen", timeout=5).json() == 262144
    # A name that is no cube is a 404 naming what was asked; the API's own first segments keep their meaning.
    r = requests.get(f"{url}/nosuch/filter", timeout=5)
    assert r.status_code == 404 and "/polycube/v1/nosuch/filter" in r.json()["message"], r.text
    assert "packetcapture" in requests.get(f"{url}/cubes", timeout=5).json()
    r = requests.post(f"{url}/cap1/", json.dumps({}), timeout=5)  # creating it again, by its own name
    assert r.status_code == 409, r.text
    # Method errors name the methods of the service path the generic one stands for.
    r = requests.put(f"{url}/cap1/globalheader", json.dumps({}), timeout=5)
    assert r.status_code == 405 and "GET" in r.headers["Allow"] and "PUT" not in r.headers["Allow"], r.headers

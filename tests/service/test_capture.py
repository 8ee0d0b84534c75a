"""Packet captures hosted by the daemon: the pcap stream read by `tcpdump -r -`, capture files flushed
on delete and on SIGTERM, Polycube's capture client's request sequence, run-time changes."""
from __future__ import annotations

import json
import struct
import subprocess
import time

import requests

from .daemon import Daemon
from .dataplanes import UDP_PORT


def _tcpdump(path_or_dash: str, data: bytes | None = None) -> list[str]:
    proc = subprocess.run(["tcpdump", "-nr", path_or_dash], input=data, capture_output=True, timeout=60,
                          check=False)
    assert proc.returncode == 0, proc.stderr.decode()
    return proc.stdout.decode().splitlines()


def test_pcap_stream_reads_with_tcpdump(hosts, tmp_path):
    a, b = hosts
    d = Daemon("--netns", b.netns, "--capture-dir", str(tmp_path))
    try:
        c = d.client
        r = c.post("/polycube/v1/packetcapture/live", json={"capture": "bidirectional",
                                                            "filter": f"udp port {UDP_PORT}", "networkmode": True})
        assert r.status_code == 201, r.text
        c.post("/polycube/v1/attach", json={"cube": "live", "port": "eth0"}).raise_for_status()
        pipeline = subprocess.Popen(f"curl -sSN {d.url}/polycube/v1/packetcapture/live/pcap | tcpdump -nr -",
                                    shell=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        time.sleep(0.5)  # the stream is open (its global header sent) before the packets come
        assert a.send_udp(b.ip, UDP_PORT, 10) == 10
        a.send_udp(b.ip, UDP_PORT + 1, 5)  # filtered out
        time.sleep(0.3)
        # A second reader is refused while the first streams.
        assert c.get("/polycube/v1/packetcapture/live/pcap").status_code == 409
        # Detaching flushes the rest and ends the stream: curl exits, tcpdump reads to the end.
        c.post("/polycube/v1/detach", json={"cube": "live", "port": "eth0"}).raise_for_status()
        out, err = pipeline.communicate(timeout=30)
        lines = out.decode().splitlines()
        assert len(lines) == 10, (lines, err.decode())
        assert all(f"{a.ip}." in line and f"> {b.ip}.{UDP_PORT}: UDP, length 32" in line for line in lines)
    finally:
        assert d.stop() == 0, d.log()


def test_capture_files_are_flushed_on_delete_and_sigterm(hosts, tmp_path):
    a, b = hosts
    d = Daemon("--netns", b.netns, "--capture-dir", str(tmp_path))
    stopped = False
    try:
        c = d.client
        for name in ("deleted", "terminated"):
            r = c.post(f"/polycube/v1/packetcapture/{name}",
                       json={"capture": "ingress", "filter": f"udp and dst port {UDP_PORT}", "dump": f"caps/{name}"})
            assert r.status_code == 201, r.text
            assert r.json()["dump-file"] == str(tmp_path / "caps" / name) + ".pcap"
            c.post("/polycube/v1/attach", json={"cube": name, "port": "eth0"}).raise_for_status()
        # Outside the capture directory: refused, naming the field.
        r = c.post("/polycube/v1/packetcapture/escape", json={"capture": "ingress", "dump": "../../etc/evil"})
        assert r.status_code == 400 and r.json()["problems"][0]["path"] == "dump"
        assert a.send_udp(b.ip, UDP_PORT, 7) == 7
        time.sleep(0.3)
        assert c.delete("/polycube/v1/packetcapture/deleted").status_code == 204
        assert len(_tcpdump(str(tmp_path / "caps" / "deleted.pcap"))) == 7
        assert d.stop() == 0, d.log()
        stopped = True
        assert len(_tcpdump(str(tmp_path / "caps" / "terminated.pcap"))) == 7
        assert "detached packetcapture 'terminated' from eth0" in d.log()
    finally:
        if not stopped:
            d.stop()


def test_run_time_changes_and_bad_filters(host_daemon, tmp_path):
    d, a, b = host_daemon
    c = d.client
    c.post("/polycube/v1/packetcapture/chg", json={"capture": "ingress", "filter": "udp", "networkmode": True,
                                                   "snaplen": 64}).raise_for_status()
    c.post("/polycube/v1/attach", json={"cube": "chg", "port": "eth0"}).raise_for_status()
    r = c.patch("/polycube/v1/packetcapture/chg", json={"filter": "udp and ("})
    assert r.status_code == 400 and r.json()["problems"][0]["path"] == "filter", r.text
    assert c.get("/polycube/v1/packetcapture/chg/filter").json() == "udp"  # the old filter runs on
    r = c.patch("/polycube/v1/packetcapture/chg/snaplen", json=0)
    assert r.status_code == 422 and r.json()["problems"][0]["path"] == "snaplen"
    assert c.patch("/polycube/v1/packetcapture/chg", json={"filter": f"udp port {UDP_PORT}",
                                                          "capture": "BIDIRECTIONAL"}).status_code == 200
    info = c.get("/polycube/v1/packetcapture/chg").json()
    assert (info["filter"], info["capture"], info["snaplen"], info["parent"]) == \
        (f"udp port {UDP_PORT}", "bidirectional", 64, "eth0")
    a.send_udp(b.ip, UDP_PORT, 4)
    a.send_udp(b.ip, 9, 4)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and c.get("/polycube/v1/packetcapture/chg").json()["stats"]["matched"] < 4:
        time.sleep(0.1)
    assert c.get("/polycube/v1/packetcapture/chg").json()["stats"]["matched"] == 4
    text = c.get("/metrics", headers={"Accept": "text/plain"}).text
    assert 'pynetmon_capture_packets_total{capture="chg"}' in text


def test_polycube_capture_client_request_sequence(host_daemon, tmp_path):
    """The requests Polycube's Packetcapture_Client/client.py sends (trailing slashes; networkmode PATCHed
    at its misspelt URL with the body 'true'), and the pcap file it writes from them."""
    d, a, b = host_daemon
    base = f"{d.url}/polycube/v1"
    requests.post(f"{base}/packetcapture/sniffer", json.dumps({"capture": "ingress",
                                                               "filter": f"udp port {UDP_PORT}"}),
                  timeout=30).raise_for_status()
    requests.post(f"{base}/attach", json.dumps({"cube": "sniffer", "port": "eth0"}), timeout=5).raise_for_status()
    todos = json.loads(requests.get(f"{base}/cubes/", timeout=8).text)
    assert [p["name"] for p in todos["packetcapture"]] == ["sniffer"]
    todos2 = json.loads(requests.get(f"{base}/packetcapture/sniffer/", timeout=8).text)
    assert todos2["networkmode"] is False
    requests.patch(f"{base}/sniffer/networkmode/", "true", timeout=8).raise_for_status()
    header = json.loads(requests.get(f"{base}/packetcapture/sniffer/globalheader/", timeout=8).text)
    out = bytearray(struct.pack("@ I H H i I I I ", header["magic"], header["version_major"],
                                header["version_minor"], header["thiszone"], header["sigfigs"], header["snaplen"],
                                header["linktype"]))
    assert a.send_udp(b.ip, UDP_PORT, 3) == 3
    got, deadline = 0, time.monotonic() + 15
    while got < 3 and time.monotonic() < deadline:
        todos4 = json.loads(requests.get(f"{base}/packetcapture/sniffer/packet/", timeout=8).text)
        if todos4["rawdata"] != "":
            out += struct.pack("@ I I I I ", todos4["timestamp-seconds"], todos4["timestamp-microseconds"],
                               todos4["capturelen"], todos4["packetlen"])
            out += todos4["rawdata"].encode("latin-1", "strict")
            got += 1
    lines = _tcpdump("-", bytes(out))
    assert len(lines) == 3, lines
    assert all(f"> {b.ip}.{UDP_PORT}: UDP, length 32" in line for line in lines)

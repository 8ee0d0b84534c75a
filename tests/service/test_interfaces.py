"""Interfaces that go away and come back, against a real daemon: the veth pair of the test hosts is deleted
and created again with the same names; the monitor and the capture on it are detached and waiting
(JSON status and `pynetmon_attached`), changes still work meanwhile, and both are attached again and
count the new interface's packets. Requests naming a missing interface fail at once with its name."""
from __future__ import annotations

import subprocess
import time

from pynetmon.link import tc_programs

from .daemon import Daemon, wait_until
from .dataplanes import UDP_PORT, counter_config


def _statuses(c) -> dict[str, str]:
    return {cube["name"]: cube["status"] for cubes in c.get("/polycube/v1/cubes").json().values() for cube in cubes}


def _attached_gauge(c) -> dict[str, str]:
    text = c.get("/metrics", headers={"Accept": "text/plain"}).text
    return {line.split("}")[0] + "}": line.rsplit(" ", 1)[1] for line in text.splitlines()
            if line.startswith("pynetmon_attached{")}


def _count(c) -> int:
    return c.get("/polycube/v1/dynmon/m/metrics/ingress-metrics/udp_packets_total/value").json()[0]


def test_interface_deleted_and_created_again(hosts, tmp_path):
    a, b = hosts
    with Daemon("--netns", b.netns, "--capture-dir", str(tmp_path / "caps"), log_path=tmp_path / "serve.log") as d:
        c = d.client
        c.post("/polycube/v1/dynmon/m", json={"dataplane-config": counter_config()}).raise_for_status()
        c.post("/polycube/v1/packetcapture/cap", json={"capture": "ingress", "dump": "cap",
                                                       "filter": f"udp port {UDP_PORT}"}).raise_for_status()
        for cube in ("m", "cap"):
            c.post("/polycube/v1/attach", json={"cube": cube, "port": "eth0"}).raise_for_status()
        assert a.send_udp(b.ip, UDP_PORT, 10) == 10
        time.sleep(0.2)
        assert _count(c) == 10
        assert _attached_gauge(c) == {'pynetmon_attached{cube="cap",interface="eth0"}': "1.0",
                                      'pynetmon_attached{cube="m",interface="eth0"}': "1.0"}

        hosts.unlink()
        wait_until(lambda: _statuses(c) == {"m": "waiting for interface", "cap": "waiting for interface"},
                   "both cubes to notice")
        assert c.get("/polycube/v1/dynmon/m").json()["parent"] == "eth0"
        assert set(_attached_gauge(c).values()) == {"0.0"}
        # Changes while the interface is gone: no 500s; a request naming a missing interface is a 404.
        r = c.put("/polycube/v1/dynmon/m/dataplane-config", json=counter_config(name="second"))
        assert r.status_code == 200, r.text
        assert c.patch("/polycube/v1/packetcapture/cap", json={"snaplen": 128}).status_code == 200
        r = c.post("/polycube/v1/attach", json={"cube": "m", "port": "eth0"})
        assert r.status_code == 404 and "'eth0'" in r.json()["error"], r.text
        c.post("/polycube/v1/dynmon/other", json={}).raise_for_status()
        r = c.post("/polycube/v1/attach", json={"cube": "other", "port": "gone0"})
        assert r.status_code == 404 and "'gone0'" in r.json()["error"]
        assert _statuses(c)["other"] == "detached"

        hosts.relink()
        wait_until(lambda: set(_statuses(c).values()) == {"attached", "detached"}, "both cubes to attach again")
        assert len(tc_programs("eth0", "ingress", netns=b.netns)) == 2
        assert a.send_udp(b.ip, UDP_PORT, 7) == 7
        time.sleep(0.2)
        assert _count(c) == 7  # the second dataplane's counter, on the new interface
        assert set(_attached_gauge(c).values()) == {"1.0"}
        # Attaching again where it is is a no-op (the interface is the one it is attached to).
        assert c.post("/polycube/v1/attach", json={"cube": "m", "port": "eth0"}).status_code == 200
        assert c.delete("/polycube/v1/packetcapture/cap").status_code == 204
    out = subprocess.run(["tcpdump", "-nr", str(tmp_path / "caps" / "cap.pcap")], capture_output=True, text=True,
                         timeout=60, check=True).stdout.splitlines()
    assert len(out) == 17, out  # before and after: one file, nothing lost
    log = (tmp_path / "serve.log").read_text()
    assert "interface eth0 disappeared; waiting for it" in log and "Traceback" not in log, log


def test_recreated_interface_is_noticed_by_a_repeated_attach(hosts, tmp_path):
    """Without waiting for the watcher: an attach to an interface that was deleted and created again in
    between re-attaches (it was a 200 no-op that left the monitor counting nothing)."""
    a, b = hosts
    with Daemon("--netns", b.netns, log_path=tmp_path / "serve.log") as d:
        c = d.client
        c.post("/polycube/v1/dynmon/m", json={"dataplane-config": counter_config()}).raise_for_status()
        c.post("/polycube/v1/attach", json={"cube": "m", "port": "eth0"}).raise_for_status()
        hosts.unlink()
        hosts.relink()
        assert c.post("/polycube/v1/attach", json={"cube": "m", "port": "eth0"}).status_code == 200
        assert _statuses(c) == {"m": "attached"}
        assert a.send_udp(b.ip, UDP_PORT, 5) == 5
        time.sleep(0.2)
        assert _count(c) == 5


def test_ready_monitor_follows_its_interface(hosts, tmp_path):
    """The same for a ready monitor (`/monitors/NAME`): stopped when its interface vanishes, started again
    on the new one."""
    _, b = hosts
    with Daemon("--netns", b.netns, log_path=tmp_path / "serve.log") as d:
        c = d.client
        r = c.post("/monitors/f1", json={"kind": "flows", "interface": "eth0"})
        assert r.status_code == 201, r.text
        assert _statuses(c) == {"f1": "attached"}
        hosts.unlink()
        wait_until(lambda: _statuses(c) == {"f1": "waiting for interface"}, "the monitor to notice")
        assert _attached_gauge(c) == {'pynetmon_attached{cube="f1",interface="eth0"}': "0.0"}
        hosts.relink()
        wait_until(lambda: _statuses(c) == {"f1": "attached"}, "the monitor to start again")
        assert len(tc_programs("eth0", "ingress", netns=b.netns)) == 1
        assert c.get("/monitors/f1").json()["monitor"]["interface"] == "eth0"
        assert c.delete("/monitors/f1").status_code == 204
        assert not tc_programs("eth0", "ingress", netns=b.netns)
    assert "Traceback" not in (tmp_path / "serve.log").read_text()


def test_restored_ready_monitor_waits_for_its_interface(hosts, tmp_path):
    _, b = hosts
    state = tmp_path / "state.json"
    args = ("--netns", b.netns, "--state-file", str(state))
    b.run("ip", "link", "add", "late0", "type", "veth", "peer", "name", "late1")
    with Daemon(*args, log_path=tmp_path / "1.log") as d:
        assert d.client.post("/monitors/f1", json={"kind": "flows", "interface": "late0"}).status_code == 201
    b.run("ip", "link", "del", "late0")
    with Daemon(*args, log_path=tmp_path / "2.log") as d:
        c = d.client
        assert _statuses(c) == {"f1": "waiting for interface"}
        r = c.get("/monitors/f1")
        assert r.status_code == 409 and "waiting for interface 'late0'" in r.json()["error"], r.text
        assert [m["interface"] for m in c.get("/monitors").json()] == ["late0"]
        assert _attached_gauge(c) == {'pynetmon_attached{cube="f1",interface="late0"}': "0.0"}
        b.run("ip", "link", "add", "late0", "type", "veth", "peer", "name", "late1")
        wait_until(lambda: _statuses(c) == {"f1": "attached"}, "the monitor to start")
        assert c.get("/monitors/f1").status_code == 200
        assert len(tc_programs("late0", "ingress", netns=b.netns)) == 1
    assert "Traceback" not in (tmp_path / "2.log").read_text()


def test_ddos_blocks_come_back_with_its_interface(hosts, tmp_path):
    """A ddos guard whose interface vanishes keeps the blocks its actions made, and puts them back on the
    new interface."""
    _, b = hosts
    with Daemon("--netns", b.netns, log_path=tmp_path / "serve.log") as d:
        c = d.client
        assert c.post("/monitors/g", json={"kind": "ddos", "interface": "eth0"}).status_code == 201
        assert c.post("/monitors/g/block", json={"cidr": "203.0.113.0/24", "seconds": 600}).status_code == 200
        hosts.unlink()
        wait_until(lambda: _statuses(c) == {"g": "waiting for interface"}, "the guard to notice")
        hosts.relink()
        wait_until(lambda: _statuses(c) == {"g": "attached"}, "the guard to start again")
        blocked = c.get("/monitors/g").json()["blocked"]
        assert [(x["source"], x["reason"]) for x in blocked] == [("203.0.113.0/24", "blocklist")]
        assert 550 < (blocked[0]["until_ns"] - time.monotonic_ns()) / 1e9 <= 600
        assert c.delete("/monitors/g").status_code == 204
    assert "Traceback" not in (tmp_path / "serve.log").read_text()

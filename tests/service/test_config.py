"""`pynetmon serve --config FILE`: a real daemon in a test host's namespace applies a declared config,
re-applies it as a diff when the file changes (written as kubelet writes a ConfigMap: a `..data` symlink
swapped to a new directory) or on SIGHUP, keeps the running set on a broken file, and follows interfaces
that appear and vanish. Real monitors, real programs on the hooks, real packets, exact counts."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import yaml

from pynetmon.link import tc_programs

from .daemon import Daemon, wait_until
from .dataplanes import UDP_PORT, broken_config, counter_config


class ConfigMapDir:
    """A directory written as kubelet writes a mounted ConfigMap: the data in a timestamped directory,
    `..data` a symlink to it, each key a symlink `KEY -> ..data/KEY`; an update writes a new directory,
    swaps `..data` atomically (rename of a new symlink over it) and removes the old directory."""

    def __init__(self, root: Path, files: dict[str, str]):
        self.root = root
        self._n = 0
        self._current: Path | None = None
        root.mkdir(parents=True, exist_ok=True)
        self.update(files)
        for key in files:
            os.symlink(f"..data/{key}", root / key)

    def update(self, files: dict[str, str]) -> None:
        self._n += 1
        data = self.root / f"..2026_12_05_00_00_00.{self._n:04d}"
        data.mkdir()
        for key, text in files.items():
            (data / key).write_text(text)
        tmp = self.root / "..data_tmp"
        os.symlink(data.name, tmp)
        os.rename(tmp, self.root / "..data")
        if self._current is not None:
            for f in self._current.iterdir():
                f.unlink()
            self._current.rmdir()
        self._current = data

    def path(self, key: str = "config.yaml") -> Path:
        return self.root / key


def _yaml(doc: dict) -> str:
    return yaml.safe_dump(doc, sort_keys=False)


def _reloaded(d: Daemon, after: int) -> dict:
    """The /config status once more than `after` reloads happened."""
    def check():
        status = d.client.get("/config").json()
        return status if status["reloads"] > after else None
    return wait_until(check, f"reload number {after + 1}\n{d.log()}", timeout=30)


def _settle() -> None:
    time.sleep(0.2)  # datagrams sent on a veth are processed by the peer's softirq right after sendto


def _flow_packets(d: Daemon, name: str, dport: int = UDP_PORT) -> int:
    """Ingress packets to `dport` that the flows monitor `name` counted."""
    snap = d.client.get(f"/monitors/{name}")
    assert snap.status_code == 200, snap.text
    return sum(f["packets"] for f in snap.json()["flows"] if f["direction"] == "ingress" and f["dport"] == dport)


def _udp_counter(d: Daemon, name: str) -> int:
    r = d.client.get(f"/polycube/v1/dynmon/{name}/metrics/ingress-metrics/udp_packets_total")
    assert r.status_code == 200, r.text
    return r.json()["value"][0]


def _metric(d: Daemon, name: str) -> float:
    for line in d.client.get("/metrics").text.splitlines():
        if line.startswith((name + " ", name + "{")):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"{name} not in /metrics")


def _start(b, path: Path, *args: str, env: dict | None = None, tmp_path: Path) -> Daemon:
    d = Daemon("--netns", b.netns, "--config", str(path), "--config-poll", "0.2", *args,
               env=env, log_path=tmp_path / "serve.log")
    d.client.get("/config")  # answered once start-up (the config applied) is over
    return d


def test_reload_by_diff_keeps_unchanged_monitors_and_their_counters(hosts, tmp_path):
    a, b = hosts
    dataplane = counter_config()
    config1 = {"monitors": {"keep": {"kind": "flows", "interfaces": ["eth0"]},
                            "gone": {"kind": "flows", "interfaces": ["eth0"], "options": {"aggregate": ["dport"]}},
                            "swap": {"kind": "flows", "interfaces": ["eth0"], "options": {"aggregate": ["dport"]}}},
               "dynmon": {"udp": {"interfaces": ["${TEST_IFACE}"], "dataplane-config": dataplane}}}
    cm = ConfigMapDir(tmp_path / "cm", {"config.yaml": _yaml(config1), "udp.json": json.dumps(dataplane)})
    d = _start(b, cm.path(), env={"TEST_IFACE": "eth0"}, tmp_path=tmp_path)
    try:
        status = d.client.get("/config").json()
        assert status["last-reload"]["success"] is True, status
        assert status["file"] == str(cm.path().absolute())
        assert sorted(c["name"] for c in status["cubes"]) == ["gone.eth0", "keep.eth0", "swap.eth0", "udp.eth0"]
        assert all(c["status"] == "attached" for c in status["cubes"]), status
        before = set(tc_programs("eth0", "ingress", netns=b.netns))
        assert len(before) == 4
        assert a.send_udp(b.ip, UDP_PORT, 10) == 10
        _settle()
        assert _flow_packets(d, "keep.eth0") == 10
        assert _udp_counter(d, "udp.eth0") == 10
        assert _metric(d, "pynetmon_config_last_reload_success") == 1

        # The ConfigMap changes: `gone` removed, `new` added, `swap` changed (an option fixed at start: a new
        # monitor), `keep` given a live option (`top`: updated in place), `udp` now read from its file (the
        # same dataplane: the same cube).
        config2 = {"monitors": {"keep": {**config1["monitors"]["keep"], "options": {"top": 20}},
                                "swap": {"kind": "flows", "interfaces": ["eth0"], "options": {"aggregate": ["proto"]}},
                                "new": {"kind": "flows", "interfaces": ["eth0"], "options": {"aggregate": ["src"]}}},
                   "dynmon": {"udp": {"interfaces": ["eth0"], "dataplane-config-file": "udp.json"}}}
        cm.update({"config.yaml": _yaml(config2), "udp.json": json.dumps(dataplane)})
        status = _reloaded(d, 1)
        assert status["last-reload"]["success"] is True, status
        assert status["last-reload"]["trigger"] == "file change"
        assert status["last-reload"]["changes"] == {"added": ["new.eth0"], "updated": ["keep.eth0"],
                                                    "replaced": ["swap.eth0"], "removed": ["gone.eth0"]}
        after = set(tc_programs("eth0", "ingress", netns=b.netns))
        assert len(after) == 4 and len(before & after) == 2, (before, after)  # keep and udp: the same programs
        assert sorted(m["name"] for m in d.client.get("/monitors").json()) == ["keep.eth0", "new.eth0", "swap.eth0"]
        assert d.client.get("/monitors/keep.eth0").json()["monitor"]["options"]["top"] == 20
        assert d.client.get("/monitors/gone.eth0").status_code == 404

        assert a.send_udp(b.ip, UDP_PORT, 5) == 5
        _settle()
        assert _flow_packets(d, "keep.eth0") == 15   # no reset
        assert _udp_counter(d, "udp.eth0") == 15     # no reset
        assert sum(f["packets"] for f in d.client.get("/monitors/swap.eth0").json()["flows"]
                   if f["direction"] == "ingress" and f["proto"] == "udp") == 5  # a new monitor since the reload
        assert sum(f["packets"] for f in d.client.get("/monitors/new.eth0").json()["flows"]
                   if f["direction"] == "ingress" and f["src"] == a.ip) == 5
        assert _metric(d, "pynetmon_config_reloads_total") == 2

        # Everything removed: nothing of ours stays on the hooks.
        cm.update({"config.yaml": "monitors: {}\n", "udp.json": "{}"})
        status = _reloaded(d, 2)
        assert status["last-reload"]["success"] is True and status["cubes"] == [], status
        assert tc_programs("eth0", "ingress", netns=b.netns) == []
        assert tc_programs("eth0", "egress", netns=b.netns) == []
    finally:
        assert d.stop() == 0, d.log()


def test_a_broken_config_leaves_the_running_set_untouched(hosts, tmp_path):
    a, b = hosts
    good = {"monitors": {"keep": {"kind": "flows", "interfaces": ["eth0"]}}}
    cm = ConfigMapDir(tmp_path / "cm", {"config.yaml": _yaml(good)})
    d = _start(b, cm.path(), tmp_path=tmp_path)
    try:
        programs = tc_programs("eth0", "ingress", netns=b.netns)
        a.send_udp(b.ip, UDP_PORT, 7)
        _settle()
        assert _flow_packets(d, "keep.eth0") == 7
        applied = d.client.get("/config").json()["applied-sha256"]

        broken = [
            ("monitors:\n  keep: {kind: flows, interfaces: [eth0]\n", "", "not valid YAML"),
            (_yaml({"monitors": {"keep": {"kind": "flows", "interfaces": ["eth0"], "options": {"max_entries": 1}}}}),
             "monitors.keep.options.max_entries", "greater than or equal to 16"),
            (_yaml({"monitors": {"keep": {"kind": "flows", "interfaces": ["${PYNETMON_TEST_UNSET}"]}}}),
             "monitors.keep.interfaces[0]", "unknown environment variable PYNETMON_TEST_UNSET"),
            (_yaml({"monitors": {"keep": good["monitors"]["keep"], "more": {"kind": "no_such_kind"}}}),
             "monitors.more.kind", "no monitor kind 'no_such_kind'"),
        ]
        for n, (text, path, words) in enumerate(broken):
            cm.update({"config.yaml": text})
            status = _reloaded(d, 1 + n)
            last = status["last-reload"]
            assert last["success"] is False, status
            assert words in last["error"], last
            assert any(p["path"] == path and words in p["reason"] for p in last["problems"]), last
            assert status["applied-sha256"] == applied and last["sha256"] != applied
            assert [c["name"] for c in status["cubes"]] == ["keep.eth0"]
            assert _metric(d, "pynetmon_config_last_reload_success") == 0
            assert _metric(d, "pynetmon_config_reloads_failed_total") == 1 + n
            assert tc_programs("eth0", "ingress", netns=b.netns) == programs
        assert "not applied" in d.log() and "PYNETMON_TEST_UNSET" in d.log()
        a.send_udp(b.ip, UDP_PORT, 3)
        _settle()
        assert _flow_packets(d, "keep.eth0") == 10  # still the same monitor, still counting

        # Fixed: applied again, nothing replaced (the same entry as before).
        cm.update({"config.yaml": _yaml(good)})
        status = _reloaded(d, 1 + len(broken))
        assert status["last-reload"]["success"] is True, status
        assert status["last-reload"]["changes"] == {"added": [], "updated": [], "replaced": [], "removed": []}
        assert _metric(d, "pynetmon_config_last_reload_success") == 1
        assert _metric(d, "pynetmon_config_last_reload_success_timestamp_seconds") == status["last-reload"]["time"]
        assert _flow_packets(d, "keep.eth0") == 10
    finally:
        assert d.stop() == 0, d.log()


def test_a_config_that_fails_to_apply_is_rolled_back(hosts, tmp_path):
    """Validation passes, the apply fails (Dynmon code that does not compile): the monitor created
    earlier in the same reload is deleted again, and the running set is what it was."""
    a, b = hosts
    good = {"monitors": {"keep": {"kind": "flows", "interfaces": ["eth0"]}}}
    path = tmp_path / "config.json"
    path.write_text(json.dumps(good))
    d = _start(b, path, tmp_path=tmp_path)
    try:
        programs = tc_programs("eth0", "ingress", netns=b.netns)
        bad = {"monitors": {"keep": good["monitors"]["keep"], "extra": {"kind": "flows", "interfaces": ["eth0"]}},
               "dynmon": {"bad": {"interfaces": ["eth0"], "dataplane-config": broken_config()}}}
        path.write_text(json.dumps(bad))
        status = _reloaded(d, 1)
        last = status["last-reload"]
        assert last["success"] is False, status
        assert any(p["path"] == "dynmon.bad.dataplane-config.code" and "ingress-path.code" in p["reason"]
                   and "undeclared_thing" in p["reason"] for p in last["problems"]), last
        assert [c["name"] for c in status["cubes"]] == ["keep.eth0"]
        assert sorted(m["name"] for m in d.client.get("/monitors").json()) == ["keep.eth0"]
        assert d.client.get("/polycube/v1/dynmon").json() == []
        assert tc_programs("eth0", "ingress", netns=b.netns) == programs
        a.send_udp(b.ip, UDP_PORT, 4)
        _settle()
        assert _flow_packets(d, "keep.eth0") == 4
    finally:
        assert d.stop() == 0, d.log()


def test_interfaces_matching_a_pattern_get_their_monitors_when_they_appear(hosts, tmp_path):
    _, b = hosts
    config = {"monitors": {"pods": {"kind": "flows", "interfaces": ["cfgv*"]}},
              "captures": {"cap": {"interfaces": ["cfgv*"], "filter": "udp"}}}
    path = tmp_path / "config.yaml"
    path.write_text(_yaml(config))
    d = _start(b, path, "--capture-dir", str(tmp_path / "captures"), tmp_path=tmp_path)
    try:
        assert d.client.get("/config").json()["cubes"] == []
        b.run("ip", "link", "add", "cfgv0", "type", "veth", "peer", "name", "cfgv1")
        b.run("ip", "link", "set", "cfgv0", "up")
        b.run("ip", "link", "set", "cfgv1", "up")
        wanted = ["cap.cfgv0", "cap.cfgv1", "pods.cfgv0", "pods.cfgv1"]
        wait_until(lambda: sorted(c["name"] for c in d.client.get("/config").json()["cubes"]) == wanted,
                   f"the cubes of the new veths\n{d.log()}")
        for ifname in ("cfgv0", "cfgv1"):
            wait_until(lambda ifname=ifname: len(tc_programs(ifname, "ingress", netns=b.netns)) == 2,
                       f"flows and the capture on {ifname}")
        assert all(c["status"] == "attached" for c in d.client.get("/config").json()["cubes"])
        # Packets on the new veth are counted: a frame sent into cfgv0 arrives at cfgv1's ingress.
        with b.enter():
            import socket
            s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
        try:
            s.bind(("cfgv0", 0))
            frame = b"\xff" * 6 + b"\x02\x00\x00\x00\x00\x01" + b"\x08\x06" + b"\x00" * 46  # broadcast ARP-type
            for _ in range(6):
                s.send(frame)
        finally:
            s.close()
        _settle()
        snap = d.client.get("/monitors/pods.cfgv1").json()
        assert snap["non_ip"] >= 6, snap  # not IP: counted apart from flows

        b.run("ip", "link", "del", "cfgv0")  # both ends go
        wait_until(lambda: d.client.get("/config").json()["cubes"] == [], f"the cubes deleted\n{d.log()}")
        assert d.client.get("/monitors").json() == []
        assert d.client.get("/polycube/v1/packetcapture").json() == []
    finally:
        assert d.stop() == 0, d.log()


def test_sighup_reloads_and_rest_cannot_change_declared_cubes(hosts, tmp_path):
    _, b = hosts
    state = tmp_path / "state.json"
    config = {"monitors": {"keep": {"kind": "flows", "interfaces": ["eth0"]}}}
    path = tmp_path / "config.yaml"
    path.write_text(_yaml(config))
    # Polling every hour: only SIGHUP reloads here.
    d = Daemon("--netns", b.netns, "--config", str(path), "--config-poll", "3600", "--state-file", str(state),
               log_path=tmp_path / "serve.log")
    try:
        for method, url, body in (("DELETE", "/monitors/keep.eth0", None),
                                  ("PUT", "/monitors/keep.eth0", {"options": {"top": 5}}),
                                  ("POST", "/polycube/v1/detach", {"cube": "keep.eth0", "port": "eth0"})):
            r = d.client.request(method, url, json=body)
            assert r.status_code == 409, (method, url, r.text)
            assert str(path) in r.json()["error"] and "monitors.keep" in r.json()["error"]
        # A REST-made cube: kept in the state file, untouched by reloads; the declared one is not saved.
        assert d.client.post("/monitors/mine", json={"kind": "flows", "interface": "eth0"}).status_code == 201
        saved = json.loads(state.read_text())["cubes"]
        assert [c["name"] for c in saved] == ["mine"]

        config["monitors"]["also"] = {"kind": "flows", "interfaces": ["eth0"]}
        path.write_text(_yaml(config))
        time.sleep(0.5)
        assert d.client.get("/config").json()["reloads"] == 1  # not polled
        d.proc.send_signal(signal.SIGHUP)
        status = _reloaded(d, 1)
        assert status["last-reload"]["trigger"] == "SIGHUP" and status["last-reload"]["success"], status
        assert sorted(m["name"] for m in d.client.get("/monitors").json()) == ["also.eth0", "keep.eth0", "mine"]
        assert d.client.get("/polycube/v1/cubes/also.eth0").json()["declared-in"] == f"{path} (monitors.also)"

        # An entry wanting the REST cube's name fails the reload, naming it; the REST cube stays.
        path.write_text(_yaml({"monitors": {"mine": {"kind": "tcp"}}}))
        d.proc.send_signal(signal.SIGHUP)
        status = _reloaded(d, 2)
        assert status["last-reload"]["success"] is False
        assert status["last-reload"]["problems"][0]["path"] == "monitors.mine"
        assert "made through the REST API" in status["last-reload"]["error"]
        assert sorted(m["name"] for m in d.client.get("/monitors").json()) == ["also.eth0", "keep.eth0", "mine"]
        assert d.client.get("/readyz").status_code == 200  # the earlier config runs
    finally:
        assert d.stop() == 0, d.log()
    assert [c["name"] for c in json.loads(state.read_text())["cubes"]] == ["mine"]


def test_a_broken_config_at_start_is_refused_naming_it(tmp_path):
    path = tmp_path / "config.yaml"
    path.write_text(_yaml({"monitors": {"x": {"kind": "flows", "interfaces": ["${PYNETMON_TEST_UNSET}"]}}}))
    env = {k: v for k, v in os.environ.items() if k != "PYNETMON_TEST_UNSET"}
    proc = subprocess.run([sys.executable, "-m", "pynetmon", "serve", "--listen", "127.0.0.1:0", "--config", str(path)], capture_output=True, text=True, timeout=60,
                          env=env, cwd=Path(__file__).resolve().parents[2], check=False)
    assert proc.returncode == 1
    assert f"--config {str(path)!r}: monitors.x.interfaces[0]: unknown environment variable PYNETMON_TEST_UNSET" \
        in proc.stderr, proc.stderr


def test_a_config_that_fails_to_apply_at_start_keeps_the_daemon_unready(hosts, tmp_path):
    """It validates, it cannot be applied (code that does not compile): the daemon serves, says why in
    GET /config and is not ready until a config has been applied."""
    _, b = hosts
    path = tmp_path / "config.yaml"
    path.write_text(_yaml({"dynmon": {"bad": {"interfaces": ["eth0"], "dataplane-config": broken_config()}}}))
    d = _start(b, path, tmp_path=tmp_path)
    try:
        status = d.client.get("/config").json()
        assert status["last-reload"]["success"] is False and status["applied-sha256"] is None, status
        assert status["last-reload"]["trigger"] == "start"
        ready = d.client.get("/readyz")
        assert ready.status_code == 503
        assert [c["name"] for c in ready.json()["checks"] if not c["ok"]] == ["config applied"], ready.json()
        assert tc_programs("eth0", "ingress", netns=b.netns) == []
        path.write_text(_yaml({"monitors": {"t": {"kind": "flows", "interfaces": ["eth0"]}}}))
        assert _reloaded(d, 1)["last-reload"]["success"] is True
        assert d.client.get("/readyz").status_code == 200
    finally:
        assert d.stop() == 0, d.log()


def test_dynmon_and_capture_changes_are_made_in_place(hosts, tmp_path):
    """A changed dataplane is swapped into the running Dynmon cube (the same cube; a dataplane that
    fails to load leaves the old one counting); a changed capture filter goes to the running capture,
    which keeps writing its file."""
    a, b = hosts
    captures = tmp_path / "captures"
    config = {"dynmon": {"udp": {"interfaces": ["eth0"], "dataplane-config": counter_config(UDP_PORT)}},
              "captures": {"cap": {"interfaces": ["eth0"], "filter": f"udp dst port {UDP_PORT}"}}}
    path = tmp_path / "config.yaml"
    path.write_text(_yaml(config))
    d = _start(b, path, "--capture-dir", str(captures), tmp_path=tmp_path)
    try:
        uuids = {n: d.client.get(f"/polycube/v1/cubes/{n}").json()["uuid"] for n in ("udp.eth0", "cap.eth0")}
        a.send_udp(b.ip, UDP_PORT, 3)
        _settle()
        assert _udp_counter(d, "udp.eth0") == 3

        config["dynmon"]["udp"]["dataplane-config"] = counter_config(UDP_PORT + 1)
        config["captures"]["cap"]["filter"] = f"udp dst port {UDP_PORT + 1}"
        path.write_text(_yaml(config))
        status = _reloaded(d, 1)
        assert status["last-reload"]["changes"] == {"added": [], "updated": ["udp.eth0", "cap.eth0"],
                                                    "replaced": [], "removed": []}, status
        assert {n: d.client.get(f"/polycube/v1/cubes/{n}").json()["uuid"] for n in uuids} == uuids
        a.send_udp(b.ip, UDP_PORT, 2)
        a.send_udp(b.ip, UDP_PORT + 1, 4)
        _settle()
        assert _udp_counter(d, "udp.eth0") == 4  # the new dataplane counts the new port
        stats = d.client.get("/polycube/v1/packetcapture/cap.eth0").json()["stats"]
        assert stats["matched"] == 3 + 4, stats  # 3 under the old filter, 4 under the new

        config["dynmon"]["udp"]["dataplane-config"] = broken_config()
        path.write_text(_yaml(config))
        status = _reloaded(d, 2)
        assert status["last-reload"]["success"] is False
        assert status["last-reload"]["problems"][0]["path"] == "dynmon.udp.dataplane-config.code"
        a.send_udp(b.ip, UDP_PORT + 1, 5)
        _settle()
        assert _udp_counter(d, "udp.eth0") == 9  # the old dataplane never stopped
        assert d.client.get("/polycube/v1/cubes/udp.eth0").json()["uuid"] == uuids["udp.eth0"]
    finally:
        assert d.stop() == 0, d.log()

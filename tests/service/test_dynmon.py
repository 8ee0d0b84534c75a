"""The daemon hosting dynmon monitors, driven by the CLI and by plain HTTP: real programs attached in a
test host's namespace, real packets, exact counts."""
from __future__ import annotations

import json
import time

import requests

from pynetmon.link import tc_programs

from .daemon import Daemon
from .dataplanes import UDP_PORT, broken_config, counter_config


def _settle():
    time.sleep(0.1)  # datagrams sent on a veth are processed by the peer's softirq right after sendto


def _write(tmp_path, name, doc) -> str:
    path = tmp_path / name
    path.write_text(json.dumps(doc))
    return str(path)


def test_cli_inject_extract_and_bad_reinject(host_daemon, tmp_path):
    d, a, b = host_daemon
    good = _write(tmp_path, "good.json", counter_config())
    out = d.cli("inject", "mon", "eth0", good)
    assert "Attaching 'mon' to eth0" in out.stdout
    assert len(tc_programs("eth0", "ingress", netns=b.netns)) == 1
    assert a.send_udp(b.ip, UDP_PORT, 100) == 100
    a.send_udp(b.ip, UDP_PORT + 1, 30)  # other port: not counted
    _settle()
    value = json.loads(d.cli("extract", "mon", "-t", "ingress", "-n", "udp_packets_total").stdout)
    assert value == 100  # the array map's one slot, printed bare as Polycube's extractor does

    # A config that does not compile: the CLI fails with clang's words, the old dataplane keeps counting.
    bad = d.cli("inject", "mon", "eth0", _write(tmp_path, "bad.json", broken_config()), check=False)
    assert bad.returncode == 1
    assert "undeclared_thing" in bad.stderr and "ingress-path.code" in bad.stderr, bad.stderr
    a.send_udp(b.ip, UDP_PORT, 50)
    _settle()
    everything = json.loads(d.cli("extract", "mon").stdout)
    assert "_links" not in everything
    counts = {m["name"]: m["value"] for m in everything["ingress-metrics"]}
    assert counts["udp_packets_total"] == [150]
    assert counts["flows"] == [{"key": counts["flows"][0]["key"], "value": {"packets": 150,
                                                                          "bytes": counts["flows"][0]["value"]["bytes"]}}]
    assert everything["egress-metrics"] == []

    # -s writes the file instead of printing.
    saved = tmp_path / "dump.json"
    d.cli("extract", "mon", "-t", "ingress", "-s", "-o", str(saved))
    assert json.loads(saved.read_text())[0]["value"] == [150]


def test_polycube_tools_request_sequence(host_daemon):
    """The exact requests Polycube's dynmon_injector.py and dynmon_extractor.py send (`requests` with a
    JSON string as body and no Content-Type, trailing and doubled slashes), and what they read back."""
    d, a, b = host_daemon
    endpoint = f"{d.url}/polycube/v1"
    name, dataplane = "monitor_0", counter_config()

    # dynmon_injector.py, first run: checkIfServiceExists → createInstance → attach_to_interface.
    r = requests.get(f"{endpoint}/dynmon/{name}", timeout=5)
    assert r.status_code == 404
    requests.post(f"{endpoint}/dynmon/{name}", json.dumps({"dataplane-config": dataplane}),
                  timeout=30).raise_for_status()
    requests.post(f"{endpoint}/attach", json.dumps({"cube": name, "port": "eth0"}), timeout=5).raise_for_status()

    # Second run: the cube exists, is attached to the same interface → injectNewDataplane only.
    cube = json.loads(requests.get(f"{endpoint}/dynmon/{name}", timeout=5).content)
    assert cube["parent"] == "eth0"
    requests.put(f"{endpoint}/dynmon/{name}/dataplane-config", json.dumps(dataplane), timeout=30).raise_for_status()

    a.send_udp(b.ip, UDP_PORT, 42)
    _settle()
    # dynmon_extractor.py: metrics//, metrics/ingress-metrics/, metrics/ingress-metrics/NAME/value
    res = json.loads(requests.get(f"{endpoint}/dynmon/{name}/metrics//", timeout=5).content)
    del res["_links"]
    assert {m["name"]: m["value"] for m in res["ingress-metrics"]}["udp_packets_total"] == [42]
    res = json.loads(requests.get(f"{endpoint}/dynmon/{name}/metrics/ingress-metrics/", timeout=5).content)
    assert [m["name"] for m in res] == ["udp_packets_total", "flows"]
    res = json.loads(requests.get(f"{endpoint}/dynmon/{name}/metrics/ingress-metrics/udp_packets_total/value",
                                  timeout=5).content)
    assert res[0] == 42
    text = requests.get(f"{endpoint}/dynmon/{name}/open-metrics", timeout=5).text
    assert 'udp_packets_total{proto="udp"} 42.0' in text and text.endswith("# EOF\n")

    # Moving it: detach + attach, as the injector does for another interface; then delete.
    requests.post(f"{endpoint}/detach", json.dumps({"cube": name, "port": "eth0"}), timeout=5).raise_for_status()
    assert tc_programs("eth0", "ingress", netns=b.netns) == []
    r = requests.post(f"{endpoint}/detach", json.dumps({"cube": name, "port": "eth0"}), timeout=5)
    assert r.status_code == 409 and "not attached" in r.json()["error"]
    r = requests.post(f"{endpoint}/attach", json.dumps({"cube": name, "port": "nosuch0"}), timeout=5)
    assert r.status_code == 404 and r.json()["problems"][0]["path"] == "port" and "nosuch0" in r.text
    requests.delete(f"{endpoint}/dynmon/{name}", timeout=5).raise_for_status()
    assert requests.get(f"{endpoint}/dynmon/{name}", timeout=5).status_code == 404


def test_rejects_do_not_touch_the_running_monitor(host_daemon):
    d, a, b = host_daemon
    c = d.client
    assert c.post("/polycube/v1/dynmon/m", json={"dataplane-config": counter_config()}).status_code == 201
    assert c.post("/polycube/v1/attach", json={"cube": "m", "port": "eth0"}).status_code == 200
    programs = tc_programs("eth0", "ingress", netns=b.netns)
    cases = [
        (broken_config(), 400, "code"),
        ({"ingress-path": {"name": "x", "code": "int x;", "metric-configs": [{"name": "m"}]}}, 422,
         "ingress-path.metric-configs[0].map-name"),
        ({"ingress-path": {"code": counter_config()["ingress-path"]["code"],
                           "metric-configs": [{"name": "m", "map-name": "NO_SUCH_MAP"}]}}, 400, "ingress-path"),
        ({"sideways-path": {}}, 422, "sideways-path"),
        ([1, 2], 422, ""),
        ({"ingress-path": {"code": "int x;", "metric-configs": [
            {"name": "m", "map-name": "M", "extraction-options": {"empty-on-read": "true"}}]}}, 422,
         "ingress-path.metric-configs[0].extraction-options.empty-on-read"),
    ]
    for body, status, path in cases:
        r = c.put("/polycube/v1/dynmon/m/dataplane-config", json=body)
        assert r.status_code == status, (body, r.text)
        assert any(p["path"].startswith(path) for p in r.json()["problems"]), r.json()
    # Creating a second cube with a bad config leaves no cube behind; a taken name is a 409.
    r = c.post("/polycube/v1/dynmon/m2", json={"dataplane-config": broken_config()})
    assert r.status_code == 400 and r.json()["problems"][0]["path"] == "dataplane-config.code"
    assert c.get("/polycube/v1/dynmon/m2").status_code == 404
    assert c.post("/polycube/v1/dynmon/m", json={}).status_code == 409
    assert tc_programs("eth0", "ingress", netns=b.netns) == programs
    a.send_udp(b.ip, UDP_PORT, 25)
    _settle()
    assert c.get("/polycube/v1/dynmon/m/metrics/ingress-metrics/udp_packets_total/value").json() == [25]
    r = c.get("/polycube/v1/dynmon/m/metrics/ingress-metrics/nope/value")
    assert r.status_code == 404 and "udp_packets_total" in r.json()["error"]


def test_sigterm_detaches_everything(hosts):
    _, b = hosts
    d = Daemon("--netns", b.netns)
    try:
        assert d.client.post("/polycube/v1/dynmon/m", json={"dataplane-config": counter_config(),
                                                            "type": "XDP_SKB"}).status_code == 201
        assert d.client.post("/polycube/v1/attach", json={"cube": "m", "port": "eth0"}).status_code == 200
        assert "xdp" in b.run("ip", "link", "show", "eth0").stdout
    finally:
        assert d.stop() == 0, d.log()
    assert "attached dynmon 'm' to eth0" in d.log() and "detached dynmon 'm' from eth0" in d.log()
    assert "xdp" not in b.run("ip", "link", "show", "eth0").stdout
    assert tc_programs("eth0", "ingress", netns=b.netns) == []


def test_state_file_restores_configs_and_attachments(hosts, tmp_path):
    a, b = hosts
    state = tmp_path / "state.json"
    d = Daemon("--netns", b.netns, "--state-file", str(state))
    try:
        d.client.post("/polycube/v1/dynmon/kept", json={"dataplane-config": counter_config()}).raise_for_status()
        d.client.post("/polycube/v1/attach", json={"cube": "kept", "port": "eth0"}).raise_for_status()
    finally:
        assert d.stop() == 0
    assert tc_programs("eth0", "ingress", netns=b.netns) == []
    assert json.loads(state.read_text())["cubes"][0]["port"] == "eth0"
    d = Daemon("--netns", b.netns, "--state-file", str(state))
    try:
        cube = d.client.get("/polycube/v1/dynmon/kept").json()
        assert cube["parent"] == "eth0"
        a.send_udp(b.ip, UDP_PORT, 7)
        _settle()
        assert d.client.get("/polycube/v1/dynmon/kept/metrics/ingress-metrics/udp_packets_total/value").json() == [7]
        d.client.delete("/polycube/v1/dynmon/kept").raise_for_status()
    finally:
        assert d.stop() == 0
    assert json.loads(state.read_text())["cubes"] == []

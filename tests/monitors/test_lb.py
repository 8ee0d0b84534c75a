"""lb: real HTTP servers in backend namespaces, a client in another, the balancer on the router between
them — connections spread by Maglev, health checks take failing backends out and bring them back,
connections keep their backend while the set changes, clients only ever see the VIP, bad options are
named, REST create/PUT, and closing leaves the interface as it was."""
from __future__ import annotations

import random
import socket
import time

import pytest
from service.daemon import Daemon

from pynetmon import monitors
from pynetmon.errors import ConfigError
from pynetmon.link import tc_programs
from pynetmon.testhosts import RouterHosts

from .lb_helpers import VIP, Client, NamedBackend, spread


@pytest.fixture
def net(bpf):
    """A client (hosts[0]) and four backends (hosts[1..4]) around the router; an HTTP server on each
    backend answering with its name (b1..b4)."""
    with RouterHosts(5) as r:
        r.port = random.randrange(20000, 30000)
        r.servers = [NamedBackend(h, r.port, f"b{i}") for i, h in enumerate(r.hosts[1:], 1)]
        try:
            yield r
        finally:
            for s in r.servers:
                s.stop()


def service(r, backends=(1, 2, 3), **extra) -> dict:
    return {"vip": VIP, "port": 80, "backends": [{"address": r.hosts[i].ip, "port": r.port} for i in backends], **extra}


def backends_by_name(r, snap: dict) -> dict[str, dict]:
    addr = {h.ip: f"b{i}" for i, h in enumerate(r.hosts[1:], 1)}
    return {addr[b["address"]]: b for b in snap["services"][0]["backends"]}


def test_300_connections_spread_over_three_backends_and_clients_see_the_vip(net):
    client = net.hosts[0]
    with monitors.open("lb", interface="h0", netns=net.router, services=[service(net)]) as m:
        assert tc_programs("h0", "ingress", netns=net.router) and tc_programs("h0", "egress", netns=net.router)
        c = Client(client)
        assert c.peer() == (VIP, 80)  # the reply's source was rewritten back to the VIP
        c.get()
        c.close()
        got = spread(client, 299)
        snap = m.snapshot()
    assert set(got) == {"b1", "b2", "b3"}
    for name, n in got.items():
        assert 0.20 * 299 <= n <= 0.47 * 299, got
    stats = backends_by_name(net, snap)
    # every connection counted once, on the backend that served it (the first one included)
    assert sum(b["connections"] for b in stats.values()) == 300
    for name, n in got.items():
        assert stats[name]["connections"] in (n, n + 1)
        assert stats[name]["healthy"] and stats[name]["packets"] > 0 and stats[name]["bytes"] > 0
    assert snap["packets"]["new_connections"] == 300 and snap["packets"]["no_backend"] == 0
    assert snap["packets"]["rewrite_failed"] == 0
    assert snap["packets"]["replies"] > 0 and snap["self"]["programs"].keys() == {"lb_ingress", "lb_egress"}
    # closed: nothing of ours left on the interface, and the VIP no longer answers
    assert tc_programs("h0", "ingress", netns=net.router) == [] and tc_programs("h0", "egress", netns=net.router) == []
    s = client.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.settimeout(1)
    with pytest.raises(OSError):
        s.connect((VIP, 80))
    s.close()


def _wait(predicate, timeout: float, what: str) -> float:
    start = time.monotonic()
    while not predicate():
        if time.monotonic() - start > timeout:
            raise AssertionError(f"{what} not after {timeout} s")
        time.sleep(0.05)
    return time.monotonic() - start


def test_failing_backend_out_within_interval_times_fall_back_after_rise(net):
    client = net.hosts[0]
    health = {"type": "http", "interval": 0.5, "timeout": 0.4, "fall": 2, "rise": 2}
    with monitors.open("lb", interface="h0", netns=net.router,
                       services=[service(net, health=health, on_failure="reset")]) as m:
        open_conns = [Client(client) for _ in range(24)]
        served = [c.get() for c in open_conns]
        assert "b1" in served
        net.servers[0].stop()  # b1 refuses new connections; the ones it accepted go on
        stopped = time.monotonic()

        def b1_down():
            return not backends_by_name(net, m.snapshot())["b1"]["healthy"]

        took = _wait(b1_down, 10, "b1 down")
        # fall=2 checks at interval 0.5 s, each at most 0.4 s: 1.4 s, plus scheduling on a loaded machine
        assert took <= 0.5 * 2 + 0.4 + 1.5, took
        before = backends_by_name(net, m.snapshot())["b1"]["connections"]
        got = spread(client, 60)  # every one answered: none went to b1, which would refuse it
        assert set(got) <= {"b2", "b3"} and sum(got.values()) == 60
        assert backends_by_name(net, m.snapshot())["b1"]["connections"] == before
        # on_failure=reset: b1's open connections were forgotten; their next segment reaches a healthy
        # backend, which resets them. The others keep their backend.
        for c, name in zip(open_conns, served, strict=True):
            if name == "b1":
                with pytest.raises((ConnectionResetError, BrokenPipeError)):
                    c.get()
            else:
                assert c.get() == name
            c.close()
        events = list(m.events(timeout=0.2))
        assert [(e["event"], e["backend"]) for e in events] == [("down", f"{net.hosts[1].ip}:{net.port}")]
        assert events[0]["reset_connections"] == served.count("b1")
        net.servers[0].start()
        back = _wait(lambda: not b1_down(), 10, "b1 up")
        assert back <= 0.5 * 2 + 0.4 + 1.5, back
        assert time.monotonic() - stopped >= 0.5 * 2  # it was out for at least `fall` intervals
        got = spread(client, 60)
        assert got.get("b1", 0) > 0, got
        snap = m.snapshot()
    assert snap["health_changes"] == {"up": 1, "down": 1, "reset_connections": served.count("b1")}


def test_long_lived_connections_keep_their_backend_while_backends_change(net):
    client = net.hosts[0]
    with monitors.open("lb", interface="h0", netns=net.router, services=[service(net)]) as m:
        conns = [Client(client) for _ in range(30)]
        served = [c.get() for c in conns]
        # a fourth backend takes about a quarter of the table: without the connection table some of the
        # 30 would now hash to b4 (which would reset them)
        m.update(services=[service(net, (1, 2, 3, 4))])
        assert [c.get() for c in conns] == served
        got = spread(client, 60)
        assert got.get("b4", 0) > 0 and set(got) == {"b1", "b2", "b3", "b4"}, got
        # b2 removed and b3 re-weighted: b2's connections go on, no new ones reach it
        m.update(services=[{**service(net, (1, 3, 4)), "backends": [
            {"address": net.hosts[1].ip, "port": net.port},
            {"address": net.hosts[3].ip, "port": net.port, "weight": 3},
            {"address": net.hosts[4].ip, "port": net.port}]}])
        assert [c.get() for c in conns] == served
        got = spread(client, 100)
        assert "b2" not in got and got["b3"] > got["b1"] and got["b3"] > got["b4"], got
        for c in conns:
            c.close()
        snap = m.snapshot()
    assert [b["weight"] for b in snap["services"][0]["backends"]] == [1, 3, 1]
    assert snap["packets"]["rewrite_failed"] == 0


def test_sticky_sends_every_connection_of_a_client_to_one_backend(net):
    client = net.hosts[0]
    with monitors.open("lb", interface="h0", netns=net.router, services=[service(net, sticky=True)]):
        got = spread(client, 40)
    assert len(got) == 1 and sum(got.values()) == 40


def test_icmp_and_tcp_checks(net):
    net.hosts[2].run("sysctl", "-qw", "net.ipv4.icmp_echo_ignore_all=1")  # b2 answers no ping
    net.servers[2].stop()  # b3 refuses connections
    svc = [service(net, (1, 2), health={"type": "icmp", "interval": 0.5, "timeout": 0.4}),
           {**service(net, (1, 3), health={"type": "tcp", "interval": 0.5, "timeout": 0.4}), "port": 81}]
    with monitors.open("lb", interface="h0", netns=net.router, services=svc) as m:
        snap = m.snapshot()
        assert spread(net.hosts[0], 10) == {"b1": 10}
        assert spread(net.hosts[0], 10, port=81) == {"b1": 10}
        fams = {f.name: f for f in m.families()}
    health = {(s["port"], b["address"]): b["healthy"] for s in snap["services"] for b in s["backends"]}
    assert health == {(80, net.hosts[1].ip): True, (80, net.hosts[2].ip): False,
                      (81, net.hosts[1].ip): True, (81, net.hosts[3].ip): False}
    failed = [b["checks"]["last_error"] for s in snap["services"] for b in s["backends"] if not b["healthy"]]
    assert failed[0] == "TimeoutError: no echo reply" and "ConnectionRefused" in failed[1]
    up = {(s.labels["service"], s.labels["backend"]): s.value for s in fams["lb_backend_up"].samples}
    assert sorted(up.values()) == [0, 0, 1, 1]
    assert {s.labels["service"] for s in fams["lb_backend_up"].samples} == {f"{VIP}:80/tcp", f"{VIP}:81/tcp"}


def test_no_healthy_backend_drops_and_counts(net):
    for s in net.servers[:2]:
        s.stop()
    with monitors.open("lb", interface="h0", netns=net.router, services=[service(net, (1, 2))]) as m:
        s = net.hosts[0].socket(socket.AF_INET, socket.SOCK_STREAM)
        s.settimeout(1.5)
        with pytest.raises(OSError):
            s.connect((VIP, 80))
        s.close()
        snap = m.snapshot()
    assert snap["services"][0]["healthy_backends"] == 0 and snap["packets"]["no_backend"] >= 1
    assert snap["packets"]["forwarded"] == 0


def test_bad_options_are_named():
    with pytest.raises(ConfigError) as err:
        monitors.create("lb", "eth0", None, {
            "table_size": 4096, "services": [
                {"vip": "192.0.2.1", "port": 80, "proto": "sctp",
                 "backends": [{"address": "10.0.0.1", "port": 0}, {"address": "x", "port": 80, "weight": -1}],
                 "health": {"type": "http", "path": "no slash", "interval": 0.01, "expect_status": 99}}]})
    assert set(dict(err.value.problems)) == {
        "options.services[0].proto", "options.services[0].backends[0].port", "options.services[0].backends[1].address",
        "options.services[0].backends[1].weight", "options.services[0].health.path",
        "options.services[0].health.interval", "options.services[0].health.expect_status"}
    with pytest.raises(ConfigError) as err:  # what one field alone cannot tell, named as precisely
        monitors.create("lb", "eth0", None, {"table_size": 4096, "max_services": 2, "services": [
            {"vip": "192.0.2.1", "port": 80, "backends": [{"address": "10.0.0.1", "port": 80},
                                                         {"address": "10.0.0.1", "port": 80},
                                                         {"address": "192.0.2.1", "port": 81}]},
            {"vip": "192.0.2.1", "port": 80, "health": {"timeout": 3, "interval": 2}},
            {"vip": "192.0.2.2", "port": 80}]})
    assert set(dict(err.value.problems)) == {
        "options.table_size", "options.services", "options.services[0].backends[1]",
        "options.services[0].backends[2].address", "options.services[1]", "options.services[1].health.timeout"}
    with pytest.raises(ConfigError) as err:
        monitors.create("lb", "eth0", None, {"services": {"vip": "192.0.2.1"}})
    assert dict(err.value.problems).keys() == {"options.services"}
    assert monitors.create("lb", "eth0").options.services == []  # none yet: a PUT adds them


def test_failed_update_leaves_the_tables_in_force(net, monkeypatch):
    """A kernel write failing halfway through an update (the second service's table here): the first
    service, already switched to its new table, is switched back; traffic goes on as before."""
    client = net.hosts[0]
    old = [service(net, (1,)), {**service(net, (2,)), "port": 81}]
    with monitors.open("lb", interface="h0", netns=net.router, services=old) as m:
        from pynetmon.monitors import lb
        real = lb.LbMonitor._write_service
        calls = []

        def failing(self, s, slot, ids):
            calls.append(s.port)
            if len(calls) == 2:
                raise OSError(28, "no space (injected)")
            return real(self, s, slot, ids)

        monkeypatch.setattr(lb.LbMonitor, "_write_service", failing)
        with pytest.raises(OSError, match="injected"):
            m.update(services=[service(net, (3,)), {**service(net, (4,)), "port": 81}])
        monkeypatch.undo()
        assert calls == [80, 81]
        assert spread(client, 10) == {"b1": 10} and spread(client, 10, port=81) == {"b2": 10}
        assert m.describe()["options"]["services"][0]["backends"][0]["address"] == net.hosts[1].ip
        m.update(services=[service(net, (3,)), {**service(net, (4,)), "port": 81}])  # and then it works
        assert spread(client, 10) == {"b3": 10} and spread(client, 10, port=81) == {"b4": 10}


def test_rest_create_and_put_through_the_service(net, tmp_path):
    client = net.hosts[0]
    state = tmp_path / "state.json"
    with Daemon("--netns", net.router, "--state-file", str(state)) as d:
        body = {"kind": "lb", "interface": "h0",
                "options": {"services": [service(net, (1, 2), health={"interval": 0.5, "timeout": 0.4})]}}
        r = d.client.post("/monitors/web", json=body)
        assert r.status_code == 201, r.text
        assert set(spread(client, 30)) == {"b1", "b2"}
        bad = d.client.put("/monitors/web", json={"options": {"services": [service(net, (1, 2), port=0)]}})
        assert bad.status_code == 400 and bad.json()["problems"][0]["path"] == "options.services[0].port"
        fixed = d.client.put("/monitors/web", json={"options": {"table_size": 7}})
        assert fixed.status_code == 400 and "options.table_size" in fixed.text
        assert set(spread(client, 30)) == {"b1", "b2"}  # the bad ones changed nothing
        conn = Client(client)
        first = conn.get()
        r = d.client.put("/monitors/web", json={"options": {"services": [service(net, (3, 4))]}})
        assert r.status_code == 200, r.text
        assert conn.get() == first  # kept its backend
        conn.close()
        assert set(spread(client, 30)) == {"b3", "b4"}
        snap = d.client.get("/monitors/web").json()
        assert [b["address"] for b in snap["services"][0]["backends"]] == [net.hosts[3].ip, net.hosts[4].ip]
        metrics = d.client.get("/metrics").text
        up = [line for line in metrics.splitlines() if line.startswith("lb_backend_up{")]
        assert len(up) == 2 and all(line.endswith((" 1.0", " 1")) for line in up), up
        assert all('monitor="web"' in line and f'service="{VIP}:80/tcp"' in line for line in up), up
    assert tc_programs("h0", "ingress", netns=net.router) == []  # the daemon stopped: nothing left attached
    with Daemon("--netns", net.router, "--state-file", str(state)) as d:  # restored with the updated services
        [restored] = d.client.get("/monitors").json()
        assert [b["address"] for b in restored["options"]["services"][0]["backends"]] == \
            [net.hosts[3].ip, net.hosts[4].ip]
        assert set(spread(client, 20)) == {"b3", "b4"}
        assert d.client.delete("/monitors/web").status_code == 204
    assert tc_programs("h0", "ingress", netns=net.router) == []


def _udp_namer(host, port: int, name: str) -> socket.socket:
    """A UDP socket on `host` answering every datagram with `name` (in a thread of its own)."""
    import threading
    s = host.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("0.0.0.0", port))

    def serve():
        while True:
            try:
                _, peer = s.recvfrom(2048)
                s.sendto(name.encode(), peer)
            except OSError:
                return
    threading.Thread(target=serve, daemon=True).start()
    return s


def test_udp_service_balances_flows_and_answers_from_the_vip(net):
    port = net.port + 1
    servers = [_udp_namer(net.hosts[i], port, f"b{i}") for i in (1, 2, 3)]
    svc = {"vip": VIP, "port": 53, "proto": "udp", "health": {"type": "none"},
           "backends": [{"address": net.hosts[i].ip, "port": port} for i in (1, 2, 3)]}
    got: dict[str, int] = {}
    with monitors.open("lb", interface="h0", netns=net.router, services=[svc]) as m:
        for i in range(60):  # one flow per socket, each from a port of its own (UDP has no SYN: a flow on a
            c = net.hosts[0].socket(socket.AF_INET, socket.SOCK_DGRAM)  # reused 5-tuple is the old one)
            c.bind(("0.0.0.0", 40000 + i))
            c.settimeout(3)
            c.sendto(b"q", (VIP, 53))
            reply, src = c.recvfrom(2048)
            c.sendto(b"q", (VIP, 53))  # the second datagram of the flow: the same backend
            again, _ = c.recvfrom(2048)
            c.close()
            assert src == (VIP, 53) and again == reply
            got[reply.decode()] = got.get(reply.decode(), 0) + 1
        snap = m.snapshot()
    for s in servers:
        s.close()
    assert set(got) == {"b1", "b2", "b3"}, got
    stats = backends_by_name(net, snap)
    assert {name: stats[name]["connections"] for name in got} == got  # one connection per flow
    assert sum(b["packets"] for b in stats.values()) == 60 * 4 and snap["packets"]["rewrite_failed"] == 0


def test_cli_runs_the_balancer(net):
    import json

    from .helpers import cli, finish_json, start_cli, wait_started
    svc = json.dumps([{**service(net, (1, 2)), "port": 81}])
    b3, b4 = (f"{net.hosts[i].ip}:{net.port}" for i in (3, 4))
    proc = start_cli("monitor", "lb", "-i", "h0", "--netns", net.router, "--duration", "3", "--json",
                     "--set", f"services={svc}", "--vip", f"{VIP}:80", f"{b3},{b4}*3")
    wait_started(proc)
    got = spread(net.hosts[0], 20, port=81)
    via_flag = spread(net.hosts[0], 40)
    snap = finish_json(proc)
    assert set(got) <= {"b1", "b2"} and sum(got.values()) == 20
    assert set(via_flag) <= {"b3", "b4"} and via_flag.get("b4", 0) > via_flag.get("b3", 0), via_flag
    assert [sum(b["connections"] for b in s["backends"]) for s in snap["services"]] == [20, 40]
    assert [b["weight"] for b in snap["services"][1]["backends"]] == [1, 3]
    bad = cli("monitor", "lb", "-i", "h0", "--netns", net.router, "--vip", "192.0.2.1", "10.0.0.1:80")
    assert bad.returncode != 0 and "--vip 192.0.2.1 10.0.0.1:80" in bad.stderr and "ADDRESS:PORT" in bad.stderr
    assert tc_programs("h0", "ingress", netns=net.router) == []


def test_health_score_scales_the_weight_of_a_flapping_backend(net):
    net.servers[0].stop()
    net.servers[0] = NamedBackend(net.hosts[1], net.port, "b1", flaky=True)  # every other check fails
    health = {"type": "http", "path": "/health", "interval": 0.5, "timeout": 0.45, "fall": 3, "rise": 1,
              "score_window": 4}
    with monitors.open("lb", interface="h0", netns=net.router, services=[service(net, health=health)]) as m:
        _wait(lambda: net.servers[0].health_calls >= 6, 10, "six checks of b1")
        time.sleep(0.1)
        snap = m.snapshot()
        got = spread(net.hosts[0], 300)
    stats = backends_by_name(net, snap)
    assert stats["b1"]["healthy"] and stats["b1"]["score"] == 0.5  # never `fall` failures in a row
    assert stats["b2"]["score"] == stats["b3"]["score"] == 1.0
    # weights 0.5 : 1 : 1 → b1 gets a fifth (60 of 300; unscaled it would get 100): below 80 in all but
    # about 0.2% of runs, and above it in all but about 1% had the score no effect
    assert got["b1"] < 80 and sum(got.values()) == 300, got


def test_a_service_replaced_in_one_update_reuses_its_slot(net):
    """max_services=1: the new service must take the slot of the one it replaces, writing the half of
    it the old service does not read until its entry is gone."""
    client = net.hosts[0]
    with monitors.open("lb", interface="h0", netns=net.router, max_services=1, services=[service(net, (1,))]) as m:
        assert spread(client, 5) == {"b1": 5}
        for port, backend in ((81, 2), (80, 3), (81, 4)):
            m.update(services=[{**service(net, (backend,)), "port": port}])
            assert spread(client, 5, port=port) == {f"b{backend}": 5}
            s = client.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.settimeout(0.5)
            with pytest.raises(OSError):  # the service replaced is gone: its port is not balanced
                s.connect((VIP, 161 - port))
            s.close()
        with pytest.raises(ConfigError) as err:
            m.update(services=[service(net, (1,)), {**service(net, (2,)), "port": 81}])
        assert dict(err.value.problems).keys() == {"options.services"}
        assert spread(client, 5, port=81) == {"b4": 5}

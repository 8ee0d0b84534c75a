"""Files a real daemon writes: capture files only inside --capture-dir and never through a symbolic link,
pcaps of restored captures continued (not truncated) across a restart, cubes whose interface is missing
kept and attached when it appears, the state file's and the token file's checks."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest

from pynetmon.errors import ConfigError
from pynetmon.link import tc_programs
from pynetmon.service.config import read_token_file

from .daemon import REPO, Daemon, wait_until
from .dataplanes import UDP_PORT, counter_config


def _tcpdump(path) -> list[str]:
    proc = subprocess.run(["tcpdump", "-nr", str(path)], capture_output=True, timeout=60, check=False)
    assert proc.returncode == 0, proc.stderr.decode()
    return proc.stdout.decode().splitlines()



def test_dump_stays_inside_the_capture_dir_and_never_follows_links(bpf, tmp_path):
    caps, outside = tmp_path / "caps", tmp_path / "outside"
    caps.mkdir(mode=0o700)
    outside.mkdir()
    precious = tmp_path / "precious"
    precious.write_bytes(b"precious")
    (caps / "link.pcap").symlink_to(precious)
    (caps / "sub").symlink_to(outside, target_is_directory=True)
    (caps / "old.pcap").write_bytes(b"an older capture")
    with Daemon("--capture-dir", str(caps), log_path=tmp_path / "serve.log") as d:
        c = d.client
        for dump in [".", "", "..", "../x", "a/../../x", "/etc/evil", "/var/tmp/x", "/tmp/../etc/x", "sub/x", "link",
                     "link.pcap"]:
            r = c.post("/polycube/v1/packetcapture/esc", json={"capture": "ingress", "dump": dump})
            assert r.status_code == 400, (dump, r.text)
            assert r.json()["problems"][0]["path"] == "dump", (dump, r.json())
            assert c.get("/polycube/v1/packetcapture/esc").status_code == 404
        assert precious.read_bytes() == b"precious"
        assert list(outside.iterdir()) == []
        assert sorted(p.name for p in tmp_path.iterdir()) == ["caps", "outside", "precious", "serve.log"]
        # A regular file of the same name is replaced, as tcpdump -w does.
        r = c.post("/polycube/v1/packetcapture/old", json={"capture": "ingress", "dump": "old"})
        assert r.status_code == 201, r.text
        assert r.json()["dump-file"] == str(caps / "old.pcap")
        assert _tcpdump(caps / "old.pcap") == []
        # Directories inside are created (and a PATCH is held to the same rules).
        assert c.patch("/polycube/v1/packetcapture/old", json={"dump": "day1/old"}).status_code == 200
        assert (caps / "day1").is_dir() and not (caps / "day1").is_symlink()
        r = c.patch("/polycube/v1/packetcapture/old", json={"dump": "../escape"})
        assert r.status_code == 400 and c.get("/polycube/v1/packetcapture/old").json()["dump-file"] == str(caps / "day1/old.pcap")


def test_restart_continues_the_pcaps_of_restored_captures(hosts, tmp_path):
    a, b = hosts
    state = tmp_path / "state.json"
    args = ("--netns", b.netns, "--state-file", str(state), "--capture-dir", str(tmp_path / "caps"))
    with Daemon(*args, log_path=tmp_path / "1.log") as d:
        d.client.post("/polycube/v1/packetcapture/keep", json={"capture": "ingress", "dump": "keep",
                                                               "filter": f"udp port {UDP_PORT}"}).raise_for_status()
        d.client.post("/polycube/v1/attach", json={"cube": "keep", "port": "eth0"}).raise_for_status()
        assert a.send_udp(b.ip, UDP_PORT, 5) == 5
        time.sleep(0.3)
        # Detached and attached again: the same capture goes on in the same file.
        d.client.post("/polycube/v1/detach", json={"cube": "keep", "port": "eth0"}).raise_for_status()
        d.client.post("/polycube/v1/attach", json={"cube": "keep", "port": "eth0"}).raise_for_status()
        assert a.send_udp(b.ip, UDP_PORT, 2) == 2
        time.sleep(0.3)
    assert len(_tcpdump(tmp_path / "caps" / "keep.pcap")) == 7
    with Daemon(*args, log_path=tmp_path / "2.log") as d:
        assert d.client.get("/polycube/v1/packetcapture/keep").json()["status"] == "attached"
        assert a.send_udp(b.ip, UDP_PORT, 3) == 3
        time.sleep(0.3)
    lines = _tcpdump(tmp_path / "caps" / "keep.pcap")
    assert len(lines) == 10 and all(f"> {b.ip}.{UDP_PORT}: UDP" in line for line in lines), lines


def test_restored_cube_waits_for_its_interface(hosts, tmp_path):
    _, b = hosts
    state = tmp_path / "state.json"
    args = ("--netns", b.netns, "--state-file", str(state))
    b.run("ip", "link", "add", "late0", "type", "veth", "peer", "name", "late1")
    with Daemon(*args, log_path=tmp_path / "1.log") as d:
        d.client.post("/polycube/v1/dynmon/m", json={"dataplane-config": counter_config()}).raise_for_status()
        d.client.post("/polycube/v1/attach", json={"cube": "m", "port": "late0"}).raise_for_status()
    b.run("ip", "link", "del", "late0")
    with Daemon(*args, log_path=tmp_path / "2.log") as d:
        info = d.client.get("/polycube/v1/dynmon/m").json()
        assert (info["status"], info["parent"]) == ("waiting for interface", "late0")
        assert [(c["name"], c["port"]) for c in json.loads(state.read_text())["cubes"]] == [("m", "late0")]
        text = d.client.get("/metrics", headers={"Accept": "text/plain"}).text
        assert 'pynetmon_attached{cube="m",interface="late0"} 0.0' in text, text
        b.run("ip", "link", "add", "late0", "type", "veth", "peer", "name", "late1")
        wait_until(lambda: d.client.get("/polycube/v1/dynmon/m").json()["status"] == "attached", "the re-attach")
        assert len(tc_programs("late0", "ingress", netns=b.netns)) == 1
        text = d.client.get("/metrics", headers={"Accept": "text/plain"}).text
        assert 'pynetmon_attached{cube="m",interface="late0"} 1.0' in text


def test_corrupt_state_file_is_reported_and_kept(tmp_path):
    state = tmp_path / "state.json"
    for text, words in [('{"version": 1, "cubes": [', "is not JSON"), ('{"version": 7, "cubes": []}',
                                                                         "is not a pynetmon state file")]:
        state.write_text(text)
        proc = subprocess.run([sys.executable, "-m", "pynetmon", "serve", "--listen", "127.0.0.1:0",
                               "--state-file", str(state)], cwd=REPO, capture_output=True, text=True, timeout=60,
                              check=False)
        assert proc.returncode == 1, proc.stderr
        assert "--state-file" in proc.stderr and str(state) in proc.stderr and words in proc.stderr, proc.stderr
        assert state.read_text() == text  # never replaced
    assert sorted(p.name for p in tmp_path.iterdir()) == ["state.json"]  # no temporary left behind


def test_token_file_must_belong_to_the_daemon_user_and_be_private(tmp_path):
    path = tmp_path / "token"
    path.write_text("a-token-of-enough-length-0123\n")
    for mode in (0o640, 0o604, 0o620, 0o660):
        path.chmod(mode)
        with pytest.raises(ConfigError, match=f"has mode {mode:04o}: group or others may access it; chmod 600"):
            read_token_file(path)
    path.chmod(0o600)
    os.chown(path, 65534, 65534)
    with pytest.raises(ConfigError, match="belongs to uid 65534, not to the user the daemon runs as"):
        read_token_file(path)
    os.chown(path, os.geteuid(), os.getegid())
    assert read_token_file(path) == "a-token-of-enough-length-0123"
    path.chmod(0o640)
    proc = subprocess.run([sys.executable, "-m", "pynetmon", "serve", "--token-file", str(path)], cwd=REPO,
                          capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 1 and "--token-file" in proc.stderr and "chmod 600" in proc.stderr, proc.stderr

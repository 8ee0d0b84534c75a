"""The test hosts and the `hosts` fixture: two namespaces that can talk, removed afterwards, also when the
test using them fails."""
from __future__ import annotations

import ipaddress
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from pynetmon.testhosts import TestHosts

REPO = Path(__file__).resolve().parents[2]


def namespaces() -> set[str]:
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True).stdout
    return {line.split()[0] for line in out.splitlines() if line.strip()}


def test_hosts_are_two_namespaces_that_talk(hosts):
    a, b = hosts
    assert {a.netns, b.netns} <= namespaces() and a.netns != b.netns
    net = ipaddress.ip_network("198.18.0.0/15")
    assert ipaddress.ip_address(a.ip) in net and ipaddress.ip_address(b.ip) in net
    assert a.ifname == b.ifname == "eth0" and a.mac != b.mac
    assert "1 received" in a.run("ping", "-c1", "-W5", b.ip).stdout
    with b.enter():  # the calling thread (and what it starts) sees b's interfaces
        shown = subprocess.run(["ip", "-br", "link", "show", "eth0"], capture_output=True, text=True,
                               check=False).stdout
    assert b.mac in shown


def test_hosts_are_removed_when_the_block_raises(bpf):
    with pytest.raises(RuntimeError), TestHosts() as pair:
        names = {pair.a.netns, pair.b.netns}
        assert names <= namespaces()
        raise RuntimeError("the test failed")
    assert not names & namespaces()


INNER = textwrap.dedent("""
    import os

    def test_fails_while_holding_hosts(hosts):
        a, b = hosts
        with open(os.environ["PNM_RECORD"], "w") as f:
            f.write(a.netns + " " + b.netns)
        assert False, "this test fails on purpose"
""")


def test_hosts_fixture_cleans_up_after_a_failing_test(bpf, tmp_path):
    (tmp_path / "test_inner.py").write_text(INNER)
    record = tmp_path / "names"
    env = {**os.environ, "PNM_RECORD": str(record), "PYTHONPATH": f"{REPO}{os.pathsep}{REPO / 'tests'}"}
    # The repository's conftest (which defines `hosts`) is loaded as a plugin into a separate pytest run.
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "conftest", "-p", "no:cacheprovider",
                           "--rootdir", str(tmp_path), str(tmp_path / "test_inner.py")],
                          capture_output=True, text=True, cwd=tmp_path, env=env, timeout=120, check=False)
    assert proc.returncode == 1 and "1 failed" in proc.stdout, proc.stdout + proc.stderr
    names = set(record.read_text().split())
    assert len(names) == 2
    assert not names & namespaces(), f"namespaces left behind: {names & namespaces()}"

"""The declarative config's pure parts (pynetmon/service/declared.py): parsing, `${VAR}` substitution,
validation with JSON paths, pattern expansion and cube names. No kernel needed."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pynetmon.errors import ConfigError
from pynetmon.service import declared
from pynetmon.service.models import NAME_RE


def _load(tmp_path: Path, text: str, env: dict | None = None, **files: str) -> declared.LoadedConfig:
    path = tmp_path / "config.yaml"
    path.write_text(text)
    for name, content in files.items():
        (tmp_path / name).write_text(content)
    return declared.load(path, env or {})


def _problems(tmp_path: Path, text: str, env: dict | None = None) -> list[tuple[str, str]]:
    with pytest.raises(ConfigError) as info:
        _load(tmp_path, text, env)
    return info.value.problems


def test_substitution_replaces_only_inside_strings():
    env = {"NODE_NAME": "node-a", "IF": "eth0", "EVIL": "x\nmonitors: {}\n$(reboot)"}
    doc = {"a": "${NODE_NAME}/${IF}", "b": ["${MISSING:-dflt}", "$${NODE_NAME}", 5, True],
           "c": {"d": "${EVIL}"}, "e": "${MISSING:-}"}
    assert declared.substitute(doc, env) == {"a": "node-a/eth0", "b": ["dflt", "${NODE_NAME}", 5, True],
                                             "c": {"d": env["EVIL"]}, "e": ""}


def test_unknown_and_malformed_variables_are_named_with_their_path():
    with pytest.raises(ConfigError) as info:
        declared.substitute({"monitors": {"x": {"interfaces": ["eth0", "${NODE_IFACE}"]}}}, {})
    assert info.value.problems[0][0] == "monitors.x.interfaces[1]"
    assert "unknown environment variable NODE_IFACE" in info.value.problems[0][1]
    with pytest.raises(ConfigError, match=r"\$\{1BAD\} is not a variable reference"):
        declared.substitute({"a": "${1BAD}"}, {})


def test_a_valid_config_expands_names_and_patterns(tmp_path):
    dataplane = {"ingress-path": {"name": "n", "code": "int x;", "metric-configs": []}}
    loaded = _load(tmp_path, """
monitors:
  flows: {kind: flows, interfaces: ["eth*", "${EXTRA}", eth0], options: {max_entries: 1024}}
  tcp: {kind: tcp}
dynmon:
  dp: {type: XDP_SKB, interfaces: [wlan0], dataplane-config-file: dp.json}
captures:
  cap: {interfaces: ["veth?"], capture: off, snaplen: 96, dir: traces}
""", {"EXTRA": "bond0"}, **{"dp.json": json.dumps(dataplane)})
    assert loaded.files == (tmp_path / "dp.json",)
    desired = declared.expand(loaded, ["lo", "eth0", "eth1", "veth1", "veth10"])
    assert sorted(desired) == ["cap.veth1", "dp.wlan0", "flows.bond0", "flows.eth0", "flows.eth1", "tcp"]
    assert desired["flows.eth1"].body == {"kind": "flows", "interface": "eth1", "options": {"max_entries": 1024}}
    assert desired["tcp"].interface is None
    assert desired["dp.wlan0"].body == {"type": "XDP_SKB", "dataplane-config": dataplane}
    assert desired["dp.wlan0"].config_field == "dataplane-config-file"
    assert desired["cap.veth1"].body == {"capture": "off", "filter": "all", "networkmode": False, "snaplen": 96,
                                         "dump": "traces/cap.veth1"}
    # The same entry read again is the same cube; a changed option is another.
    again = declared.expand(_load(tmp_path, (tmp_path / "config.yaml").read_text(), {"EXTRA": "bond0"}), ["eth1"])
    assert again["flows.eth1"].key == desired["flows.eth1"].key
    changed = _load(tmp_path, "monitors:\n  flows: {kind: flows, interfaces: [eth1], options: {max_entries: 2048}}\n")
    assert declared.expand(changed, [])["flows.eth1"].key != desired["flows.eth1"].key


def test_every_problem_is_named_by_its_path(tmp_path):
    problems = dict(_problems(tmp_path, """
monitors:
  flows: {kind: flows, interfaces: [eth0], options: {max_entries: 1, bogus: 2}}
  nokind: {kind: nope, interfaces: [eth0]}
  noif: {kind: flows}
"""))
    assert "greater than or equal to 16" in problems["monitors.flows.options.max_entries"]
    assert problems["monitors.flows.options.bogus"] == "unknown field"
    assert "no monitor kind 'nope'" in problems["monitors.nokind.kind"]
    assert "needs interfaces" in problems["monitors.noif.interfaces"]


@pytest.mark.parametrize(("text", "path", "words"), [
    ("monitors: [1, 2]\n", "monitors", "must be a mapping"),
    ("monitors:\n  bad.name: {kind: tcp}\n", "monitors.bad.name", "not a valid entry name"),
    ("monitors:\n  x: {kind: tcp}\ncaptures:\n  x: {interfaces: [eth0]}\n", "captures.x", "also used in monitors.x"),
    ("dynmon:\n  d: {interfaces: [eth0]}\n", "dynmon.d", "exactly one of"),
    ("dynmon:\n  d: {interfaces: [eth0], dataplane-config: {ingress-path: {name: 5}}}\n",
     "dynmon.d.dataplane-config.ingress-path.name", "string"),
    ("dynmon:\n  d: {interfaces: [eth0], dataplane-config-file: missing.json}\n", "dynmon.d.dataplane-config-file",
     "cannot read"),
    ("monitors:\n  x: {kind: flows, interfaces: [\"eth0/1\"]}\n", "monitors.x.interfaces[0]", "pattern"),
    ("monitors:\n  x: {kind: flows, interfaces: [eth*], netns: other}\n", "monitors.x.interfaces", "name the interfaces"),
    ("version: 2\n", "version", "1"),
    ("monitors:\n  x: {kind: tcp, options: {since: 2026-01-01}}\n", "", "only JSON values"),
    ("a: &x [1]\n", "", "anchors (&name) are not supported"),
    ("a: [1]\nb: *x\n", "", "aliases (*name) are not supported"),
    ("monitors:\n  t: {kind: flows, interfaces: [eth0], intrefaces: [eth1]}\n", "monitors.t.intrefaces", "unknown field"),
    ("monitors:\n  x: {kind: tcp}\n  x: {kind: drops}\n", "", "duplicate key 'x' at line 3"),
    ("monitors:\n  x: {kind: tcp\n", "", "not valid YAML or JSON"),
    ("- 1\n", "", "must be a mapping"),
])
def test_bad_files(tmp_path, text, path, words):
    problems = _problems(tmp_path, text)
    assert any(p == path and words in r for p, r in problems), problems


def test_size_and_file_type_are_bounded(tmp_path):
    big = tmp_path / "big.yaml"
    big.write_bytes(b"#" * (declared.MAX_FILE_BYTES + 1))
    with pytest.raises(ConfigError, match="larger than 4 MiB"):
        declared.load(big, {})
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)  # opening it for reading must not block the daemon until a writer comes
    for path in (tmp_path, fifo):
        with pytest.raises(ConfigError, match="not a regular file"):
            declared.load(path, {})


def test_json_is_accepted(tmp_path):
    loaded = _load(tmp_path, json.dumps({"monitors": {"t": {"kind": "tcp"}}}))
    assert list(declared.expand(loaded, [])) == ["t"]


def test_patterns_match_present_interfaces_only():
    assert declared.matching(["eth*", "eth1", "lo"], ["lo", "eth1", "eth2"]) == ["eth1", "eth2", "lo"]
    assert declared.matching(["veth[0-3]"], ["veth2", "veth7"]) == ["veth2"]
    assert declared.matching(None, ["eth0"]) == [None]


interfaces = st.text(st.characters(min_codepoint=33, max_codepoint=0x24F, blacklist_characters="/:"),
                     min_size=1, max_size=15)
entries = st.from_regex(declared.ENTRY_RE, fullmatch=True)


@given(entries, interfaces, interfaces)
def test_cube_names_are_valid_and_distinct(entry, one, other):
    a, b = declared.cube_name(entry, one), declared.cube_name(entry, other)
    assert NAME_RE.match(a) and len(a) <= 64
    assert (a == b) == (one == other)


def test_check_config_prints_the_cubes_or_every_problem(tmp_path):
    """`pynetmon serve --config FILE --check-config`, as an operator (or CI) runs it before shipping a file."""
    good = tmp_path / "good.yaml"
    good.write_text("monitors:\n  f: {kind: flows, interfaces: [\"l?\", nosuch0]}\n  t: {kind: tcp}\n")
    run = [sys.executable, "-m", "pynetmon", "serve", "--check-config", "--config"]
    proc = subprocess.run([*run, str(good)], capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 0, proc.stderr
    cubes = [json.loads(line) for line in proc.stdout.splitlines()]
    assert cubes == [
        {"name": "f.lo", "service": "monitor", "entry": "monitors.f", "interface": "lo", "present": True},
        {"name": "f.nosuch0", "service": "monitor", "entry": "monitors.f", "interface": "nosuch0", "present": False},
        {"name": "t", "service": "monitor", "entry": "monitors.t", "interface": None, "present": True}]
    assert "valid (sha256 " in proc.stderr
    bad = tmp_path / "bad.yaml"
    bad.write_text("monitors:\n  f: {kind: flows, interfaces: [eth0], options: {top: -1}}\n  g: {kind: nope}\n")
    proc = subprocess.run([*run, str(bad)], capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 1 and proc.stdout == ""
    assert "monitors.f.options.top:" in proc.stderr and "monitors.g.kind: no monitor kind 'nope'" in proc.stderr

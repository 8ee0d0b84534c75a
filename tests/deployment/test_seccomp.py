"""deploy/container/seccomp.json (docs/deploy.md, "Container"): `bpf` and `perf_event_open` allowed by
CAP_BPF and CAP_PERFMON, denied by no rule, and everything else the runtime's default profile said."""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path

CONTAINER = Path(__file__).resolve().parents[2] / "deploy" / "container"


def _generator():
    spec = importlib.util.spec_from_file_location("seccomp_profile", CONTAINER / "seccomp.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_bpf_and_perf_event_open_follow_their_capabilities():
    profile = json.loads((CONTAINER / "seccomp.json").read_text())
    assert profile["defaultAction"] == "SCMP_ACT_ERRNO"
    for name, cap in (("bpf", "CAP_BPF"), ("perf_event_open", "CAP_PERFMON")):
        rules = [r for r in profile["syscalls"] if name in r["names"]]
        assert all(r["action"] == "SCMP_ACT_ALLOW" for r in rules), rules
        assert {"names": [name], "action": "SCMP_ACT_ALLOW", "args": [], "comment": f"pynetmon: {cap}",
                "includes": {"caps": [cap]}, "excludes": {}} in rules
        assert all(r.get("includes", {}).get("caps") for r in rules), "never allowed without a capability"


def test_the_generator_keeps_the_rest_of_the_default():
    default = {"defaultAction": "SCMP_ACT_ERRNO", "syscalls": [
        {"names": ["read", "write"], "action": "SCMP_ACT_ALLOW"},
        {"names": ["bpf", "mount"], "action": "SCMP_ACT_ALLOW", "includes": {"caps": ["CAP_SYS_ADMIN"]}},
        {"names": ["bpf", "perf_event_open", "mount"], "action": "SCMP_ACT_ERRNO", "excludes": {"caps": ["CAP_SYS_ADMIN"]}},
        {"names": ["perf_event_open"], "action": "SCMP_ACT_ERRNO"}]}
    out = _generator().profile(default)
    assert out["syscalls"][:3] == [default["syscalls"][0], default["syscalls"][1],
                                   {"names": ["mount"], "action": "SCMP_ACT_ERRNO", "excludes": {"caps": ["CAP_SYS_ADMIN"]}}]
    assert [r["includes"]["caps"] for r in out["syscalls"][3:]] == [["CAP_BPF"], ["CAP_PERFMON"]]
    assert default["syscalls"][2]["names"] == ["bpf", "perf_event_open", "mount"], "the input is not changed"

"""Write deploy/container/seccomp.json: the container runtime's default seccomp profile, except that
`bpf` is allowed to a container holding CAP_BPF and `perf_event_open` to one holding CAP_PERFMON.

Older profiles (podman 4.3 in Debian 12, Docker before 20.10.x, containerd before 1.7) allow both only
with CAP_SYS_ADMIN, which pynetmon does not take. Usage:
    python3 deploy/container/seccomp.py [/usr/share/containers/seccomp.json] > deploy/container/seccomp.json
"""
from __future__ import annotations

import json
import sys

GATED = {"bpf": "CAP_BPF", "perf_event_open": "CAP_PERFMON"}


def profile(default: dict) -> dict:
    """`default` with GATED's syscalls moved out of every denying rule and allowed by capability."""
    out = json.loads(json.dumps(default))
    rules = []
    for rule in out["syscalls"]:
        if rule["action"] != "SCMP_ACT_ALLOW" and set(rule["names"]) & set(GATED):
            rule["names"] = [n for n in rule["names"] if n not in GATED]  # the default action denies them
            if not rule["names"]:
                continue
        rules.append(rule)
    for name, cap in GATED.items():
        rules.append({"names": [name], "action": "SCMP_ACT_ALLOW", "args": [], "comment": f"pynetmon: {cap}",
                      "includes": {"caps": [cap]}, "excludes": {}})
    out["syscalls"] = rules
    return out


if __name__ == "__main__":
    path = sys.argv[1] if len(sys.argv) > 1 else "/usr/share/containers/seccomp.json"
    with open(path) as f:
        json.dump(profile(json.load(f)), sys.stdout, indent=1)
    sys.stdout.write("\n")

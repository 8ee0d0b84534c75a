"""The image's entry point: `pynetmon doctor` first, then `pynetmon serve ARGS` in its place.

A node without BTF, or a container started without CAP_BPF/NET_ADMIN/PERFMON, stops here with the
doctor's table and one line saying what to fix, instead of failing later on the first attach. The
`-slim` image has no clang: there the clang check may fail (ready monitors need no compiler).
"""
from __future__ import annotations

import os
import sys

from pynetmon.doctor import FAIL, doctor

FIXES = {
    "capabilities": "run with --cap-drop all --cap-add BPF,NET_ADMIN,PERFMON (Kubernetes: securityContext.capabilities.add)",
    "kernel BTF": "the host kernel needs CONFIG_DEBUG_INFO_BTF=y (/sys/kernel/btf/vmlinux)",
    "BPF program load": "the kernel refused a BPF program: see the line above (capabilities, lockdown, seccomp)",
}


def main() -> None:
    report = doctor()
    print(report.table(), file=sys.stderr, flush=True)
    slim = os.environ.get("PYNETMON_IMAGE") == "slim"
    failed = [c for c in report.checks if c.verdict == FAIL and not (slim and c.name == "clang")]
    if slim:
        print("pynetmon: slim image: no clang on purpose (ready monitors only; Dynmon code and capture "
              "filters need the full image)", file=sys.stderr)
    if failed:
        for check in failed:
            print(f"pynetmon: {check.name}: {check.detail}" + (f"\n  fix: {FIXES[check.name]}" if check.name in FIXES else ""),
                  file=sys.stderr)
        print("pynetmon: not starting (pynetmon doctor failed)", file=sys.stderr)
        sys.exit(1)
    os.execvp("pynetmon", ["pynetmon", "serve", *sys.argv[1:]])


if __name__ == "__main__":
    main()

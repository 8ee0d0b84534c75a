"""Check that this machine can run pynetmon: kernel, BTF, bpffs, capabilities, a real program load, tcx,
clang, libbpf, libpcap, the JIT and the kernel's build options. Prints one line per check with its verdict; exits 1 when a check fails."""
from __future__ import annotations

import argparse

NAME = "doctor"
HELP = "check kernel, privileges and tools; one verdict per line"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    parser.add_argument("--kernel-config", metavar="FILE",
                        help="kernel configuration to check (plain or gzip) instead of /proc/config.gz or "
                             "/boot/config-$(uname -r)")


def run(args: argparse.Namespace) -> int:
    from ..doctor import doctor
    report = doctor(kernel_config=args.kernel_config)
    print(report.to_json() if args.json else report.table())
    return 0 if report.ok else 1

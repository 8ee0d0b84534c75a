"""Is this machine ready for pynetmon? Kernel, BTF, bpffs, capabilities, a real program load, clang, libbpf,
libpcap, the JIT and its hardening, and the kernel's build options for BPF, JIT, tc and XDP (from
/proc/config.gz or /boot/config-RELEASE; without either, probes of program and map types instead), each
checked on its own with a verdict ("ok", "warn", "fail"), the reason and the fix.

>>> report = pynetmon.doctor()
>>> print(report)          # a table, one line per check
>>> report.ok              # False when any check failed
"""
from __future__ import annotations

import json
import os
import platform
import re
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

from . import kconfig

OK, WARN, FAIL = "ok", "warn", "fail"

# Capability bit numbers (linux/capability.h).
CAP_NET_ADMIN, CAP_SYS_ADMIN, CAP_PERFMON, CAP_BPF = 12, 21, 38, 39
TCX_KERNEL = (6, 6)       # kernel-owned TC links
MIN_KERNEL = (5, 15)      # BTF, batch map operations, bpf_link for XDP, ring buffers
MIN_CLANG = 11
MIN_LIBBPF = (1, 0)


@dataclass(frozen=True)
class Check:
    """One line of the report."""

    name: str
    verdict: str
    detail: str


@dataclass(frozen=True)
class Report:
    """Every check, in order. `ok` is False when one failed; warnings do not stop pynetmon."""

    checks: tuple[Check, ...]

    @property
    def ok(self) -> bool:
        return all(c.verdict != FAIL for c in self.checks)

    @property
    def verdict(self) -> str:
        verdicts = {c.verdict for c in self.checks}
        return FAIL if FAIL in verdicts else WARN if WARN in verdicts else OK

    def table(self) -> str:
        """A readable table: check, verdict, detail; then a summary line."""
        width = max(len(c.name) for c in self.checks)
        lines = [f"{'check':<{width}}  {'verdict':<7}  detail", f"{'-' * width}  -------  {'-' * 40}"]
        lines += [f"{c.name:<{width}}  {c.verdict.upper() if c.verdict != OK else OK:<7}  {c.detail}"
                  for c in self.checks]
        summary = {OK: "ready", WARN: "ready, with warnings", FAIL: "not ready: fix the FAIL lines"}[self.verdict]
        lines.append(f"\npynetmon {summary}")
        return "\n".join(lines)

    def to_json(self) -> str:
        return json.dumps({"verdict": self.verdict, "checks": [asdict(c) for c in self.checks]}, indent=2)

    def __str__(self) -> str:
        return self.table()


def parse_version(text: str) -> tuple[int, ...]:
    """The leading numeric part of a version string: "6.18.44-fc-v669" → (6, 18, 44)."""
    match = re.match(r"(\d+(?:\.\d+)*)", text.strip())
    return tuple(int(part) for part in match.group(1).split(".")) if match else ()


def check_kernel(release: str | None = None) -> Check:
    release = release or platform.release()
    version = parse_version(release)
    if version >= TCX_KERNEL:
        return Check("kernel", OK, f"{release}: tcx links, batch map operations, BTF")
    if version >= MIN_KERNEL:
        return Check("kernel", WARN, f"{release}: no tcx links (linux {TCX_KERNEL[0]}.{TCX_KERNEL[1]}); "
                                     "TC programs use clsact, which a killed process leaves attached")
    return Check("kernel", FAIL, f"{release}: pynetmon needs linux {MIN_KERNEL[0]}.{MIN_KERNEL[1]} or newer")


def check_btf(path: str = "/sys/kernel/btf/vmlinux") -> Check:
    if os.path.exists(path):
        return Check("kernel BTF", OK, f"{path} ({os.path.getsize(path) // 1024} KiB)")
    return Check("kernel BTF", FAIL, f"{path} is missing: the kernel needs CONFIG_DEBUG_INFO_BTF=y for CO-RE")


def check_bpffs(mounts: str | None = None) -> Check:
    if mounts is None:
        mounts = Path("/proc/mounts").read_text()
    points = [fields[1] for fields in (line.split() for line in mounts.splitlines())
              if len(fields) > 2 and fields[2] == "bpf"]
    if "/sys/fs/bpf" in points:
        return Check("bpffs", OK, "mounted on /sys/fs/bpf")
    if points:
        return Check("bpffs", WARN, f"mounted on {', '.join(points)} but not on /sys/fs/bpf")
    return Check("bpffs", WARN, "not mounted (only pinning needs it): mount -t bpf bpf /sys/fs/bpf")


def effective_capabilities(status: str | None = None) -> int:
    """The CapEff bit mask of this process (from /proc/self/status)."""
    if status is None:
        status = Path("/proc/self/status").read_text()
    match = re.search(r"^CapEff:\s*([0-9a-fA-F]+)$", status, re.MULTILINE)
    return int(match.group(1), 16) if match else 0


def check_capabilities(caps: int | None = None) -> Check:
    caps = effective_capabilities() if caps is None else caps
    names = {CAP_BPF: "CAP_BPF", CAP_NET_ADMIN: "CAP_NET_ADMIN", CAP_PERFMON: "CAP_PERFMON"}
    has = {bit for bit in (*names, CAP_SYS_ADMIN) if caps >> bit & 1}
    if CAP_SYS_ADMIN in has and CAP_NET_ADMIN in has:
        return Check("capabilities", OK, "CAP_SYS_ADMIN and CAP_NET_ADMIN (root)")
    missing = [name for bit, name in names.items() if bit not in has]
    if CAP_SYS_ADMIN in has:  # CAP_SYS_ADMIN stands in for CAP_BPF and CAP_PERFMON
        missing = [name for name in missing if name == "CAP_NET_ADMIN"]
    if not missing:
        return Check("capabilities", OK, "CAP_BPF, CAP_NET_ADMIN, CAP_PERFMON")
    return Check("capabilities", FAIL, f"missing {', '.join(missing)} (run as root, or grant them: "
                                       "setcap / systemd AmbientCapabilities)")


def check_load() -> Check:
    """Load the packaged counter program into the kernel and run it once."""
    try:
        from .object import BPFObject
        with BPFObject.from_package("counter") as obj:
            obj.load()
            obj.programs["count_ingress"].test_run(bytes(64))
    except Exception as exc:  # noqa: BLE001 - the verdict carries whatever went wrong
        return Check("BPF program load", FAIL, f"{type(exc).__name__}: {_first_line(exc)}")
    return Check("BPF program load", OK, "counter.bpf.o loaded, verified and run (BPF_PROG_TEST_RUN)")


def check_tcx() -> Check:
    from .link import tcx_supported
    if tcx_supported():
        return Check("tcx links", OK, "kernel-owned TC attachments: nothing stays attached after a crash")
    return Check("tcx links", WARN, "unavailable: TC programs attach through clsact + cls_bpf")


def check_clang() -> Check:
    from . import toolchain
    try:
        path = toolchain.clang_path()
    except Exception as exc:  # noqa: BLE001
        return Check("clang", FAIL, _first_line(exc))
    version = toolchain.clang_version()
    major = parse_version(version.split("version", 1)[-1])[:1]
    if major and major[0] < MIN_CLANG:
        return Check("clang", FAIL, f"{version} at {path}: needs clang {MIN_CLANG} or newer")
    return Check("clang", OK, f"{version} ({path})")


def check_libbpf() -> Check:
    from ._binding import LIBBPF_VERSION
    text = f"libbpf {LIBBPF_VERSION[0]}.{LIBBPF_VERSION[1]}"
    if LIBBPF_VERSION < MIN_LIBBPF:
        return Check("libbpf", WARN, f"{text}: older than {MIN_LIBBPF[0]}.{MIN_LIBBPF[1]}")
    return Check("libbpf", OK, f"{text} (tcx through raw bpf() where libbpf lacks it)")


def check_libpcap() -> Check:
    try:
        from ._libpcap import ffi, lib
    except ImportError as exc:
        return Check("libpcap", FAIL, f"binding not built ({exc}): run `make build`")
    return Check("libpcap", OK, ffi.string(lib.pcap_lib_version()).decode())


def check_jit(path: str = "/proc/sys/net/core/bpf_jit_enable") -> Check:
    try:
        value = Path(path).read_text().strip()
    except OSError:
        return Check("BPF JIT", WARN, f"cannot read {path}")
    if value == "1":
        return Check("BPF JIT", OK, "enabled")
    if value == "2":
        return Check("BPF JIT", WARN, "enabled with debug output to the kernel log (slow): sysctl net.core.bpf_jit_enable=1")
    return Check("BPF JIT", WARN, "disabled: programs run in the interpreter: sysctl net.core.bpf_jit_enable=1")


def check_jit_harden(path: str = "/proc/sys/net/core/bpf_jit_harden") -> Check:
    try:
        value = Path(path).read_text().strip()
    except OSError:
        return Check("BPF JIT hardening", WARN, f"cannot read {path}")
    if value == "2":
        return Check("BPF JIT hardening", WARN, "2: constants blinded in every program, pynetmon's too (slower, see "
                                                "docs/deploy.md): sysctl net.core.bpf_jit_harden=1 hardens only "
                                                "unprivileged programs")
    return Check("BPF JIT hardening", OK, f"{value}: pynetmon's privileged programs run unblinded")


# Program and map types the monitors use, probed when no configuration file says what the kernel has.
# (name, what it is for, verdict when missing). The monitors' tp_btf programs are TRACING programs, which
# libbpf 1.1 probes as fentry (refused on some hosts that run tp_btf fine): raw tracepoints stand in, with
# the kernel BTF checked above.
_PROBED_PROGRAMS = (("SCHED_CLS", "tc programs (NET_CLS_BPF, tcx)", FAIL), ("XDP", "XDP programs", FAIL),
                    ("TRACEPOINT", "tracepoint programs (BPF_EVENTS)", WARN),
                    ("RAW_TRACEPOINT", "raw tracepoint programs (tcp and drops monitors, with kernel BTF)", WARN))
_PROBED_MAPS = (("RINGBUF", "ring buffers (linux 5.8)", FAIL), ("LRU_HASH", "LRU hash maps", FAIL),
                ("PERCPU_HASH", "per-CPU hash maps", FAIL))


def check_kernel_config(path: str | None = None, search: tuple[str, ...] | None = None) -> list[Check]:
    """One line per kernel option pynetmon needs (kconfig.REQUIREMENTS), from `path` or the first file of
    `search` (default: /proc/config.gz, /boot/config-RELEASE). Without one, a warning and probes instead."""
    found = path or kconfig.find(search)
    if found is None:
        where = ", ".join(search if search is not None else kconfig.candidates())
        return [Check("kernel config", WARN, f"none of {where} exists: build options unknown, probed instead "
                                             "(the kernel needs CONFIG_IKCONFIG_PROC=y for /proc/config.gz)"),
                *_probe_kernel()]
    try:
        config = kconfig.read(found)
    except (OSError, EOFError, ValueError) as exc:  # gzip raises BadGzipFile (OSError) or EOFError
        return [Check("kernel config", FAIL, f"cannot read {found}: {exc}")]
    if not config:
        return [Check("kernel config", FAIL, f"{found} has no CONFIG_ lines: not a kernel configuration")]
    release = parse_version(platform.release())
    checks = [Check("kernel config", OK, f"{found} ({len(config)} options)")]
    for req in kconfig.REQUIREMENTS:
        verdict, detail = kconfig.verdict(config, req, release)
        checks.append(Check(f"CONFIG_{req.option}", verdict, detail))
    return checks


def _probe_kernel() -> list[Check]:
    from ._binding import ffi, lib
    checks = []
    for kind, probe, names in (("program", lib.libbpf_probe_bpf_prog_type, _PROBED_PROGRAMS),
                               ("map", lib.libbpf_probe_bpf_map_type, _PROBED_MAPS)):
        prefix = "BPF_PROG_TYPE_" if kind == "program" else "BPF_MAP_TYPE_"
        for name, what, missing in names:
            ret = probe(getattr(lib, prefix + name), ffi.NULL)
            verdict = OK if ret == 1 else missing if ret == 0 else WARN
            detail = {1: "supported", 0: "not supported by this kernel"}.get(ret, f"probe failed: {os.strerror(-ret)}")
            checks.append(Check(f"probe {kind} {name}", verdict, f"{what}: {detail}"))
    return checks


CHECKS: tuple[Callable[[], Check | list[Check]], ...] = (
    check_kernel, check_btf, check_bpffs, check_capabilities, check_load, check_tcx, check_clang,
    check_libbpf, check_libpcap, check_jit, check_jit_harden, check_kernel_config,
)


def doctor(print_report: bool = False, kernel_config: str | None = None) -> Report:
    """Run every check. A check that raises counts as failed with its error; none stops the others.
    `kernel_config`: the kernel configuration file to check instead of the running kernel's."""
    checks: list[Check] = []
    for check in CHECKS:
        try:
            result = check(kernel_config) if check is check_kernel_config else check()
            checks.extend(result if isinstance(result, list) else [result])
        except Exception as exc:  # noqa: BLE001
            checks.append(Check(check.__name__.removeprefix("check_"), FAIL, f"{type(exc).__name__}: {exc}"))
    report = Report(tuple(checks))
    if print_report:
        print(report)
    return report


def _first_line(exc: Exception, limit: int = 200) -> str:
    """The error's first line; long ones keep their beginning and end (where libbpf puts the hint)."""
    line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return line if len(line) <= limit else f"{line[:limit // 2]} ... {line[-limit // 2:]}"

"""The kernel's build configuration (/proc/config.gz or /boot/config-RELEASE) and the options pynetmon needs,
each with what it is for and how to get it. Pure functions: `pynetmon doctor` turns the verdicts into lines.

>>> config = kconfig.read(kconfig.find())
>>> [(r.option, kconfig.verdict(config, r)[0]) for r in kconfig.REQUIREMENTS][:2]
[('BPF', 'ok'), ('BPF_SYSCALL', 'ok')]
"""
from __future__ import annotations

import gzip
import platform
import re
from dataclasses import dataclass
from pathlib import Path

REQUIRED, RECOMMENDED, OPTIONAL = "required", "recommended", "optional"
TCX_KERNEL = (6, 6)  # from here TC programs attach through tcx; before, through clsact + cls_bpf
_LINE = re.compile(r"^CONFIG_(\w+)=(.*)$")
_NOT_SET = re.compile(r"^# CONFIG_(\w+) is not set$")


@dataclass(frozen=True)
class Requirement:
    """One option: how much pynetmon needs it (`need`, or `need_before_tcx` on kernels without tcx), the
    values that satisfy it (`y`, or `y`/`m` for what can be a module), what it is for and the fix."""

    option: str
    need: str
    why: str
    modules_ok: bool = False
    need_before_tcx: str | None = None

    def level(self, release: tuple[int, ...]) -> str:
        if self.need_before_tcx and release and release < TCX_KERNEL:
            return self.need_before_tcx
        return self.need

    def fix(self) -> str:
        value = "y (or m)" if self.modules_ok else "y"
        return f"a kernel built with CONFIG_{self.option}={value}"


REQUIREMENTS: tuple[Requirement, ...] = (
    Requirement("BPF", REQUIRED, "eBPF itself"),
    Requirement("BPF_SYSCALL", REQUIRED, "the bpf() system call: maps, program loads, links"),
    Requirement("HAVE_EBPF_JIT", RECOMMENDED, "the architecture has an eBPF JIT compiler"),
    Requirement("BPF_JIT", RECOMMENDED, "programs compiled to native code instead of interpreted (several times faster)"),
    Requirement("DEBUG_INFO_BTF", REQUIRED, "kernel BTF (/sys/kernel/btf/vmlinux): CO-RE relocations, tp_btf programs"),
    Requirement("BPF_EVENTS", RECOMMENDED, "BPF programs on tracepoints (the tcp and drops monitors)"),
    Requirement("NET_INGRESS", REQUIRED, "the ingress hook of tc"),
    Requirement("NET_EGRESS", REQUIRED, "the egress hook of tc"),
    Requirement("NET_SCH_INGRESS", REQUIRED, "the clsact qdisc (and, from linux 6.6, the tcx hook it selects)",
                modules_ok=True),
    Requirement("NET_CLS_BPF", RECOMMENDED, "cls_bpf: TC programs on kernels without tcx (before 6.6) attach as cls_bpf "
                "filters", modules_ok=True, need_before_tcx=REQUIRED),
    Requirement("NET_CLS_ACT", RECOMMENDED, "tc actions: the verdicts (TC_ACT_SHOT) of cls_bpf programs, which the "
                "guards use on kernels without tcx", need_before_tcx=REQUIRED),
    Requirement("NET_ACT_BPF", OPTIONAL, "act_bpf (BPF as a tc action): pynetmon uses cls_bpf direct-action or tcx "
                "instead", modules_ok=True),
    Requirement("XDP_SOCKETS", OPTIONAL, "AF_XDP sockets: pynetmon's XDP programs and captures do not use them"),
    Requirement("VETH", RECOMMENDED, "veth pairs: the http monitor's created mirror interface", modules_ok=True),
    Requirement("BPF_JIT_ALWAYS_ON", OPTIONAL, "the interpreter is compiled out (bpf_jit_enable cannot be 0)"),
)


def candidates(release: str | None = None) -> tuple[str, ...]:
    """Where kernels keep their configuration: the running kernel's own copy (CONFIG_IKCONFIG_PROC), then
    the distribution's file for this release."""
    return ("/proc/config.gz", f"/boot/config-{release or platform.release()}")


def find(paths: tuple[str, ...] | None = None) -> str | None:
    """The first readable configuration file among `paths` (default: `candidates()`), or None."""
    for path in paths if paths is not None else candidates():
        if Path(path).is_file():
            return path
    return None


def read(path: str) -> dict[str, str]:
    """Parse a configuration file (gzip-compressed or plain text, whatever its name says)."""
    data = Path(path).read_bytes()
    if data[:2] == b"\x1f\x8b":
        data = gzip.decompress(data)
    return parse(data.decode("utf-8", errors="replace"))


def parse(text: str) -> dict[str, str]:
    """Options → values, without the CONFIG_ prefix and quotes: "y", "m", a number or a string; "n" for
    `# CONFIG_X is not set`. Options a file does not mention are absent (their dependencies are off)."""
    config: dict[str, str] = {}
    for line in text.splitlines():
        line = line.strip()
        if match := _LINE.match(line):
            value = match.group(2)
            config[match.group(1)] = value[1:-1] if len(value) >= 2 and value[0] == value[-1] == '"' else value
        elif match := _NOT_SET.match(line):
            config[match.group(1)] = "n"
    return config


def verdict(config: dict[str, str], req: Requirement, release: tuple[int, ...] = ()) -> tuple[str, str]:
    """("ok" | "warn" | "fail", detail) of one requirement against a parsed configuration."""
    value = config.get(req.option)
    shown = f"CONFIG_{req.option}={value}" if value not in (None, "n") else f"CONFIG_{req.option} not set"
    if value == "y" or (value == "m" and req.modules_ok):
        return "ok", f"{shown}: {req.why}"
    level = req.level(release)
    if level == OPTIONAL:
        return "ok", f"{shown} ({OPTIONAL}): {req.why}"
    return ("fail" if level == REQUIRED else "warn"), f"{shown} ({level}): {req.why}; fix: {req.fix()}"

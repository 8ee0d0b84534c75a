"""Build step: copy the headers listed in sandbox-headers.txt, with everything they include, into a tree.

    python3 bpf/sandbox_headers.py bpf/sandbox-headers.txt pynetmon/data/sysroot

Run-time compiles (pynetmon/toolchain.py) search only that tree, pynetmon's own headers and clang's
builtin headers (-nostdinc), so injected code cannot name any other file on the host. The closure is
what clang itself opens for `#include <entry>` under -target bpf, kept in the layout of the system's
search directories (multiarch first, then /usr/include) so that #include_next inside glibc and clang
headers still finds the same files.

Two edits let code that uses no assembler compile in one step with GNU asm switched off
(pynetmon/toolchain.py): libbpf's `bpf_tail_call_static()` is left out when `__PYNETMON_NO_GNU_ASM` is
defined, and x86's `<asm/swab.h>` (bswap in inline assembler, reached from <linux/in.h>) is left out for
`__bpf__`, where it could never assemble (<linux/swab.h> then uses its portable swaps). Where a pattern
is not found (another libbpf or kernel), the copy is verbatim and compiles take the two-step path.
"""
from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

CLANG = os.environ.get("CLANG", "clang")
X86_SWAB = re.compile(rb"(#include <linux/types.h>\n)(.*__asm__.*)(\n#endif /\* _ASM_X86_SWAB_H \*/)", re.DOTALL)
TAIL_CALL_GUARD = re.compile(rb"^(#if [^\n]*defined\(__bpf__\))\n(static __always_inline void\s*bpf_tail_call_static)",
                             re.MULTILINE)


def search_dirs() -> dict[str, str]:
    """Subtree name → system directory, in clang's search order (without /usr/local/include)."""
    multiarch = sysconfig.get_config_var("MULTIARCH") or f"{os.uname().machine}-linux-gnu"
    return {"arch": f"/usr/include/{multiarch}", "usr": "/usr/include"}


def resource_include() -> str:
    out = subprocess.run([CLANG, "-print-resource-dir"], capture_output=True, text=True, check=True)
    return os.path.join(out.stdout.strip(), "include")


def dependencies(entry: str, own: str, dirs: dict[str, str], builtin: str) -> list[str]:
    """Every file clang opens to preprocess `#include <entry>` for -target bpf."""
    flags = ["-target", "bpf", "-D__TARGET_ARCH_x86", "-nostdinc", "-isystem", own]
    for d in (dirs["arch"], builtin, dirs["usr"]):
        flags += ["-isystem", d]
    proc = subprocess.run([CLANG, *flags, "-M", "-x", "c", "-"], input=f"#include <{entry}>\n",
                          capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        sys.exit(f"sandbox_headers: <{entry}> does not preprocess for -target bpf:\n{proc.stderr}")
    rule = proc.stdout.replace("\\\n", " ")
    return [p for p in shlex.split(rule.split(":", 1)[1]) if p != "-"]


def main(listing: str, out: str) -> None:
    own = str(Path(listing).resolve().parent / "include")
    dirs = search_dirs()
    builtin = resource_include()
    entries = [line.strip() for line in Path(listing).read_text().splitlines()
               if line.strip() and not line.startswith("#")]
    wanted: dict[Path, Path] = {}
    for entry in entries:
        for dep in dependencies(entry, own, dirs, builtin):
            path = os.path.normpath(dep)
            if path.startswith((own + "/", builtin + "/")):
                continue  # pynetmon's own headers ship separately; clang's come with the clang that runs
            for name, root in dirs.items():  # the first match wins: multiarch lies inside /usr/include
                if path.startswith(root + "/"):
                    wanted[Path(out, name, os.path.relpath(path, root))] = Path(path)
                    break
            else:
                sys.exit(f"sandbox_headers: <{entry}> pulls in {path}, outside the system include directories")
    tmp = Path(out + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    for dest, src in sorted(wanted.items()):
        target = tmp / dest.relative_to(out)
        target.parent.mkdir(parents=True, exist_ok=True)
        text = src.read_bytes()  # contents, never a link to the host's file
        if src.name == "bpf_helpers.h":
            text = TAIL_CALL_GUARD.sub(rb"\1 && !defined(__PYNETMON_NO_GNU_ASM)\n\2", text)
        elif str(src).endswith("/asm/swab.h"):
            text = X86_SWAB.sub(rb"\1#ifndef __bpf__ /* x86 assembler */\n\2\n#endif\3", text)
        target.write_bytes(text)
        target.chmod(0o644)
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)
    print(f"sandbox_headers: {len(wanted)} headers for {len(entries)} entries in {out}")


if __name__ == "__main__":
    main(*sys.argv[1:3])

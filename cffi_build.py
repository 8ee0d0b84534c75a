"""Build the API-mode cffi extensions against the system libraries.

- `pynetmon._libbpf`: libbpf (bpf.h, libbpf.h, btf.h) plus the raw syscalls libbpf 1.1 lacks.
- `pynetmon._libpcap`: libpcap's filter compiler and interpreter. It is a separate module because
  pcap's classic `struct bpf_insn`/`struct bpf_program` clash with libbpf's names of the same spelling.

Declarations live in pynetmon/_cffi_src/, one file per C header (INCLUDES, TYPES, FUNCTIONS,
CUSTOMIZATIONS, and SOURCES: the .c files beside it that implement pynetmon's own C, compiled into the
module); this script only lists them in order.
"""
import importlib.util
from pathlib import Path

from cffi import FFI

ROOT = Path(__file__).resolve().parent
SRC = ROOT / "pynetmon" / "_cffi_src"


def _load(name):
    spec = importlib.util.spec_from_file_location(f"_cffi_src_{name}", SRC / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _builder(module_name, headers, libraries):
    modules = [_load(name) for name in headers]
    # setuptools wants the C sources relative to setup.py's directory (it also puts them in the sdist).
    sources = [str((SRC / c).relative_to(ROOT)) for m in modules for c in getattr(m, "SOURCES", [])]
    ffi = FFI()
    ffi.cdef("\n".join(m.TYPES + "\n" + m.FUNCTIONS for m in modules))
    ffi.set_source(
        module_name,
        "\n".join(m.INCLUDES for m in modules) + "\n" + "\n".join(m.CUSTOMIZATIONS for m in modules),
        sources=sources,
        include_dirs=[str(SRC.relative_to(ROOT))],
        depends=[str(h.relative_to(ROOT)) for h in sorted(SRC.glob("*.h"))],
        libraries=libraries,
        extra_compile_args=["-O2", "-Wall", "-Wno-deprecated-declarations"],
    )
    return ffi


ffibuilder = _builder("pynetmon._libbpf", ["bpf", "libbpf", "btf", "syscall", "cpuhop"], ["bpf", "elf", "z"])
pcap_ffibuilder = _builder("pynetmon._libpcap", ["pcap"], ["pcap"])

if __name__ == "__main__":
    ffibuilder.compile(tmpdir=".", verbose=False)
    pcap_ffibuilder.compile(tmpdir=".", verbose=False)

"""The C programs the swap tests inject, compiled once per session (clang's cache keeps reruns fast)."""
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from pynetmon import BPFObject
from pynetmon.toolchain import compile_c

HERE = Path(__file__).resolve().parent


def counting_object() -> bytes:
    """tests/swap/counting.bpf.c: by_len (hash) and by_slot (array) to swap, truth shared."""
    return compile_c((HERE / "counting.bpf.c").read_text(), filename="counting.bpf.c")


def counting_opener(dwell_ns: int = 0) -> Callable[[], BPFObject]:
    """Opens counting.bpf.c with its `dwell_ns` knob set (for SwapDataplane's two loads)."""
    code = counting_object()

    def open_counting() -> BPFObject:
        obj = BPFObject(code, name="counting")
        rodata = next(m for name, m in obj.maps.items() if name.endswith(".rodata"))
        rodata.set_initial_value(dwell_ns.to_bytes(8, "little"))
        return obj
    return open_counting


def program_source(maps: str, body: str, section: str = "tc") -> str:
    """A one-program object: `maps` declarations and the body of `int f(void *ctx)` in `section`."""
    return ("#include <linux/bpf.h>\n#include <bpf/bpf_helpers.h>\n" + maps +
            f'\nSEC("{section}") int f(void *ctx) {{ {body} }}\nchar LICENSE[] SEC("license") = "GPL";\n')


def exactness_config() -> dict:
    """The issue's config: counting.bpf.c on ingress; by_len swap-on-read + empty-on-read, by_slot
    swap-on-read only, truth a plain (shared) metric."""
    code = (HERE / "counting.bpf.c").read_text()
    return {"ingress-path": {"name": "exactness", "code": code, "metric-configs": [
        {"name": "packets_by_length", "map-name": "by_len",
         "extraction-options": {"swap-on-read": True, "empty-on-read": True}},
        {"name": "packets_by_slot", "map-name": "by_slot", "extraction-options": {"swap-on-read": True}},
        {"name": "packets_seen", "map-name": "truth"}]}, "egress-path": {}}

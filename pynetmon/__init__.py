"""pynetmon: eBPF network monitoring and packet capture for Linux.

>>> import pynetmon
>>> with pynetmon.BPFObject.from_package("counter") as obj:
...     obj.load()
...     with pynetmon.attach_tc(obj.programs["count_ingress"], "eth0", "ingress"):
...         ...
...     obj.maps["counters"].items()
"""
from .doctor import doctor
from .errors import (
    BPFError,
    ClosedError,
    CompileError,
    ConfigError,
    Error,
    FilterError,
    InterfaceNotFoundError,
    LoadError,
    MapFullError,
    MapKeyError,
    NotSupportedError,
    PermissionDeniedError,
    VerifierError,
)
from .link import attach_tc, attach_xdp
from .maps import Map
from .object import BPFObject
from .program import Program, TestRun
from .recorder import Recorder
from .ringbuf import PerfBuffer, RingBuffer

__all__ = [
    "BPFError", "BPFObject", "ClosedError", "CompileError", "ConfigError", "Dynmon", "Error", "FilterError",
    "InterfaceNotFoundError", "LoadError", "Map", "MapFullError", "MapKeyError", "NotSupportedError",
    "PacketCapture", "PacketFilter", "PerfBuffer", "PermissionDeniedError", "Program", "Recorder", "RingBuffer",
    "TestRun", "VerifierError", "attach_tc", "attach_xdp", "doctor", "filter", "plot",
]
__version__ = "0.1.0"


def __getattr__(name: str):
    # Dynmon brings pydantic and prometheus_client (about a second to import): load it on first use only.
    if name == "Dynmon":
        from .dynmon import Dynmon
        return Dynmon
    if name == "PacketCapture":  # brings libpcap's filter compiler
        from .capture import PacketCapture
        return PacketCapture
    if name == "plot":  # matplotlib is imported by the first plot, not here
        import importlib
        return importlib.import_module(".plot", __name__)
    if name in ("filter", "PacketFilter"):
        import importlib
        module = importlib.import_module(".filter", __name__)
        return module if name == "filter" else module.PacketFilter
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

"""Loaded eBPF programs: identity, and BPF_PROG_TEST_RUN for tests and microbenchmarks."""
from __future__ import annotations

import os
from dataclasses import dataclass

from ._binding import check, ffi, lib
from .errors import Error, NotSupportedError

PROG_TYPE_NAMES = {getattr(lib, n): n[len("BPF_PROG_TYPE_"):].lower()
                   for n in dir(lib) if n.startswith("BPF_PROG_TYPE_")}


@dataclass(frozen=True)
class TestRun:
    """Result of BPF_PROG_TEST_RUN: the program's return value, the kernel's average time per run, and
    the packet as the program left it."""

    retval: int
    duration_ns: int
    data: bytes

    __test__ = False  # not a pytest test class


class Program:
    """A program of a loaded `BPFObject` (or wrapped from a file descriptor)."""

    def __init__(self, fd: int, name: str, type_id: int, section: str = "", *, owned_fd: bool = False):
        self._fd = fd
        self.name = name
        self.type_id = type_id
        self.type = PROG_TYPE_NAMES.get(type_id, f"type_{type_id}")
        self.section = section
        self._owned_fd = owned_fd

    @classmethod
    def from_fd(cls, fd: int, *, owned: bool = False) -> Program:
        info = ffi.new("struct bpf_prog_info *")
        size = ffi.new("__u32 *", ffi.sizeof("struct bpf_prog_info"))
        check(lib.bpf_obj_get_info_by_fd(fd, info, size), "BPF_OBJ_GET_INFO_BY_FD on program")
        return cls(fd, ffi.string(info.name).decode(), info.type, owned_fd=owned)

    @property
    def fd(self) -> int:
        if self._fd < 0:
            raise ValueError(f"program {self.name!r} is closed")
        return self._fd

    @property
    def id(self) -> int:
        return self.info()["id"]

    def map_ids(self) -> list[int]:
        """The ids of the maps the program uses (BPF_OBJ_GET_INFO_BY_FD with a map id buffer)."""
        for _ in range(4):  # the count cannot change after load; the loop only guards a racing reload
            info = ffi.new("struct bpf_prog_info *")
            size = ffi.new("__u32 *", ffi.sizeof("struct bpf_prog_info"))
            check(lib.bpf_obj_get_info_by_fd(self.fd, info, size), f"get info of program {self.name!r}")
            count = info.nr_map_ids
            ids = ffi.new("__u32[]", max(count, 1))
            info = ffi.new("struct bpf_prog_info *")
            info.nr_map_ids = count
            try:
                info.map_ids = int(ffi.cast("uintptr_t", ids))
            except AttributeError:  # an extension built before map_ids was declared (_cffi_src/bpf.py)
                raise NotSupportedError("pynetmon's libbpf binding was built without bpf_prog_info.map_ids; "
                                        "rebuild it (make build)") from None
            check(lib.bpf_obj_get_info_by_fd(self.fd, info, size), f"get map ids of program {self.name!r}")
            if info.nr_map_ids <= count:
                return [ids[i] for i in range(info.nr_map_ids)]
        raise Error(f"the map ids of program {self.name!r} kept changing")

    def info(self) -> dict:
        """Kernel's view: id, tag, run counts (run_cnt/run_time_ns need kernel.bpf_stats_enabled)."""
        info = ffi.new("struct bpf_prog_info *")
        size = ffi.new("__u32 *", ffi.sizeof("struct bpf_prog_info"))
        check(lib.bpf_obj_get_info_by_fd(self.fd, info, size), f"get info of program {self.name!r}")
        return {"id": info.id, "type": PROG_TYPE_NAMES.get(info.type, info.type), "name": ffi.string(info.name).decode(),
                "tag": bytes(ffi.buffer(info.tag, 8)).hex(), "xlated_prog_len": info.xlated_prog_len,
                "jited_prog_len": info.jited_prog_len, "run_cnt": info.run_cnt, "run_time_ns": info.run_time_ns}

    def test_run(self, data: bytes, repeat: int = 1, *, ctx: bytes | None = None,
                 data_out_size: int | None = None) -> TestRun:
        """Run the program on `data` in the kernel (BPF_PROG_TEST_RUN) `repeat` times.

        >>> prog.test_run(bytes(64)).retval
        """
        data = bytes(data)
        out_size = data_out_size if data_out_size is not None else len(data) + 512
        out = ffi.new("uint8_t[]", max(out_size, 1))
        opts = ffi.new("struct bpf_test_run_opts *")
        opts.sz = ffi.sizeof("struct bpf_test_run_opts")
        keep = ffi.from_buffer(data)
        opts.data_in = keep
        opts.data_size_in = len(data)
        opts.data_out = out
        opts.data_size_out = out_size
        opts.repeat = max(int(repeat), 1)
        if ctx is not None:
            ctx_keep = ffi.from_buffer(ctx)
            opts.ctx_in = ctx_keep
            opts.ctx_size_in = len(ctx)
        check(lib.bpf_prog_test_run_opts(self.fd, opts), f"BPF_PROG_TEST_RUN of program {self.name!r}")
        return TestRun(opts.retval, opts.duration, ffi.buffer(out, min(opts.data_size_out, out_size))[:])

    def run_live_frames(self, frame: bytes, count: int, ifindex: int, batch_size: int = 64) -> int:
        """Run an XDP program `count` times on copies of `frame` arriving on interface `ifindex` of the
        calling thread's network namespace, and carry out its verdicts for real
        (BPF_F_TEST_XDP_LIVE_FRAMES, linux 5.18; what xdp-trafficgen does): XDP_TX sends the frame out of
        `ifindex`, XDP_REDIRECT to its target. A packet generator at XDP speed. Returns the kernel's
        average ns per frame.

        >>> tx.run_live_frames(frame, 10_000_000, socket.if_nametoindex("eth0"))
        """
        if not 0 < count < 1 << 31:
            raise ValueError(f"count must be in 1..2**31-1, not {count!r}")
        data = ffi.from_buffer(bytes(frame))
        ctx = ffi.new("__u32[6]", [0, len(frame), 0, ifindex, 0, 0])  # struct xdp_md: data_end, ingress_ifindex
        opts = ffi.new("struct bpf_test_run_opts *")
        opts.sz = ffi.sizeof("struct bpf_test_run_opts")
        opts.data_in = data
        opts.data_size_in = len(frame)
        opts.ctx_in = ctx
        opts.ctx_size_in = ffi.sizeof(ctx)
        opts.repeat = count
        opts.flags = lib.BPF_F_TEST_XDP_LIVE_FRAMES
        opts.batch_size = batch_size
        check(lib.bpf_prog_test_run_opts(self.fd, opts),
              f"BPF_PROG_TEST_RUN with live frames of program {self.name!r} on ifindex {ifindex}")
        return int(opts.duration)

    def close(self) -> None:
        if self._owned_fd and self._fd >= 0:
            os.close(self._fd)
        self._fd = -1

    def __repr__(self) -> str:
        return f"<Program {self.name!r} {self.type}>"

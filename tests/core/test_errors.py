"""Error paths of the core: what the verifier rejects, objects that are not objects, interfaces that do not
exist, and a process without the capabilities BPF needs. Each error must name what was wrong."""
from __future__ import annotations

import errno
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import pynetmon
from pynetmon.link import attach_tc, attach_xdp
from pynetmon.toolchain import compile_c

REPO = Path(__file__).resolve().parents[2]

HEADERS = "#include <linux/bpf.h>\n#include <linux/pkt_cls.h>\n#include <bpf/bpf_helpers.h>\n"
LICENSE = '\nchar LICENSE[] SEC("license") = "GPL";\n'

# Many checked branches first, so that the verifier's log is longer than what the message shows.
REJECTED = HEADERS + """
SEC("tc")
int reads_past_the_end(struct __sk_buff *skb)
{
    unsigned char *data = (void *)(long)skb->data;
    unsigned char *end = (void *)(long)skb->data_end;
    int sum = 0;
    if (data + 16 > end)
        return 0;
#pragma unroll
    for (int i = 0; i < 16; i++)
        sum += data[i] == 0x42 ? i : 1;
    return sum + data[40];   /* 40 is past the checked 16 bytes */
}
SEC("tc")
int fine(struct __sk_buff *skb)
{
    return TC_ACT_OK;
}
""" + LICENSE


def test_verifier_rejection_carries_the_whole_log(bpf):
    obj = pynetmon.BPFObject(compile_c(REJECTED, filename="rejected.bpf.c"), name="rejected")
    with obj, pytest.raises(pynetmon.VerifierError) as info:
        obj.load()
    err = info.value
    assert isinstance(err, pynetmon.LoadError) and isinstance(err, pynetmon.Error)
    assert err.program == "reads_past_the_end"
    assert "invalid access to packet" in err.log
    log_lines = err.log.strip().splitlines()
    assert len(log_lines) > 12
    message = str(err)
    assert "reads_past_the_end" in message and "invalid access to packet" in message
    assert log_lines[-1] in message                 # the message ends with the log's last lines ...
    assert log_lines[0] not in message.splitlines()  # ... and leaves the beginning to .log
    assert "rejected.bpf.c:" in err.log             # source lines from BTF line info


def test_a_failed_load_leaves_other_objects_working(bpf, counter_object):
    prog = counter_object.programs["count_ingress"]
    with pytest.raises(pynetmon.VerifierError):
        pynetmon.BPFObject(compile_c(REJECTED, filename="rejected.bpf.c")).load()
    prog.test_run(bytes(64))
    assert sum(v["packets"] for v in counter_object.maps["counters"][0]) == 1


def test_garbage_is_not_an_object(bpf):
    with pytest.raises(pynetmon.LoadError) as info:
        pynetmon.BPFObject(b"\x7fELF but not really" + bytes(64), name="garbage")
    assert "garbage" in str(info.value)
    assert not isinstance(info.value, pynetmon.VerifierError)


def test_missing_object_file_is_named(tmp_path):
    missing = tmp_path / "nope.bpf.o"
    with pytest.raises(pynetmon.LoadError) as info:
        pynetmon.BPFObject(missing)
    assert info.value.errno == errno.ENOENT and str(missing) in str(info.value)


def test_unknown_shipped_object_lists_the_shipped_ones():
    with pytest.raises(pynetmon.LoadError, match=r"no shipped BPF object named 'nope'.*counter.*maptypes"):
        pynetmon.BPFObject.from_package("nope")


def test_object_file_that_is_not_elf(tmp_path):
    path = tmp_path / "text.bpf.o"
    path.write_text("int main(void) { return 0; }\n")
    with pytest.raises(pynetmon.LoadError, match="text.bpf.o"):
        pynetmon.BPFObject(path)


def test_clang_diagnostics_reach_the_caller():
    broken = HEADERS + 'SEC("tc") int f(struct __sk_buff *skb) { return undeclared_thing; }' + LICENSE
    with pytest.raises(pynetmon.CompileError) as info:
        compile_c(broken, filename="broken.bpf.c")
    assert "broken.bpf.c:4" in info.value.diagnostics
    assert "undeclared_thing" in info.value.diagnostics


def test_missing_interface_is_named(counter_object):
    prog = counter_object.programs["count_ingress"]
    for attach in (lambda: attach_tc(prog, "pnm-nosuch0", "ingress"),
                   lambda: attach_tc(prog, "pnm-nosuch0", "egress", mechanism="clsact"),
                   lambda: attach_xdp(counter_object.programs["count_xdp"], "pnm-nosuch0")):
        with pytest.raises(pynetmon.InterfaceNotFoundError) as info:
            attach()
        assert info.value.ifname == "pnm-nosuch0" and "'pnm-nosuch0'" in str(info.value)


def test_missing_interface_inside_a_namespace(hosts, counter_object):
    a, _ = hosts
    with pytest.raises(pynetmon.InterfaceNotFoundError, match="'eth7'"):
        attach_tc(counter_object.programs["count_ingress"], "eth7", "ingress", netns=a.netns)


def test_bad_arguments_to_attach(counter_object):
    prog = counter_object.programs["count_ingress"]
    with pytest.raises(ValueError, match="'sideways'"):
        attach_tc(prog, "lo", "sideways")
    with pytest.raises(ValueError, match="'ebpf'"):
        attach_tc(prog, "lo", "ingress", mechanism="ebpf")
    with pytest.raises(ValueError, match="'turbo'"):
        attach_xdp(counter_object.programs["count_xdp"], "lo", mode="turbo")


UNPRIVILEGED = textwrap.dedent("""
    import pynetmon
    for what, action in (("load", lambda: pynetmon.BPFObject.from_package("counter").load()),
                         ("create", lambda: pynetmon.Map.create("hash", 4, 4, 1))):
        try:
            action()
        except pynetmon.Error as exc:
            print(what, type(exc).__name__, isinstance(exc, PermissionError), exc)
        else:
            print(what, "succeeded")
""")


@pytest.mark.parametrize("drop", [
    ["setpriv", "--inh-caps=-all", "--bounding-set=-all", "--"],
    ["capsh", "--drop=cap_bpf,cap_sys_admin,cap_net_admin,cap_perfmon", "--"],
])
def test_missing_privileges_name_the_capabilities(bpf, drop):
    if drop[0] == "capsh":
        drop = [*drop, "-c"]
        cmd = [*drop, " ".join([sys.executable, "-c", _shell_quote(UNPRIVILEGED)])]
    else:
        cmd = [*drop, sys.executable, "-c", UNPRIVILEGED]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=60, check=False)
    assert proc.returncode == 0, proc.stderr
    lines = dict(line.split(" ", 1) for line in proc.stdout.strip().splitlines())
    # Creating a map needs no capability where unprivileged BPF is allowed (sysctl 0); loading TC programs
    # always does.
    unprivileged_allowed = Path("/proc/sys/kernel/unprivileged_bpf_disabled").read_text().strip() == "0"
    for what in ("load",) if unprivileged_allowed else ("load", "create"):
        assert lines[what].startswith("PermissionDeniedError True"), proc.stdout
        for cap in ("CAP_BPF", "CAP_NET_ADMIN", "CAP_PERFMON"):
            assert cap in lines[what]


def _shell_quote(text: str) -> str:
    return "'" + text.replace("'", "'\\''") + "'"


def test_a_full_cache_disk_leaves_no_half_written_objects(bpf, tmp_path, monkeypatch):  # bpf: root, to mount
    """Compiling still works when the object cache cannot be written, and no temporary file stays behind."""
    mount = tmp_path / "cache"
    mount.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4k", "tmpfs", str(mount)], check=True)
    try:
        monkeypatch.setenv("PYNETMON_CACHE_DIR", str(mount))
        source = ('#include <linux/bpf.h>\n#include <bpf/bpf_helpers.h>\n'
                  'SEC("tc") int full_cache(struct __sk_buff *s) { return s->len; }\n'
                  'char LICENSE[] SEC("license") = "GPL";\n')
        data = compile_c(source, use_cache=True)
        assert data.startswith(b"\x7fELF") and len(data) > 4096  # larger than the disk
        assert list(mount.iterdir()) == []
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=True)

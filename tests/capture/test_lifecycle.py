"""Settings changed while running, `off`, bad input, full disks, and cleanup on every exit path."""
from __future__ import annotations

import contextlib
import os
import subprocess
import threading
import time

import pytest

from pynetmon.capture import PacketCapture, PcapWriteError
from pynetmon.capture.capture import compile_filter
from pynetmon.capture.dataplane import Dataplane
from pynetmon.errors import BPFError, ConfigError, Error, FilterError, InterfaceNotFoundError
from pynetmon.link import tc_programs

from .helpers import ping, read_pcap, send_udp, udp_payloads


def attached(host) -> dict[str, int]:
    return {d: len(tc_programs("eth0", d, netns=host.netns)) for d in ("ingress", "egress")}


def wait_for(predicate, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return predicate()


def test_filter_snaplen_and_direction_change_without_a_gap(quiet_hosts, tmp_path):
    """A numbered UDP stream runs while filter, snaplen and direction change: every datagram is in the file
    exactly once, in order, and each record has the snaplen that held when it was captured."""
    a, b = quiet_hosts
    payloads = udp_payloads(3000, b"seq", size=300)
    cap = PacketCapture("live", filter="udp port 7100", snaplen=200, dump=tmp_path / "x.pcap")
    cap.attach("eth0", netns=a.netns)
    done = threading.Event()

    def sender():
        sock = a.socket()
        with sock:
            for payload in payloads:
                sock.sendto(payload, (b.ip, 7100))
                time.sleep(0.0002)
        done.set()

    thread = threading.Thread(target=sender)
    thread.start()
    try:
        changes = [{"filter": "udp port 7100 or icmp"}, {"snaplen": 80}, {"capture": "egress"},
                   {"filter": "udp", "snaplen": 150}, {"capture": "bidirectional"}]
        for change in changes:
            time.sleep(0.05)
            cap.update(**change)
    finally:
        thread.join()
    cap.detach()
    assert done.is_set()
    records = read_pcap(tmp_path / "x.pcap").packets
    seqs = [int(r.data[42 + 4:42 + 10]) for r in records if r.data[42:45] == b"seq"]
    assert seqs == list(range(len(payloads)))  # none lost, none twice, in order
    caplens = [r.caplen for r in records]
    assert set(caplens) <= {200, 80, 150}
    assert 80 in caplens  # the changes happened while packets flowed
    # each snaplen holds for one contiguous run: 200, then 80, then 150
    runs = [c for i, c in enumerate(caplens) if i == 0 or caplens[i - 1] != c]
    assert runs == [c for c in (200, 80, 150) if c in caplens]
    assert read_pcap(tmp_path / "x.pcap").snaplen == 200  # the largest snaplen the file holds
    assert cap.stats()["dropped"] == 0


def test_raising_the_snaplen_rewrites_the_file_header(quiet_hosts, tmp_path):
    a, b = quiet_hosts
    with PacketCapture("snap", filter="udp", snaplen=64, dump=tmp_path / "x.pcap") as cap:
        cap.attach("eth0", netns=a.netns)
        send_udp(a, b.ip, 7000, udp_payloads(2, b"small", 500))
        cap.snaplen = 300
        send_udp(a, b.ip, 7000, udp_payloads(2, b"large", 500))
    pcap = read_pcap(tmp_path / "x.pcap")
    assert [p.caplen for p in pcap.packets] == [64, 64, 300, 300]
    assert pcap.snaplen == 300
    assert subprocess.run(["tcpdump", "-r", str(tmp_path / "x.pcap")], check=False, capture_output=True).returncode == 0


def test_off_captures_nothing_and_detaches(quiet_hosts, tmp_path):
    a, b = quiet_hosts
    with PacketCapture("off", capture="off", filter="all", dump=tmp_path / "x.pcap") as cap:
        cap.attach("eth0", netns=a.netns)
        assert attached(a) == {"ingress": 0, "egress": 0}
        ping(a, b.ip, 2)
        cap.capture = "ingress"
        assert attached(a) == {"ingress": 1, "egress": 0}
        ping(a, b.ip, 2)  # two replies come in
        cap.capture = "off"
        assert attached(a) == {"ingress": 0, "egress": 0}
        ping(a, b.ip, 2)
        assert cap.stats()["capture"] == "off"
    packets = read_pcap(tmp_path / "x.pcap").packets
    assert len(packets) == 2
    assert all(p.data[34] == 0 for p in packets)  # ICMP echo replies only
    assert attached(a) == {"ingress": 0, "egress": 0}


def test_default_filter_captures_nothing(quiet_hosts, tmp_path):
    a, b = quiet_hosts
    with PacketCapture("default", dump=tmp_path / "x.pcap") as cap:
        cap.attach("eth0", netns=a.netns)
        ping(a, b.ip, 2)
        stats = cap.stats()
    assert stats["seen"] >= 4 and stats["matched"] == stats["captured"] == 0
    assert read_pcap(tmp_path / "x.pcap").packets == []


def test_bad_filter_is_refused_and_nothing_is_attached(quiet_hosts, tmp_path):
    a, _ = quiet_hosts
    with pytest.raises(FilterError, match=r"filter 'tcp prot 80': .*syntax error"):
        PacketCapture("bad", filter="tcp prot 80", dump=tmp_path / "x.pcap")
    assert not (tmp_path / "x.pcap").exists()
    assert attached(a) == {"ingress": 0, "egress": 0}


def test_bad_filter_while_running_keeps_the_old_one(quiet_hosts, tmp_path):
    a, b = quiet_hosts
    with PacketCapture("keep", filter="icmp", dump=tmp_path / "x.pcap") as cap:
        cap.attach("eth0", netns=a.netns)
        with pytest.raises(FilterError, match="udp port"):
            cap.filter = "udp port"
        with pytest.raises(ConfigError, match="snaplen: must be an integer"):
            cap.update(filter="udp", snaplen=0)
        assert cap.filter == "icmp"
        ping(a, b.ip, 2)
    assert len(read_pcap(tmp_path / "x.pcap").packets) == 4


def test_bad_options_name_the_field():
    with pytest.raises(ConfigError) as info:
        PacketCapture("x", capture="both", snaplen=0, dump="/tmp/never", ring_bytes=1000)
    fields = [path for path, _ in info.value.problems]
    assert fields == ["capture", "snaplen", "ring_bytes"]
    with pytest.raises(ConfigError, match="dump: a local capture needs a file"):
        PacketCapture("x")
    with pytest.raises(ConfigError, match="max_packets: must be a positive integer or None, not 0"):
        PacketCapture("x", dump="/tmp/never", max_packets=0)


def test_unwritable_dump_path_fails_before_anything_is_attached(quiet_hosts, tmp_path):
    a, _ = quiet_hosts
    target = tmp_path / "missing-dir" / "x"
    with pytest.raises(PcapWriteError, match=r"cannot create pcap file .*missing-dir/x.pcap.*No such file") as info:
        PacketCapture("unwritable", filter="all", dump=target)
    assert isinstance(info.value, OSError) and info.value.errno == 2
    assert attached(a) == {"ingress": 0, "egress": 0}


def test_full_disk_stops_the_capture_and_reports_it(quiet_hosts, tmp_path):
    """A 64 KiB tmpfs fills up: the capture stops by itself, detaches, and says why; the host process and
    its other threads go on; what was written before is a readable file."""
    a, b = quiet_hosts
    mount = tmp_path / "small"
    mount.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mount)], check=True)
    cap = None
    try:
        cap = PacketCapture("full", filter="udp", dump=mount / "x.pcap", flush_interval=0.05)
        cap.attach("eth0", netns=a.netns)
        send_udp(a, b.ip, 7000, udp_payloads(200, b"fill", 1000))  # 200 KB
        assert wait_for(lambda: cap.error is not None)
        stats = cap.stats()
        assert "No space left on device" in stats["error"] and str(mount / "x.pcap") in stats["error"]
        assert not stats["running"]
        assert wait_for(lambda: attached(a) == {"ingress": 0, "egress": 0})
        with pytest.raises(Error, match="stopped after an error"):
            cap.attach("eth0", netns=b.netns)
        cap.detach()  # nothing left to flush: does not raise again
        stats = cap.stats()
        assert stats["captured"] > 0 and stats["dropped_user"] > 0
        assert stats["delivered"] * 1058 < 64 * 1024
    finally:
        if cap is not None:
            with contextlib.suppress(PcapWriteError):
                cap.close()
        subprocess.run(["umount", "-l", str(mount)], check=True)


def test_interface_that_does_not_exist(quiet_hosts, tmp_path):
    a, _ = quiet_hosts
    with PacketCapture("noif", filter="all", dump=tmp_path / "x.pcap") as cap:
        with pytest.raises(InterfaceNotFoundError, match="nope0"):
            cap.attach("nope0", netns=a.netns)
        assert cap.interfaces == []
        cap.attach("eth0", netns=a.netns)
        assert attached(a) == {"ingress": 1, "egress": 1}


def test_exception_inside_with_block_detaches_and_closes(quiet_hosts, tmp_path):
    a, b = quiet_hosts
    with pytest.raises(RuntimeError), PacketCapture("exc", filter="icmp", dump=tmp_path / "x.pcap") as cap:
        cap.attach("eth0", netns=a.netns)
        ping(a, b.ip, 1)
        raise RuntimeError("the host program fails")
    assert attached(a) == {"ingress": 0, "egress": 0}
    assert len(read_pcap(tmp_path / "x.pcap").packets) == 2
    with pytest.raises(Error, match="detached"):
        cap.filter = "udp"
    cap.detach()  # idempotent


def test_existing_file_is_overwritten_and_file_objects_are_not_closed(quiet_hosts, tmp_path):
    a, b = quiet_hosts
    path = tmp_path / "x.pcap"
    path.write_bytes(b"old contents " * 1000)
    with PacketCapture("over", filter="icmp", dump=path) as cap:
        cap.attach("eth0", netns=a.netns)
        ping(a, b.ip, 1)
    assert len(read_pcap(path).packets) == 2
    with open(tmp_path / "y.pcap", "wb") as f:
        with PacketCapture("fobj", filter="icmp", dump=f) as cap:
            cap.attach("eth0", netns=a.netns)
            ping(a, b.ip, 1)
        assert not f.closed
    assert len(read_pcap(tmp_path / "y.pcap").packets) == 2


def test_killed_process_leaves_nothing_attached(quiet_hosts, tmp_path):
    """tcx links belong to the process's descriptors: SIGKILL (no cleanup code runs) detaches too."""
    a, _ = quiet_hosts
    proc = subprocess.Popen(
        [os.sys.executable, "-c",
         ("import sys, time; from pynetmon.capture import PacketCapture\n"
         f"cap = PacketCapture('k', filter='all', dump={str(tmp_path / 'k')!r})\n"
         f"cap.attach('eth0', netns={a.netns!r}); print('attached', flush=True); time.sleep(60)")],
        stdout=subprocess.PIPE, text=True, cwd=os.path.dirname(os.path.dirname(os.path.dirname(__file__))))
    try:
        assert proc.stdout.readline().strip() == "attached"
        assert attached(a) == {"ingress": 1, "egress": 1}
    finally:
        proc.kill()
        proc.wait()
    assert wait_for(lambda: attached(a) == {"ingress": 0, "egress": 0})


def test_failed_attach_in_the_root_namespace_keeps_a_namesake_in_another(quiet_hosts, tmp_path):
    a, _ = quiet_hosts
    a.run("ip", "link", "add", "pnmdummy0", "type", "veth", "peer", "name", "pnmdummy1")  # in a's netns only
    a.run("ip", "link", "set", "pnmdummy0", "up")
    with PacketCapture("namesake", filter="all", dump=tmp_path / "x.pcap") as cap:
        cap.attach("pnmdummy0", netns=a.netns)
        with pytest.raises(InterfaceNotFoundError, match="pnmdummy0"):
            cap.attach("pnmdummy0")  # the root namespace has none
        assert cap.interfaces == [f"pnmdummy0@{a.netns}"]
        assert [len(tc_programs("pnmdummy0", d, netns=a.netns)) for d in ("ingress", "egress")] == [1, 1]


def test_direction_change_that_cannot_attach_changes_nothing(quiet_hosts, tmp_path):
    """One of the capture's interfaces vanished: ingress → bidirectional (with a new filter) cannot attach
    there. The egress hook already put on the other interface comes off again, `capture` and `filter`
    keep their values, the error names the interface, and the ingress capture goes on."""
    a, b = quiet_hosts
    a.run("ip", "link", "add", "pnmgone0", "type", "veth", "peer", "name", "pnmgone1")
    a.run("ip", "link", "set", "pnmgone0", "up")
    with PacketCapture("dirs", capture="ingress", filter="udp", dump=tmp_path / "x.pcap") as cap:
        cap.attach("eth0", netns=a.netns)  # first: its egress hook is attached before the failure
        cap.attach("pnmgone0", netns=a.netns)
        a.run("ip", "link", "del", "pnmgone0")
        with pytest.raises(InterfaceNotFoundError, match="pnmgone0") as info:
            cap.update(capture="bidirectional", filter="udp port 7000")
        assert "capture 'dirs' is unchanged: still 'ingress'" in info.value.__notes__
        assert (cap.capture, cap.filter) == ("ingress", "udp")
        assert attached(a) == {"ingress": 1, "egress": 0}
        send_udp(a, b.ip, 7001, udp_payloads(2, b"out"))   # egress: not captured
        send_udp(b, a.ip, 7001, udp_payloads(3, b"in"))    # ingress, not port 7000: the old filter runs
    packets = read_pcap(tmp_path / "x.pcap").packets
    assert [p.data[42:44] for p in packets] == [b"in"] * 3


def test_failed_filter_swap_raises_its_own_error_when_undoing_fails_too(quiet_hosts):
    """Dataplane.install swaps the filter on x0, then on y0, which fails; undoing x0 fails as well. The
    error raised is y0's, with x0's failure noted on it, not the undo's error hiding it. (The interfaces
    are deleted right before y0's swap, so both failures are the kernel's own: ENOLINK on a severed tcx
    link.)"""
    a, _ = quiet_hosts
    for name in ("pnmx", "pnmy"):
        a.run("ip", "link", "add", f"{name}0", "type", "veth", "peer", "name", f"{name}1")
        a.run("ip", "link", "set", f"{name}0", "up")
    dp = Dataplane(compile_filter("udp"), ring_bytes=1 << 16, mechanism="tcx")
    new = dp.build(compile_filter("tcp"))
    try:
        dp.attach("pnmx0", "ingress", a.netns)
        dp.attach("pnmy0", "ingress", a.netns)
        second = dp.links[("pnmy0", a.netns, "ingress")]
        real_update, raised = second.update, []

        def delete_both_then_update(program):
            a.run("ip", "link", "del", "pnmx0")
            a.run("ip", "link", "del", "pnmy0")
            try:
                real_update(program)
            except Exception as exc:
                raised.append(exc)
                raise

        second.update = delete_both_then_update
        with pytest.raises(BPFError) as info:
            dp.install(new)
        assert raised and info.value is raised[0] and "pnmy0" in str(info.value)
        notes = "\n".join(info.value.__notes__)
        assert "restoring the previous filter on pnmx0 ingress failed" in notes and "pnmx0" in notes
    finally:
        new.close()
        dp.close()

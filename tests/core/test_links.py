"""Attaching to the test hosts: packets really counted, nothing left behind after detach or after the owning
process is killed, and never a qdisc, filter or program that pynetmon did not create removed."""
from __future__ import annotations

import os
import signal
import struct
import subprocess
import sys
import time
from pathlib import Path

import pytest

import pynetmon
from pynetmon.link import attach_tc, attach_xdp, tc_programs, tcx_supported, xdp_programs
from pynetmon.testing import IN_CI
from pynetmon.toolchain import compile_c

REPO = Path(__file__).resolve().parents[2]
PORT = 5555
SLACK = 8  # IPv6 ND/MLD chatter of freshly created interfaces may add a few packets to "count all" programs


def exchange(sender, receiver, count: int) -> None:
    """`sender` sends `count` UDP datagrams to `receiver`, which receives them all: once this returns,
    every packet has passed both hosts' TC and XDP hooks."""
    sink = receiver.socket()
    try:
        sink.bind((receiver.ip, PORT))
        sink.settimeout(10)
        assert sender.send_udp(receiver.ip, PORT, count) == count
        for _ in range(count):
            sink.recv(2048)
    finally:
        sink.close()


def recorded(maptypes, host) -> int:
    """Packets the `record` program saw with `host`'s MAC as destination (it keys by the first 4 bytes)."""
    key = struct.unpack("<I", bytes.fromhex(host.mac.replace(":", ""))[:4])[0]
    return maptypes.maps["hash_int"].get(key, 0)


def counted(counter_object, direction: int) -> int:
    return sum(v["packets"] for v in counter_object.maps["counters"][direction])


def clsact_state(host) -> tuple[str, str, str]:
    """`tc`'s view: (qdiscs, ingress filters, egress filters) of the host's eth0."""
    show = [host.run("tc", *args, "dev", "eth0", *extra).stdout
            for args, extra in ((("qdisc", "show"), ()), (("filter", "show"), ("ingress",)),
                                (("filter", "show"), ("egress",)))]
    return tuple(show)


@pytest.fixture
def tcx(bpf) -> None:
    """Needs tcx links. Probed only once BPF is known usable (unprivileged, the probe says "no tcx" too), and
    skipped only on a kernel too old to have them: CI, or a 6.6+ kernel without them, fails loudly."""
    if tcx_supported():
        return
    release = tuple(int(part) for part in os.uname().release.split(".")[:2] if part.isdigit())
    if IN_CI or release >= (6, 6):
        pytest.fail(f"tcx links are missing on linux {os.uname().release} (expected from 6.6 on)")
    pytest.skip(f"kernel without tcx links (linux {os.uname().release} < 6.6)")


requires_tcx = pytest.mark.usefixtures("tcx")


# ---- tcx --------------------------------------------------------------------------------------------------

@requires_tcx
def test_tcx_ingress_counts_exactly_and_detaches(hosts, maptypes):
    a, b = hosts
    prog = maptypes.programs["record"]
    with attach_tc(prog, "eth0", "ingress", netns=b.netns) as link:
        assert link.kind == "tcx"
        assert tc_programs("eth0", "ingress", netns=b.netns) == [prog.id]
        assert tc_programs("eth0", "egress", netns=b.netns) == []
        exchange(a, b, 25)
        assert recorded(maptypes, b) == 25
    assert not link.attached
    assert tc_programs("eth0", "ingress", netns=b.netns) == []
    exchange(a, b, 5)
    assert recorded(maptypes, b) == 25  # detached: not counted any more
    link.detach()  # idempotent


@requires_tcx
def test_tcx_egress(hosts, counter_object):
    a, b = hosts
    with attach_tc(counter_object.programs["count_egress"], "eth0", "egress", netns=a.netns):
        exchange(a, b, 30)
    assert 30 <= counted(counter_object, 1) <= 30 + SLACK
    assert tc_programs("eth0", "egress", netns=a.netns) == []


@requires_tcx
def test_tcx_update_swaps_the_program_in_place(hosts, counter_object):
    a, b = hosts
    ingress, egress = counter_object.programs["count_ingress"], counter_object.programs["count_egress"]
    with attach_tc(ingress, "eth0", "ingress", netns=b.netns) as link:
        exchange(a, b, 10)
        link.update(egress)  # counts into the other slot from now on
        assert tc_programs("eth0", "ingress", netns=b.netns) == [egress.id] and link.prog_id == egress.id
        exchange(a, b, 20)
    assert 10 <= counted(counter_object, 0) <= 10 + SLACK
    assert 20 <= counted(counter_object, 1) <= 20 + SLACK


@requires_tcx
def test_detaching_one_tcx_link_leaves_the_others(hosts, counter_object, maptypes):
    _, b = hosts
    theirs = attach_tc(maptypes.programs["record"], "eth0", "ingress", netns=b.netns)
    try:
        ours = attach_tc(counter_object.programs["count_ingress"], "eth0", "ingress", netns=b.netns)
        assert sorted(tc_programs("eth0", "ingress", netns=b.netns)) == \
            sorted([maptypes.programs["record"].id, counter_object.programs["count_ingress"].id])
        ours.detach()
        assert tc_programs("eth0", "ingress", netns=b.netns) == [maptypes.programs["record"].id]
    finally:
        theirs.detach()


@requires_tcx
def test_tcx_keeps_a_foreign_clsact_qdisc_and_filter(hosts, counter_object):
    _, b = hosts
    foreign_filter(b)
    before = clsact_state(b)
    with attach_tc(counter_object.programs["count_ingress"], "eth0", "ingress", netns=b.netns):
        pass
    assert clsact_state(b) == before


CHILD = """
import sys, time
import pynetmon
from pynetmon.link import attach_tc, attach_xdp
netns = sys.argv[1]
obj = pynetmon.BPFObject.from_package("counter").load()
links = [attach_tc(obj.programs["count_ingress"], "eth0", "ingress", netns=netns, mechanism="tcx"),
         attach_tc(obj.programs["count_egress"], "eth0", "egress", netns=netns, mechanism="tcx"),
         attach_xdp(obj.programs["count_xdp"], "eth0", mode="skb", netns=netns)]
print(*(link.prog_id for link in links), flush=True)
time.sleep(600)
"""


@requires_tcx
def test_nothing_stays_attached_when_the_owner_is_killed(hosts):
    _, b = hosts
    child = subprocess.Popen([sys.executable, "-c", CHILD, b.netns], stdout=subprocess.PIPE, text=True,
                             env={**os.environ, "PYTHONPATH": str(REPO)})
    try:
        ready = child.stdout.readline().split()
        assert len(ready) == 3, f"child did not attach (exit status {child.poll()})"
        ingress, egress, xdp = map(int, ready)
        assert tc_programs("eth0", "ingress", netns=b.netns) == [ingress]
        assert tc_programs("eth0", "egress", netns=b.netns) == [egress]
        assert xdp_programs("eth0", netns=b.netns)["skb"] == xdp
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
    # The links die with the last reference to their file; allow the kernel's deferred release to run.
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and leftovers(b):
        time.sleep(0.05)
    assert leftovers(b) == []


def leftovers(host) -> list[str]:
    """Every program still attached to the host's eth0, as "hook=id"."""
    found = [f"tcx-{d}={i}" for d in ("ingress", "egress") for i in tc_programs("eth0", d, netns=host.netns)]
    return found + [f"xdp-{mode}={i}" for mode, i in xdp_programs("eth0", netns=host.netns).items() if i]


# ---- clsact fallback -------------------------------------------------------------------------------------

def foreign_filter(host) -> None:
    """Someone else's clsact qdisc with a bpf filter on ingress (created by `tc`, not by pynetmon)."""
    host.run("tc", "qdisc", "add", "dev", "eth0", "clsact")
    host.run("tc", "filter", "add", "dev", "eth0", "ingress", "prio", "7", "bpf", "da",
             "obj", str(REPO / "pynetmon" / "data" / "counter.bpf.o"), "sec", "tc")


def test_clsact_counts_and_removes_what_it_created(hosts, maptypes):
    a, b = hosts
    before = clsact_state(b)
    assert "clsact" not in before[0]
    with attach_tc(maptypes.programs["record"], "eth0", "ingress", mechanism="clsact", netns=b.netns) as link:
        assert link.kind == "clsact" and link.created_qdisc
        qdiscs, ingress, _ = clsact_state(b)
        assert "clsact" in qdiscs and "record" in ingress
        assert tc_programs("eth0", "ingress", netns=b.netns) == []  # not a tcx attachment
        exchange(a, b, 12)
        assert recorded(maptypes, b) == 12
    assert clsact_state(b) == before


@pytest.mark.parametrize("mechanism", ["clsact", "tcx"])
def test_detach_after_the_interface_was_deleted(hosts, counter_object, mechanism, request):
    _, b = hosts
    if mechanism == "tcx":
        request.getfixturevalue("tcx")
    link = attach_tc(counter_object.programs["count_ingress"], "eth0", "ingress", mechanism=mechanism,
                     netns=b.netns)
    b.run("ip", "link", "del", "eth0")
    link.detach()  # the qdisc and the filter went with the interface: nothing to do, nothing raised
    assert not link.attached


def test_clsact_never_removes_a_foreign_qdisc_or_filter(hosts, counter_object):
    a, b = hosts
    foreign_filter(b)
    before = clsact_state(b)
    assert "pref 7" in before[1]
    link = attach_tc(counter_object.programs["count_egress"], "eth0", "ingress", mechanism="clsact",
                     netns=b.netns)
    assert not link.created_qdisc
    assert "pref 7" in clsact_state(b)[1] and "count_egress" in clsact_state(b)[1]
    exchange(a, b, 10)
    link.detach()
    assert clsact_state(b) == before
    # The foreign filter is still at work: it counts into its own (tc-loaded) map, and ours saw the traffic.
    assert 10 <= counted(counter_object, 1) <= 10 + SLACK


def test_clsact_keeps_its_qdisc_when_someone_else_added_a_filter(hosts, counter_object):
    _, b = hosts
    link = attach_tc(counter_object.programs["count_ingress"], "eth0", "egress", mechanism="clsact",
                     netns=b.netns)
    assert link.created_qdisc
    b.run("tc", "filter", "add", "dev", "eth0", "ingress", "prio", "9", "bpf", "da",
          "obj", str(REPO / "pynetmon" / "data" / "counter.bpf.o"), "sec", "tc")
    link.detach()
    qdiscs, ingress, egress = clsact_state(b)
    assert "clsact" in qdiscs and "pref 9" in ingress and egress.strip() == ""


def test_clsact_update_replaces_the_filter_program(hosts, counter_object):
    a, b = hosts
    with attach_tc(counter_object.programs["count_ingress"], "eth0", "ingress", mechanism="clsact",
                   netns=b.netns) as link:
        link.update(counter_object.programs["count_egress"])
        assert "count_egress" in clsact_state(b)[1] and "count_ingress" not in clsact_state(b)[1]
        exchange(a, b, 10)
    # before the update only IPv6 chatter can have reached count_ingress; afterwards everything is count_egress's
    assert counted(counter_object, 0) <= SLACK and 10 <= counted(counter_object, 1) <= 10 + SLACK


# ---- XDP -------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("mode, slot", [("skb", "skb"), ("native", "drv"), ("auto", "drv")])
def test_xdp_counts_and_detaches(hosts, counter_object, mode, slot):
    a, b = hosts
    prog = counter_object.programs["count_xdp"]
    with attach_xdp(prog, "eth0", mode=mode, netns=b.netns) as link:
        assert link.kind == "xdp"
        assert xdp_programs("eth0", netns=b.netns)[slot] == prog.id
        exchange(a, b, 20)
    assert 20 <= counted(counter_object, 0) <= 20 + SLACK
    assert xdp_programs("eth0", netns=b.netns) == {"drv": 0, "skb": 0, "hw": 0}


XDP_PASS = """#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
SEC("xdp") int just_pass(struct xdp_md *ctx) { return XDP_PASS; }
char LICENSE[] SEC("license") = "GPL";
"""


def test_xdp_update_swaps_and_a_second_attach_is_refused(hosts, counter_object):
    a, b = hosts
    counting = counter_object.programs["count_xdp"]
    with pynetmon.BPFObject(compile_c(XDP_PASS, filename="pass.bpf.c")).load() as other, \
            attach_xdp(counting, "eth0", mode="skb", netns=b.netns) as link:
        with pytest.raises(pynetmon.BPFError) as info:
            attach_xdp(other.programs["just_pass"], "eth0", mode="skb", netns=b.netns)
        assert "eth0" in str(info.value) and "just_pass" in str(info.value)
        assert xdp_programs("eth0", netns=b.netns)["skb"] == counting.id
        link.update(other.programs["just_pass"])
        assert xdp_programs("eth0", netns=b.netns)["skb"] == other.programs["just_pass"].id
        exchange(a, b, 10)
        assert counted(counter_object, 0) <= SLACK  # only chatter from before the update: 10 more were not counted
    assert xdp_programs("eth0", netns=b.netns)["skb"] == 0

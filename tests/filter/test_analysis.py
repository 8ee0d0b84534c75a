"""The filter package's analysis of classic BPF programs (what the capture dataplane asks of a filter)."""
from __future__ import annotations

import re

import pytest

from pynetmon.capture.dataplane import template_source
from pynetmon.filter import compile_cbpf, compile_cbpf_live
from pynetmon.filter.analysis import INDIRECT_REACH, MAX_WINDOW, constant_verdict, filter_window
from pynetmon.filter.cbpf import MAX_SNAPLEN


@pytest.mark.parametrize(("expr", "window"), [
    ("all", 0),
    ("len > 100", 0),
    ("ip proto 17", 24),   # ethertype at 12, IPv4 protocol at 23
    ("ether[100] = 1", 101),
    ("tcp port 80", None),  # variable offsets: the indirect reach
])
def test_filter_window(expr, window):
    insns = compile_cbpf(expr)
    got = filter_window(insns)
    if window is None:
        assert INDIRECT_REACH < got <= MAX_WINDOW
    else:
        assert got == window or (window and got == max(window, 16))


def test_filter_window_is_capped():
    assert filter_window(compile_cbpf("ether[65534] = 1")) == MAX_WINDOW
    # a load that can never be inside the window is out of bounds whatever is copied: nothing to copy for it
    assert filter_window(compile_cbpf("ether[70000] = 1")) == 0


def test_ancillary_loads_widen_no_window():
    """[type], [vlanp], [vlan_tci] read skb metadata: `inbound` copies nothing, `vlan` only the bytes of an
    in-band tag's EtherType."""
    assert filter_window(compile_cbpf_live("inbound")) == 0
    assert filter_window(compile_cbpf_live("vlan")) == 16
    assert filter_window(compile_cbpf_live("vlan 100")) == 16


def test_constant_verdicts_need_no_compiler():
    assert constant_verdict(compile_cbpf("all")) == 262144
    assert constant_verdict([(6, 0, 0, 0)]) == 0
    assert constant_verdict(compile_cbpf("udp")) is None


def test_window_and_caplen_limits_match_capture_h():
    """The C side (bpf/capture.h, as shipped) and the Python side name the same limits."""
    _, header = template_source()
    defines = dict(re.findall(r"^#define (CAPTURE_MAX_\w+) (\d+)$", header, re.MULTILINE))
    assert int(defines["CAPTURE_MAX_WINDOW"]) == MAX_WINDOW
    assert int(defines["CAPTURE_MAX_CAPLEN"]) == MAX_SNAPLEN

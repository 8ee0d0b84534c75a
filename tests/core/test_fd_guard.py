"""Closing an object while another thread reads one of its maps (issue 11 §6): the read either sees that
map or raises pynetmon.Error, never another map's data through a reused descriptor number."""
from __future__ import annotations

import errno
import os
import threading

import pytest

import pynetmon
from pynetmon.btf_codec import IntCodec


def test_a_map_of_a_closed_object_raises_pynetmon_error(bpf):
    obj = pynetmon.BPFObject.from_package("maptypes").load()
    m = obj.maps["array_int"]
    m[1] = 5
    obj.close()
    with pytest.raises(pynetmon.Error) as info:
        _ = m[1]
    assert isinstance(info.value, pynetmon.ClosedError) and info.value.errno == errno.EBADF


def test_the_number_of_a_closed_map_is_not_reused_while_the_map_lives(bpf):
    obj = pynetmon.BPFObject.from_package("maptypes").load()
    m = obj.maps["array_int"]
    number = m.fd
    obj.close()
    # New maps take the lowest free numbers: the closed map's number must not be among them.
    fresh = [pynetmon.Map.create("array", 4, 8, 1) for _ in range(8)]
    try:
        assert number not in [f.fd for f in fresh]
        assert os.readlink(f"/proc/self/fd/{number}") == os.devnull  # held, pointing nowhere
    finally:
        for f in fresh:
            f.close()
    del m  # the last reference: now the number is free
    obj.maps = {}


def test_reads_racing_close_never_see_another_map(bpf):
    seen_wrong, errors, reads = [], [], [0]
    for round_ in range(60):
        src = pynetmon.Map.create("array", 4, 8, 1, key_codec=IntCodec(4), value_codec=IntCodec(8))
        src[0] = 1
        go = threading.Event()

        def reader(m=src, go=go):
            reads[0] += m[0] == 1  # one read before the close for sure, then race it
            go.set()
            while True:
                try:
                    v = m[0]
                except pynetmon.Error:
                    errors.append(1)
                    return
                reads[0] += 1
                if v != 1:
                    seen_wrong.append(v)
                    return

        t = threading.Thread(target=reader)
        t.start()
        go.wait()
        src.close()
        others = [pynetmon.Map.create("array", 4, 8, 1, key_codec=IntCodec(4), value_codec=IntCodec(8))
                  for _ in range(4)]
        for o in others:
            o[0] = 2 + round_
        t.join()
        for o in others:
            o.close()
    assert not seen_wrong and len(errors) == 60 and reads[0] > 0

"""Pure functions of the map-sharing and tail-call support: the BCC declarations' scopes, the pairing rule,
pin paths, and the ELF reader of tail-call targets on hostile input."""
from __future__ import annotations

import functools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pynetmon import ConfigError
from pynetmon.dynmon.dialect import map_declarations
from pynetmon.dynmon.sharing import LIBBPF, SELF, MapScope, check_pin_path, shares
from pynetmon.dynmon.tailcalls import tail_call_targets


def test_declarations_carry_their_scope():
    code = """BPF_TABLE_SHARED("array", int, u64, A, 1);
BPF_TABLE("extern", int, u64, B, 1);
BPF_TABLE_PINNED("hash", u32, u64, C, 16, "/sys/fs/bpf/c");
BPF_HASH_PUBLIC(D);
BPF_QUEUESTACK_PINNED("stack", S, u32, 8, 0, "/sys/fs/bpf/s");
BPF_QUEUESTACK("extern", Q, u32, 8);
BPF_ARRAY(E);
"""
    got = {d.name: (d.scope, d.type, d.pin) for d in map_declarations(code)}
    assert got == {"A": ("shared", "array", ""), "B": ("extern", "hash", ""), "C": ("pinned", "hash", "/sys/fs/bpf/c"),
                   "D": ("public", "hash", ""), "S": ("pinned", "stack", "/sys/fs/bpf/s"),
                   "Q": ("extern", "queue", ""), "E": ("local", "array", "")}
    assert map_declarations('SEC("tc") int f(void *c) { return 0; }') == ()


@pytest.mark.parametrize("code, words", [
    ('BPF_TABLE_PINNED("hash", u32, u64, C, 16, path);', "must be a string literal"),
    ('BPF_TABLE_SHARED("extern", u32, u64, C, 16);', "cannot be shared itself"),
])
def test_bad_declarations_are_named(code, words):
    with pytest.raises(ConfigError, match=words):
        map_declarations(code)


SCOPES = ["local", "shared", "public", "pinned", "extern", "libbpf"]


@given(st.sampled_from(SCOPES), st.sampled_from(SCOPES))
def test_sharing_is_symmetric_and_follows_bcc(mine, theirs):
    a, b = MapScope(mine), MapScope(theirs)
    assert shares(a, b) == shares(b, a)
    if "local" in (mine, theirs) or "pinned" in (mine, theirs):
        assert not shares(a, b)  # private maps; pinned ones meet through their path instead
    if {mine, theirs} <= {"shared", "public"}:
        assert not shares(a, b)  # two definitions, two maps (BCC)
    if mine == "extern" and theirs in ("shared", "public", "libbpf"):
        assert shares(a, b)
    assert shares(a, SELF)  # the same path rebuilt keeps every map
    assert shares(LIBBPF, LIBBPF)


@pytest.mark.parametrize("path", ["/sys/fs/bpf", "/sys/fs/bpfx/a", "/sys/fs/bpf//a", "/sys/fs/bpf/a/../b",
                                  "/sys/fs/bpf/" + "a/" * 6 + "b", "/sys/fs/bpf/a\nb", "/sys/fs/bpf/" + "x" * 230])
def test_pin_paths_are_checked(path):
    with pytest.raises(ConfigError):
        check_pin_path(path, "ingress-path.code")


def test_good_pin_path():
    assert check_pin_path("/sys/fs/bpf/mon/counts_1", "x") == "/sys/fs/bpf/mon/counts_1"


TAIL = """
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
int target(void *ctx);
struct { __uint(type, BPF_MAP_TYPE_PROG_ARRAY); __uint(max_entries, 2); __uint(key_size, 4);
         __array(values, int (void *)); } jumps SEC(".maps") = { .values = { [1] = (void *)&target } };
SEC("tc") int target(void *ctx) { return 0; }
SEC("tc") int entry(void *ctx) { bpf_tail_call(ctx, &jumps, 1); return 0; }
char LICENSE[] SEC("license") = "GPL";
"""


@functools.cache
def _tail_object() -> bytes:
    from pynetmon.toolchain import compile_c
    return compile_c(TAIL)


def test_tail_call_targets_of_a_real_object():
    assert tail_call_targets(_tail_object()) == {"target"}


@settings(max_examples=300)
@given(st.binary(max_size=512))
def test_tail_call_reader_survives_any_bytes(data):
    assert isinstance(tail_call_targets(data), frozenset)  # never raises
    assert isinstance(tail_call_targets(b"\x7fELF\x02\x01" + data), frozenset)


@settings(max_examples=300)
@given(st.data())
def test_tail_call_reader_survives_damaged_objects(data):
    image = bytearray(_tail_object())
    cut = data.draw(st.integers(0, len(image)))
    for _ in range(data.draw(st.integers(0, 8))):
        image[data.draw(st.integers(0, len(image) - 1))] = data.draw(st.integers(0, 255))
    assert isinstance(tail_call_targets(bytes(image[:cut])), frozenset)
    assert isinstance(tail_call_targets(bytes(image)), frozenset)

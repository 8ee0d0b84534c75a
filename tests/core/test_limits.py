"""Resource limits in the library: a BPF object's maps are checked from their specs before anything is
created (kernel memory per account and in total, ring buffer size, descriptors under RLIMIT_NOFILE), and
the charge is given back when the object is closed."""
from __future__ import annotations

import errno
import resource

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pynetmon import limits
from pynetmon.errors import ResourceLimitError
from pynetmon.object import BPFObject


@pytest.fixture
def restore_settings():
    before = (limits.settings.kernel_memory_total, limits.settings.max_ring_bytes, limits.settings.fd_reserve)
    yield
    limits.configure(kernel_memory_total=before[0], max_ring_bytes=before[1], fd_reserve=before[2])


def test_map_memory_formula():
    assert limits.map_memory("array", 4, 8, 1 << 30) == limits.MAP_OVERHEAD + (8 << 30)  # the 8 GiB
    assert limits.map_memory("array", 4, 12, 10) == limits.MAP_OVERHEAD + 10 * 16  # values rounded up to 8
    assert limits.map_memory("percpu_array", 4, 8, 10, ncpus=4) == limits.MAP_OVERHEAD + 10 * 8 * 4
    assert limits.map_memory("hash", 4, 8, 10) == limits.MAP_OVERHEAD + 10 * (8 + 8 + limits.HASH_ELEM_OVERHEAD)
    assert limits.map_memory("ringbuf", 0, 0, 1 << 20) == limits.MAP_OVERHEAD + (1 << 20)
    assert limits.map_memory("prog_array", 4, 4, 2) == limits.MAP_OVERHEAD + 16


@given(st.sampled_from(["array", "percpu_array", "hash", "percpu_hash", "lru_hash", "lpm_trie", "queue"]),
       st.integers(1, 64), st.integers(1, 4096), st.integers(1, 1 << 20), st.integers(1, 64))
def test_map_memory_grows_with_every_dimension(kind, key, value, entries, ncpus):
    base = limits.map_memory(kind, key, value, entries, ncpus)
    assert base >= entries * value
    assert limits.map_memory(kind, key, value, entries + 1, ncpus) > base
    assert limits.map_memory(kind, key, value + 8, entries, ncpus) > base
    assert limits.map_memory(kind, key, value, entries, ncpus + 1) >= base


def _counter(entries: int) -> BPFObject:
    obj = BPFObject.from_package("counter")
    obj.maps["counters"].set_max_entries(entries)
    return obj


def test_total_is_checked_before_loading(bpf, restore_settings):
    limits.configure(kernel_memory_total=64 << 20)
    used = limits.total_used()
    with _counter(1 << 30) as obj, pytest.raises(ResourceLimitError) as info:
        obj.load()
    err = info.value
    assert err.limit == "kernel memory in total" and err.errno == errno.ENOMEM
    assert "'counters'" in str(err) and "kernel_memory_total" in str(err)
    assert not obj.loaded and limits.total_used() == used  # nothing created, nothing charged
    with _counter(2) as obj:
        obj.load()
        assert limits.total_used() > used
    assert limits.total_used() == used  # closing gives the charge back


def test_account_limit_and_release(bpf):
    account = limits.MemoryAccount("monitor m", limit=1 << 20, option="--max-monitor-memory")
    with account:
        small = _counter(1024).load()
        charged = account.used
        assert charged >= 1024 * 16 * 2 > 0
        with pytest.raises(ResourceLimitError, match=r"monitor m.*kernel memory per monitor.*--max-monitor-memory"):
            _counter(1 << 20).load()
        assert account.used == charged
    small.close()
    assert account.used == 0


def test_parent_account_and_ring_size(bpf):
    daemon = limits.MemoryAccount("the daemon", limit=32 << 20, max_ring_bytes=1 << 20, ring_option="--ring")
    cube = limits.MemoryAccount("capture c", parent=daemon)
    obj = BPFObject.from_package("capture")
    try:
        with cube, pytest.raises(ResourceLimitError, match=r"ring buffer 'capture_ring'.*--ring") as info:
            obj.load()
        assert info.value.limit == "ring buffer size"
        obj.maps["capture_ring"].set_max_entries(1 << 20)
        with cube:
            obj.load()
        assert daemon.used == cube.used > 1 << 20
    finally:
        obj.close()
    assert daemon.used == cube.used == 0


def test_descriptors_are_checked_against_rlimit_nofile(bpf, restore_settings):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    in_use = limits.open_fds()
    limits.configure(fd_reserve=8)
    resource.setrlimit(resource.RLIMIT_NOFILE, (in_use + 10, hard))
    try:
        with BPFObject.from_package("maptypes") as obj, pytest.raises(ResourceLimitError) as info:
            obj.load()  # 13 maps: over what is left
        assert info.value.errno == errno.EMFILE and info.value.limit == "open files"
        assert "RLIMIT_NOFILE" in str(info.value)
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    assert limits.raise_fd_limit() == hard

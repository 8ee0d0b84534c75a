"""The two promises of the batched capture path: a packet on a quiet link still reaches the file while
the capture runs (the reader looks every `max_delay` and writes each batch at once, though the kernel
wakes it only per eighth of the ring), and under overload every matched packet is either in the file
or counted as dropped: captured + dropped = sent, the captured ones in order and whole."""
from __future__ import annotations

import io
import threading
import time

import dpkt
import pytest

from pynetmon.capture import PacketCapture
from pynetmon.errors import ConfigError

from .helpers import read_pcap, send_udp, udp_payloads


def _udp_payload(frame: bytes) -> bytes:
    return dpkt.ethernet.Ethernet(frame).data.data.data


def test_a_lone_packet_reaches_the_file_while_the_capture_runs(quiet_hosts, tmp_path):
    a, b = quiet_hosts
    path = tmp_path / "quiet.pcap"
    # No flush by the tick for an hour, a ring whose wakeup threshold (an eighth: 1 MiB) one packet never
    # reaches: only the bounded delay can bring the packet to the file before the capture ends.
    with PacketCapture("quiet", capture="ingress", filter="udp port 7101", dump=path, flush_interval=3600,
                       max_delay=0.1) as cap:
        cap.attach("eth0", netns=b.netns)
        send_udp(a, b.ip, 7101, [b"alone"])
        deadline = time.monotonic() + 10  # far beyond the bound: a failure means "never", not "late"
        while path.stat().st_size == 24 and time.monotonic() < deadline:
            time.sleep(0.01)
        (packet,) = read_pcap(path).packets  # read while the capture still runs
        assert _udp_payload(packet.data) == b"alone"
        assert cap.stats()["delivered"] == 1


def test_a_full_batch_is_written_at_once_not_after_max_delay(quiet_hosts, tmp_path):
    a, b = quiet_hosts
    path = tmp_path / "batch.pcap"
    sent = udp_payloads(40, b"batch", size=1000)  # 42 KB in a 64 KiB ring: crosses 8 KiB four times
    # A 64 KiB ring forces a wakeup each time 8 KiB more wait; max_delay (10 s) and the tick (an hour) would
    # bring the records much later: only the forced wakeups can have them in the file within seconds.
    with PacketCapture("batch", capture="ingress", filter="udp port 7103", dump=path, ring_bytes=1 << 16,
                       flush_interval=3600, max_delay=10) as cap:
        cap.attach("eth0", netns=b.netns)
        send_udp(a, b.ip, 7103, sent[:1])  # wakes the reader, which then lets a batch collect for 10 s
        time.sleep(0.5)
        send_udp(a, b.ip, 7103, sent[1:])
        deadline = time.monotonic() + 5
        while cap.stats()["delivered"] < 8 and time.monotonic() < deadline:
            time.sleep(0.01)
        delivered = cap.stats()["delivered"]
        assert delivered >= 8, f"only {delivered} of {len(sent)} packets written after 5 s"
        payloads = [_udp_payload(p.data) for p in read_pcap(path).packets]  # while the capture runs
        assert payloads == sent[:len(payloads)] and len(payloads) >= 8
    assert cap.stats()["dropped"] == 0 and cap.stats()["delivered"] == len(sent)


class _StalledFile(io.BytesIO):
    """A file object whose writes wait until released: the reader thread stops draining the ring."""

    def __init__(self):
        super().__init__()
        self.armed = False
        self.stalled = threading.Event()
        self.release = threading.Event()

    def write(self, data):
        if self.armed:
            self.stalled.set()
            self.release.wait(30)
        return super().write(data)


def test_overload_counts_every_packet_either_captured_or_dropped(quiet_hosts, tmp_path):
    a, b = quiet_hosts
    sent = udp_payloads(400, b"burst", size=1400)  # 400 x ~1.45 KB against a 4 KiB ring
    out = _StalledFile()
    with PacketCapture("overload", capture="ingress", filter="udp port 7102", dump=out, ring_bytes=4096) as cap:
        cap.attach("eth0", netns=b.netns)
        out.armed = True
        send_udp(a, b.ip, 7102, sent[:1])  # the reader takes it and then hangs in write()
        assert out.stalled.wait(10), "the reader never wrote"
        send_udp(a, b.ip, 7102, sent[1:])
        deadline = time.monotonic() + 10
        while cap.stats()["matched"] < len(sent) and time.monotonic() < deadline:
            time.sleep(0.01)
        out.release.set()
    stats = cap.stats()
    assert stats["matched"] == len(sent) and stats["errors"] == 0
    assert stats["dropped_kernel"] > 0, "the ring never filled: no overload to count"
    assert stats["captured"] + stats["dropped_kernel"] == len(sent)
    assert stats["delivered"] == stats["captured"] and stats["dropped_user"] == 0
    (tmp_path / "overload.pcap").write_bytes(out.getvalue())
    packets = read_pcap(tmp_path / "overload.pcap").packets
    payloads = [_udp_payload(p.data) for p in packets]
    assert len(payloads) == stats["captured"]
    assert payloads[0] == sent[0]
    positions = [sent.index(p) for p in payloads]  # each one sent, whole, and in order
    assert positions == sorted(set(positions))
    assert all(p.caplen == p.wirelen == len(p.data) for p in packets)


@pytest.mark.parametrize("bad", [0, -1, 11, "0.1", True])
def test_max_delay_is_checked(bad):
    with pytest.raises(ConfigError, match="max_delay"):
        PacketCapture("x", filter="udp", network_mode=True, max_delay=bad)

"""Pure parts of the capture: the pcap writer, the network buffer, the filter window, the clock offset."""
from __future__ import annotations

import io
import struct
import time

import pytest

from pynetmon.capture.clock import realtime_minus_tai_ns
from pynetmon.capture.dataplane import dataplane_source
from pynetmon.capture.pcap import PcapWriteError, PcapWriter, global_header, iter_records, record_header
from pynetmon.capture.stream import PacketBuffer
from pynetmon.errors import Error
from pynetmon.filter import compile_cbpf

from .helpers import dpkt_reader_packets, read_pcap


def test_writer_layout_nanoseconds_and_both_lengths(tmp_path):
    path = tmp_path / "w.pcap"
    with PcapWriter(path, snaplen=10) as w:
        w.write_packet(b"0123456789abcdef", ts_ns=1_700_000_000_123_456_789, wirelen=1000)
        w.write_packet(b"xyz", ts_ns=1_700_000_001_000_000_001)
    raw = path.read_bytes()
    assert raw[:24] == struct.pack("=IHHiIII", 0xA1B23C4D, 2, 4, 0, 0, 10, 1)
    assert raw[24:40] == struct.pack("=IIII", 1_700_000_000, 123_456_789, 10, 1000)
    pcap = read_pcap(path)
    assert [(p.ts_ns, p.caplen, p.wirelen, p.data) for p in pcap.packets] == [
        (1_700_000_000_123_456_789, 10, 1000, b"0123456789"),
        (1_700_000_001_000_000_001, 3, 3, b"xyz")]
    assert [data for _, data in dpkt_reader_packets(path)] == [b"0123456789", b"xyz"]
    assert w.packets == 2 and w.closed


def test_writer_buffers_until_flush_and_rewrites_a_raised_snaplen(tmp_path):
    path = tmp_path / "w.pcap"
    w = PcapWriter(path, snaplen=64, buffer_bytes=1 << 20)
    assert path.stat().st_size == 24  # the header is written at once
    w.write_records(record_header(1, 3, 3) + b"abc", 1)
    assert path.stat().st_size == 24  # buffered
    w.raise_snaplen(500)
    w.flush()
    assert path.stat().st_size == 24 + 19
    assert read_pcap(path).snaplen == 500
    w.close()


def test_writer_on_a_file_object_flushes_but_does_not_close():
    out = io.BytesIO()
    with PcapWriter(out, snaplen=100) as w:
        w.write_packet(b"hello", ts_ns=0)
    assert not out.closed
    assert out.getvalue()[:4] == struct.pack("=I", 0xA1B23C4D) and len(out.getvalue()) == 24 + 16 + 5


def test_writer_errors_name_the_file(tmp_path):
    with pytest.raises(PcapWriteError, match=r"cannot create pcap file '.*/nodir/x.pcap': No such file"):
        PcapWriter(tmp_path / "nodir" / "x.pcap", snaplen=100)
    with pytest.raises(PcapWriteError, match=r"cannot write pcap file '/dev/full': No space left on device"):
        PcapWriter("/dev/full", snaplen=100)
    with pytest.raises(ValueError, match="snaplen"):
        PcapWriter(tmp_path / "x", snaplen=0)


def test_iter_records_stops_at_a_partial_record():
    data = record_header(0, 2, 2) + b"ab" + record_header(0, 4, 9) + b"abcd" + record_header(0, 5, 5) + b"ab"
    assert list(iter_records(data)) == [(0, 18), (18, 38)]


def test_packet_buffer_keeps_whole_records_within_its_bound_and_counts_drops():
    records = b"".join(record_header(0, 10, 10) + bytes(10) for _ in range(10))  # 26 bytes each
    buf = PacketBuffer(100)
    assert buf.put(records, 10) == 7  # three fit
    assert (buf.delivered_packets, buf.dropped_packets, buf.pending_bytes) == (3, 7, 78)
    assert buf.put(records[:26], 1) == 1  # 78 + 26 > 100
    assert buf.get(0) == records[:78]
    assert buf.get(0) == b""  # nothing queued, not closed
    buf.put(records[:26], 1)
    buf.close()
    stream = buf.stream(snaplen=10, linktype=1)
    assert next(stream) == global_header(10, 1)
    assert next(stream) == records[:26]
    assert list(stream) == []  # closed and empty: the stream ends


def test_one_stream_at_a_time():
    buf = PacketBuffer(100)
    first = buf.stream(10, 1)
    next(first)
    with pytest.raises(Error, match="already being streamed"):
        next(buf.stream(10, 1))
    first.close()
    second = buf.stream(10, 1)
    assert next(second) == global_header(10, 1)


def test_dataplane_source_puts_the_filter_before_the_template():
    source = dataplane_source(compile_cbpf("udp port 53"))
    assert source.index("static __always_inline __u32 capture_filter(") < source.index('#line 1 "capture.bpf.c"')
    assert "#define CAPTURE_FILTER_WINDOW" in source and "capture.h " in source


def test_clock_offset_is_realtime_minus_tai():
    offset = realtime_minus_tai_ns()
    naive = time.clock_gettime_ns(time.CLOCK_REALTIME) - time.clock_gettime_ns(time.CLOCK_TAI)
    assert abs(offset - naive) < 5_000_000

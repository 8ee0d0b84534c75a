"""Packet capture: a filter in the kernel, pcap records through a ring buffer, a file or a live stream.

>>> from pynetmon.capture import PacketCapture
>>> with PacketCapture("sniffer", filter="tcp port 80", snaplen=96, dump="/tmp/web") as cap:
...     cap.attach("eth0")
...     ...
...     cap.stats()

Modules, in the order a packet passes them: `dataplane` (bpf/capture.bpf.c around a translated
filter; maps; TC links), `reader` (the ring buffer thread), `pcap` (the file format and writer),
`stream` (network mode's bounded buffer), `capture` (`PacketCapture`, which ties them together),
`clock` (kernel time to wall-clock time).
"""
from .capture import CAPTURE_MODES, PacketCapture
from .pcap import PcapWriteError, PcapWriter

__all__ = ["CAPTURE_MODES", "PacketCapture", "PcapWriteError", "PcapWriter"]

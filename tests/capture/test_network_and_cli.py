"""Network mode (the live pcap stream, its bounded buffer, capture-client over HTTP) and `pynetmon capture`."""
from __future__ import annotations

import http.server
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from pynetmon.capture import PacketCapture
from pynetmon.capture.pcap import iter_records
from pynetmon.errors import Error
from pynetmon.link import tc_programs

from .helpers import read_pcap, send_udp, udp_payloads

REPO = Path(__file__).resolve().parents[2]


def pynetmon_cli(*args: str, **kw) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=str(REPO))
    return subprocess.Popen([sys.executable, "-m", "pynetmon", *args], env=env, cwd=REPO, **kw)


def test_stream_is_a_pcap_byte_stream_that_ends_with_the_capture(quiet_hosts, tmp_path):
    a, b = quiet_hosts
    cap = PacketCapture("net", filter="udp port 7000", snaplen=128, network_mode=True, flush_interval=0.05)
    chunks: list[bytes] = []
    reader = threading.Thread(target=lambda: chunks.extend(cap.stream()), daemon=True)
    reader.start()
    cap.attach("eth0", netns=a.netns)
    payloads = udp_payloads(30, b"net", 400)
    send_udp(a, b.ip, 7000, payloads)
    with pytest.raises(Error, match="already being streamed"):
        next(cap.stream())
    cap.detach()
    reader.join(10)
    assert not reader.is_alive()
    (tmp_path / "s.pcap").write_bytes(b"".join(chunks))
    pcap = read_pcap(tmp_path / "s.pcap")
    assert (pcap.magic, pcap.snaplen, pcap.linktype) == (0xA1B23C4D, 128, 1)
    assert [p.data[42:128] for p in pcap.packets] == [p[:86] for p in payloads]
    stats = cap.stats()
    assert stats["delivered"] == stats["captured"] == 30 and stats["dropped"] == 0


def test_network_buffer_is_bounded_and_counts_what_it_drops(quiet_hosts):
    a, b = quiet_hosts
    limit = 4000
    with PacketCapture("bounded", filter="udp", network_mode=True, buffer_bytes=limit,
                       flush_interval=0.05) as cap:
        cap.attach("eth0", netns=a.netns)
        send_udp(a, b.ip, 7000, udp_payloads(100, b"drop", 300))  # 100 records of 358 bytes
        deadline = time.monotonic() + 10
        while cap.stats()["delivered"] + cap.stats()["dropped_user"] < 100 and time.monotonic() < deadline:
            time.sleep(0.02)
        stats = cap.stats()
        assert stats["captured"] == 100
        assert stats["delivered"] + stats["dropped_user"] == 100
        assert stats["dropped_user"] > 0 and stats["dropped"] == stats["dropped_user"]
        assert stats["delivered"] * 358 <= limit
        stream = cap.stream()
        header = next(stream)
        held = next(stream)
    assert len(header) == 24
    assert len(held) <= limit
    assert [end for _, end in iter_records(held)][-1] == len(held)  # whole records only


def test_stream_needs_network_mode(quiet_hosts, tmp_path):
    with PacketCapture("local", filter="all", dump=tmp_path / "x") as cap, \
            pytest.raises(Error, match="network_mode=True"):
        cap.stream()


class _StreamHandler(http.server.BaseHTTPRequestHandler):
    capture: PacketCapture
    started = threading.Event()

    def do_GET(self):
        self.send_response(200)
        self.send_header("Content-Type", "application/vnd.tcpdump.pcap")
        self.end_headers()
        for chunk in self.capture.stream():
            self.wfile.write(chunk)
            self.wfile.flush()
            self.started.set()

    def log_message(self, *args):
        pass


def test_capture_client_saves_the_stream(quiet_hosts, tmp_path):
    a, b = quiet_hosts
    cap = PacketCapture("served", filter="udp port 7000", network_mode=True, flush_interval=0.05)
    handler = type("Handler", (_StreamHandler,), {"capture": cap, "started": threading.Event()})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        client = pynetmon_cli("capture-client", f"http://127.0.0.1:{server.server_port}/", str(tmp_path / "c.pcap"),
                              stderr=subprocess.PIPE, text=True)
        assert handler.started.wait(10)  # the header went out: the client is reading
        cap.attach("eth0", netns=a.netns)
        send_udp(a, b.ip, 7000, udp_payloads(25, b"client", 200))  # egress: in the ring once sent
        cap.detach()  # passes on what is in the ring, then ends the stream, so the client finishes
        _, err = client.communicate(timeout=30)
    finally:
        server.shutdown()
        server.server_close()
        cap.close()
    assert client.returncode == 0, err
    assert "25 packets" in err
    assert len(read_pcap(tmp_path / "c.pcap").packets) == 25
    assert subprocess.run(["tcpdump", "-r", str(tmp_path / "c.pcap")], check=False,
                          capture_output=True).returncode == 0


def test_capture_client_says_what_is_wrong():
    proc = pynetmon_cli("capture-client", "http://127.0.0.1:9/", "/tmp/never.pcap", stderr=subprocess.PIPE,
                        text=True)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 1 and "cannot reach http://127.0.0.1:9/" in err


def test_cli_writes_a_pcap_stream_that_tcpdump_reads_and_stops_cleanly_on_ctrl_c(quiet_hosts, tmp_path):
    a, b = quiet_hosts
    capture = pynetmon_cli("capture", "eth0", "-n", a.netns, "-w", "-", "-U", "-s", "100", "-f", "udp port 7000",
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=False)
    reader = subprocess.Popen(["tcpdump", "-nn", "-r", "-"], stdin=capture.stdout, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True)
    capture.stdout.close()
    try:
        assert b"listening on eth0" in capture.stderr.readline()
        send_udp(a, b.ip, 7000, udp_payloads(10, b"cli", 300))
        send_udp(a, b.ip, 7001, udp_payloads(5, b"other", 300))  # egress: in the ring once sent
    finally:  # SIGINT: the CLI drains the ring before it exits
        capture.send_signal(signal.SIGINT)
        err = capture.communicate(timeout=30)[1].decode()
        out, _ = reader.communicate(timeout=30)
    assert capture.returncode == 0, err
    assert "10 packets captured" in err and "0 packets dropped" in err
    lines = out.splitlines()
    assert len(lines) == 10 and all(f"> {b.ip}.7000: " in line for line in lines)
    for direction in ("ingress", "egress"):
        assert tc_programs("eth0", direction, netns=a.netns) == []


def test_cli_refuses_a_bad_filter_naming_it(quiet_hosts):
    a, _ = quiet_hosts
    proc = pynetmon_cli("capture", "eth0", "-n", a.netns, "-w", "/tmp/never.pcap", "-f", "udp prot 7",
                        stderr=subprocess.PIPE, text=True)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 1
    assert "filter 'udp prot 7'" in err and "syntax error" in err
    assert not Path("/tmp/never.pcap").exists()
    assert tc_programs("eth0", "ingress", netns=a.netns) == []


def test_cli_prints_packets_without_w(quiet_hosts):
    a, b = quiet_hosts
    proc = pynetmon_cli("capture", "-n", a.netns, "-s", "200", "eth0", "udp", "port", "7000",
                        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert "listening on eth0" in proc.stderr.readline()
        send_udp(a, b.ip, 7000, udp_payloads(3, b"print", 50))  # egress: in the ring once sent
    finally:  # SIGINT: the CLI drains the ring before it exits
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    lines = out.splitlines()
    assert len(lines) == 3
    assert all(f"UDP {a.ip}." in line and f"> {b.ip}.7000, length 92" in line for line in lines)


def test_cli_takes_options_among_filter_words_and_stops_after_count(quiet_hosts, tmp_path):
    """Like `tcpdump -i eth0 udp -w x port 7000 -c 4`: options before, between and after the filter words,
    and -c ends the capture by itself after exactly COUNT packets (the first ones, in order)."""
    a, b = quiet_hosts
    path = tmp_path / "c.pcap"
    proc = pynetmon_cli("capture", "eth0", "udp", "-w", str(path), "port", "7000", "-n", a.netns, "-c", "4",
                        stderr=subprocess.PIPE, text=True)
    try:
        assert "listening on eth0" in proc.stderr.readline()
        send_udp(a, b.ip, 7001, udp_payloads(3, b"other", 80))  # not selected by the filter words
        send_udp(a, b.ip, 7000, udp_payloads(10, b"count", 80))
        _, err = proc.communicate(timeout=30)  # no signal: -c stops it
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    assert "4 packets captured" in err
    packets = read_pcap(path).packets
    assert [p.data[42:54] for p in packets] == [b"count-%06d" % i for i in range(4)]
    for direction in ("ingress", "egress"):
        assert tc_programs("eth0", direction, netns=a.netns) == []


def test_cli_prints_count_packets_then_exits(quiet_hosts):
    a, b = quiet_hosts
    proc = pynetmon_cli("capture", "eth0", "-c", "2", "udp", "-n", a.netns, stdout=subprocess.PIPE,
                        stderr=subprocess.PIPE, text=True)
    try:
        assert "listening on eth0" in proc.stderr.readline()
        send_udp(a, b.ip, 7000, udp_payloads(5, b"print", 50))
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    assert len(out.splitlines()) == 2 and "2 packets captured" in err


@pytest.mark.parametrize(("args", "message"), [
    (["-c", "0"], "-c/--count must be a positive number of packets, not 0"),
    (["-c", "many"], "argument -c/--count: invalid int value: 'many'"),
    (["--bogus"], "unrecognized arguments: --bogus"),
    (["-f", "tcp"], "give the filter either with -f or after the interface, not both"),
])
def test_cli_names_a_bad_option_among_the_filter_words(args, message):
    proc = pynetmon_cli("capture", "eth0", "udp", *args, stderr=subprocess.PIPE, text=True)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 1 and f"pynetmon capture: {message}" in err, err

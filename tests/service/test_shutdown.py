"""SIGTERM while a client streams a capture and has stopped reading (issue 11 §6): the daemon stops
within a second, detaches everything and logs no traceback."""
from __future__ import annotations

import signal
import socket
import time

from .daemon import Daemon
from .dataplanes import UDP_PORT, counter_config


def test_sigterm_with_a_stream_reader_that_stopped_reading(hosts, tmp_path):
    a, b = hosts
    d = Daemon("--netns", b.netns, "--capture-dir", str(tmp_path), log_path=tmp_path / "serve.log")
    c = d.client
    c.post("/polycube/v1/packetcapture/live", json={"capture": "ingress", "filter": f"udp port {UDP_PORT}",
                                                    "networkmode": True}).raise_for_status()
    c.post("/polycube/v1/attach", json={"cube": "live", "port": "eth0"}).raise_for_status()
    c.post("/polycube/v1/dynmon/mon", json={"dataplane-config": counter_config()}).raise_for_status()
    c.post("/polycube/v1/attach", json={"cube": "mon", "port": "eth0"}).raise_for_status()
    slow = socket.create_connection(("127.0.0.1", d.port))
    slow.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    slow.sendall(b"GET /polycube/v1/packetcapture/live/pcap HTTP/1.1\r\nHost: x\r\n\r\n")
    assert slow.recv(12) == b"HTTP/1.1 200"  # and then this client reads nothing more
    # Enough packets to fill the socket buffers between the daemon and the client: its send now waits.
    for _ in range(10):
        a.send_udp(b.ip, UDP_PORT, 1000, b"x" * 1400)
    started = time.monotonic()
    status = d.stop(signal.SIGTERM, timeout=1.0)  # the bound; stop() fails the test beyond it
    took = time.monotonic() - started
    slow.close()
    log = d.log()
    assert status == 0, log
    assert "Traceback" not in log and "Exception" not in log, log
    assert "detached packetcapture 'live' from eth0" in log and "detached dynmon 'mon' from eth0" in log, log
    assert took < 1.0, took
    assert b.run("tc", "filter", "show", "dev", "eth0", "ingress").stdout.strip() == ""

"""The HTTP monitor's kernel parser alone, on crafted segments through BPF_PROG_TEST_RUN: any mix of
pipelined responses in one segment, status lines cut anywhere in their first 12 bytes, bodies spread over
segments, header names in any case — every response counted, by status, nothing unparsed."""
from __future__ import annotations

import itertools
import socket
import struct

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pynetmon.monitors.http import COUNTERS, STATUS_END
from pynetmon.object import BPFObject
from pynetmon.testing import require_bpf

SERVER, CLIENT = "198.18.0.2", "198.18.0.1"
PORT = 8888
_ports = itertools.count(20000)


def frame(payload: bytes, seq: int, sport: int, to_server: bool = False) -> bytes:
    """Ethernet + IPv4 + TCP (ACK|PSH) carrying `payload` (checksums are not checked at tc)."""
    src, dst, sp, dp = (CLIENT, SERVER, sport, PORT) if to_server else (SERVER, CLIENT, PORT, sport)
    tcp = struct.pack("!HHIIBBHHH", sp, dp, seq & 0xFFFFFFFF, 1, 5 << 4, 0x18, 65535, 0, 0) + payload
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(tcp), 0, 0, 64, 6, 0, socket.inet_aton(src),
                     socket.inet_aton(dst))
    return b"\x02" * 6 + b"\x04" * 6 + b"\x08\x00" + ip + tcp


@pytest.fixture(scope="module")
def parser():
    require_bpf()
    with BPFObject.from_package("monitors/http") as obj:
        obj.set_rodata(http_nports=1, http_ports=struct.pack("<8H", PORT, 0, 0, 0, 0, 0, 0, 0))
        obj.load()
        yield obj


def totals(obj) -> tuple[dict[int, int], dict[str, int]]:
    resp = {}
    for i, per_cpu in obj.maps["http_responses"].items():
        n = sum(per_cpu)
        if n:
            resp[i % STATUS_END] = resp.get(i % STATUS_END, 0) + n
    counters = {COUNTERS[k]: sum(v) for k, v in obj.maps["http_counters"].items()}
    return resp, counters


def response(status: int, body: bytes, headers: list[tuple[str, str]], length_name: str) -> bytes:
    head = f"HTTP/1.1 {status} R\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers)
    return (head + f"{length_name}: {len(body)}\r\n\r\n").encode() + body


_header = st.tuples(st.sampled_from(["Server", "Date", "X-Pad", "Content-Type", "Connection", "Content-Lengthy"]),
                    st.text(alphabet="abcdefghij0123456789 /", min_size=0, max_size=40))
_response = st.tuples(
    st.sampled_from([200, 201, 302, 404, 500, 503]),
    st.binary(max_size=60),
    st.lists(_header, max_size=4),
    st.sampled_from(["Content-Length", "content-length", "CONTENT-LENGTH", "Content-length"]),
    st.sampled_from(["whole", "cut", "body-split", "pipelined"]),
    st.integers(1, 11),
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(_response, min_size=1, max_size=8))
def test_every_response_is_counted_however_it_is_cut(parser, plan):
    sport = next(_ports)
    before, c0 = totals(parser)
    segments: list[tuple[bytes, int]] = []  # (segment, responses starting in it)
    pending = b""  # responses gathered for one pipelined segment (at most 4, as the kernel parses)
    count_in_pending = 0
    for status, body, headers, name, how, cut in plan:
        data = response(status, body, headers, name)
        if how == "pipelined" and count_in_pending < 4:
            pending += data
            count_in_pending += 1
            continue
        if pending:
            segments.append((pending, count_in_pending))
            pending, count_in_pending = b"", 0
        if how == "cut":
            segments += [(data[:cut], 1), (data[cut:], 0)]
        elif how == "body-split" and body:
            middle = len(data) - len(body) + len(body) // 2
            segments += [(data[:middle], 1), (data[middle:], 0)]
        else:
            segments.append((data, 1))
    if pending:
        segments.append((pending, count_in_pending))
    seq, req_seq = 1000, 1
    request = b"GET / HTTP/1.1\r\nHost: t\r\n\r\n"
    for seg, starting in segments:
        for _ in range(starting):  # each response's request goes first (latency measured, never "no_request")
            parser.programs["http_ingress"].test_run(frame(request, req_seq, sport, to_server=True))
            req_seq += len(request)
        parser.programs["http_egress"].test_run(frame(seg, seq, sport))
        seq += len(seg)
    after, c1 = totals(parser)
    want: dict[int, int] = {}
    for status, *_ in plan:
        want[status] = want.get(status, 0) + 1
    got = {s: after.get(s, 0) - before.get(s, 0) for s in set(after) | set(before)}
    assert {s: n for s, n in got.items() if n} == want
    delta = {k: c1[k] - c0[k] for k in c1}
    assert delta["unparsed"] == 0 and delta["unknown_length"] == 0 and delta["no_request"] == 0
    assert delta["split"] == sum(1 for *_, how, cut in plan if how == "cut" and cut < 12)


def test_unknown_length_then_segment_starts(parser):
    """Chunked (no Content-Length): the end is unknown, counted; the next response is still found at the
    start of its segment (the thesis' only place)."""
    sport = next(_ports)
    before, c0 = totals(parser)
    chunked = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n"
    seq = 1
    for seg in (chunked, b"HTTP/1.1 500 X\r\nContent-Length: 0\r\n\r\n"):
        parser.programs["http_egress"].test_run(frame(seg, seq, sport))
        seq += len(seg)
    after, c1 = totals(parser)
    assert after.get(200, 0) - before.get(200, 0) == 1 and after.get(500, 0) - before.get(500, 0) == 1
    assert c1["unknown_length"] - c0["unknown_length"] == 1
    assert c1["no_request"] - c0["no_request"] == 2  # no requests were sent on this connection


def test_body_that_looks_like_a_status_line_is_not_counted(parser):
    """With the length known, a body segment starting with "HTTP/1.1 500" is body, not a response."""
    sport = next(_ports)
    before, _ = totals(parser)
    body = b"HTTP/1.1 500 inside the body"
    head = f"HTTP/1.1 200 OK\r\nContent-Length: {len(body)}\r\n\r\n".encode()
    parser.programs["http_egress"].test_run(frame(head, 1, sport))
    parser.programs["http_egress"].test_run(frame(body, 1 + len(head), sport))
    after, _ = totals(parser)
    assert after.get(200, 0) - before.get(200, 0) == 1
    assert after.get(500, 0) - before.get(500, 0) == 0

"""A tiny HTTP/1.1 server and client for the HTTP monitor's tests, on raw sockets so that every byte and
segment boundary is the test's choice.

Server: `GET /STATUS` answers STATUS with a 3-byte body and Content-Length; `GET /split/STATUS` sends
the status line cut after "HTTP/1.1 5" (TCP_NODELAY, a pause between the two writes). Connections are
kept alive until the client closes.
"""
from __future__ import annotations

import socket
import threading
import time


class StatusServer:
    """Serve on `host` (a testhosts Host) at (addr, port); close() stops it."""

    def __init__(self, host, addr: str, port: int, family: int = socket.AF_INET):
        self.sock = host.socket(family, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((addr, port))
        self.sock.listen(64)
        self.sock.settimeout(0.2)
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._accept = threading.Thread(target=self._loop, daemon=True)
        self._accept.start()

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except (TimeoutError, OSError):
                continue
            t = threading.Thread(target=self._serve, args=(conn,), daemon=True)
            t.start()
            self._threads.append(t)

    def _serve(self, conn: socket.socket) -> None:
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        conn.settimeout(5)
        buf = b""
        try:
            while True:
                while b"\r\n\r\n" not in buf:
                    data = conn.recv(4096)
                    if not data:
                        return
                    buf += data
                # Every complete request waiting is answered in one write: pipelined requests get
                # their responses in one segment.
                out = b""
                while b"\r\n\r\n" in buf:
                    head, buf = buf.split(b"\r\n\r\n", 1)
                    path = head.split(b" ")[1].decode()
                    status = int(path.rsplit("/", 1)[1])
                    response = (f"HTTP/1.1 {status} X\r\nContent-Length: 3\r\nContent-Type: text/plain\r\n"
                                f"\r\nabc").encode()
                    if path.startswith("/split/"):
                        conn.sendall(out + response[:10])  # ... "HTTP/1.1 5"
                        time.sleep(0.05)
                        out = response[10:]
                    else:
                        out += response
                conn.sendall(out)
        except OSError:
            return
        finally:
            conn.close()

    def close(self) -> None:
        self._stop.set()
        self._accept.join()
        self.sock.close()
        for t in self._threads:
            t.join(timeout=5)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def read_response(sock: socket.socket, buf: bytes = b"") -> tuple[int, bytes]:
    """Read one response with Content-Length; returns (status, what was read beyond it)."""
    status, _, rest = read_message(sock, buf)
    return status, rest


def read_message(sock: socket.socket, buf: bytes = b"") -> tuple[int, bytes, bytes]:
    """Read one response with Content-Length; returns (status, body, what was read beyond it)."""
    while b"\r\n\r\n" not in buf:
        data = sock.recv(4096)
        if not data:
            raise ConnectionError("server closed before a response")
        buf += data
    head, rest = buf.split(b"\r\n\r\n", 1)
    status = int(head.split(b" ")[1])
    length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n")[1:]
                  if line.lower().startswith(b"content-length:"))
    while len(rest) < length:
        data = sock.recv(4096)
        if not data:
            raise ConnectionError("server closed in a response")
        rest += data
    return status, rest[:length], rest[length:]


def request(host, addr: str, port: int, paths: list[str], family: int = socket.AF_INET,
            pipelined: bool = False) -> list[int]:
    """One connection from `host`: GET each path (one after the other, or all at once when `pipelined`),
    read each response, then close (FIN, and wait for the server's FIN so the close is complete)."""
    sock = host.socket(family, socket.SOCK_STREAM)
    sock.settimeout(5)
    try:
        sock.connect((addr, port))
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        statuses, rest = [], b""
        if pipelined:
            sock.sendall(b"".join(f"GET {p} HTTP/1.1\r\nHost: t\r\n\r\n".encode() for p in paths))
        for p in paths:
            if not pipelined:
                sock.sendall(f"GET {p} HTTP/1.1\r\nHost: t\r\n\r\n".encode())
            status, rest = read_response(sock, rest)
            statuses.append(status)
        sock.shutdown(socket.SHUT_WR)
        while sock.recv(4096):
            pass
        return statuses
    finally:
        sock.close()

"""Hostile peers on loopback for the bulkhead tests: a gateway that resets reused
connections, receivers that drip their answer (HTTP and HTTPS), a self-signed certificate.

Each server runs in daemon threads of the test process and counts what it saw.
"""

from __future__ import annotations

import contextlib
import shutil
import socket
import ssl
import struct
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path


def read_request(conn: socket.socket) -> bytes | None:
    """One HTTP request (head and Content-Length body), or None when the peer closed."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = conn.recv(65536)
        if not chunk:
            return None
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":", 1)[1])
    while len(body) < length:
        chunk = conn.recv(65536)
        if not chunk:
            return None
        body += chunk
    return head


def _reset(conn: socket.socket) -> None:
    """Close with RST (SO_LINGER 0), not FIN."""
    with contextlib.suppress(OSError):
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    conn.close()


class _Server:
    def __init__(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.lock = threading.Lock()
        self.requests = 0
        self.connections = 0
        self.closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self.closed:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            with self.lock:
                self.connections += 1
            threading.Thread(target=self._guarded, args=(conn,), daemon=True).start()

    def _guarded(self, conn: socket.socket) -> None:
        with contextlib.suppress(OSError, ssl.SSLError):
            self.handle(conn)

    def handle(self, conn: socket.socket) -> None:
        raise NotImplementedError

    def close(self) -> None:
        self.closed = True
        self.listener.close()


class ResetReusedConnections(_Server):
    """Answers the first request on each connection with 502 (keep-alive); reads every later
    request on that connection in full and then resets the connection: the request reached
    the gateway, the answer never came. `requests` counts every request read."""

    def handle(self, conn: socket.socket) -> None:
        served = 0
        while True:
            if read_request(conn) is None:
                conn.close()
                return
            with self.lock:
                self.requests += 1
            served += 1
            if served > 1:
                _reset(conn)
                return
            conn.sendall(
                b"HTTP/1.1 502 Bad Gateway\r\nContent-Type: text/plain\r\n"
                b"Content-Length: 17\r\nConnection: keep-alive\r\n\r\nApplication Error"
            )


class OpenConnections:
    """Connections open now and at most, across the servers that share it."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.now = 0
        self.most = 0

    def opened(self) -> None:
        with self.lock:
            self.now += 1
            self.most = max(self.most, self.now)

    def closed(self) -> None:
        with self.lock:
            self.now -= 1


class DripServer(_Server):
    """A tarpit: after reading the request (HTTPS: after a normal handshake, or with
    `drip_handshake` dripping the handshake itself), sends one byte every `interval` s
    of an answer that never ends. `cut_off` counts connections the client gave up on."""

    def __init__(
        self,
        interval: float,
        *,
        tls: ssl.SSLContext | None = None,
        drip_handshake: bool = False,
        connections: OpenConnections | None = None,
    ) -> None:
        self.interval = interval
        self.tally = connections or OpenConnections()
        self.tls = tls
        self.drip_handshake = drip_handshake
        self.cut_off = 0
        self.open_now = 0
        self.most_open = 0
        self.held: list[float] = []  # seconds from accept to the client cutting it off
        super().__init__()

    @property
    def url(self) -> str:
        scheme = "https" if self.tls is not None else "http"
        return f"{scheme}://localhost:{self.port}/hook"

    def handle(self, conn: socket.socket) -> None:
        accepted = time.monotonic()
        with self.lock:
            self.open_now += 1
            self.most_open = max(self.most_open, self.open_now)
        self.tally.opened()
        try:
            if self.tls is not None and self.drip_handshake:
                self._drip_raw_handshake(conn)
                return
            stream: socket.socket = conn
            if self.tls is not None:
                stream = self.tls.wrap_socket(conn, server_side=True)
            if read_request(stream) is None:
                return
            with self.lock:
                self.requests += 1
            answer = b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n" + b"x" * 100000
            for i in range(len(answer)):
                if self.closed:
                    return
                try:
                    stream.sendall(answer[i : i + 1])
                except OSError:
                    with self.lock:
                        self.cut_off += 1
                        self.held.append(time.monotonic() - accepted)
                    return
                time.sleep(self.interval)
        finally:
            with self.lock:
                self.open_now -= 1
            self.tally.closed()
            conn.close()

    def _drip_raw_handshake(self, conn: socket.socket) -> None:
        """Answer the ClientHello with a real TLS server's first flight, a byte at a time."""
        assert self.tls is not None
        incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
        tls = self.tls.wrap_bio(incoming, outgoing, server_side=True)
        hello = conn.recv(65536)
        with self.lock:
            self.requests += 1
            if not hello:  # the client's deadline came before its hello (a loaded machine)
                self.cut_off += 1
                return
        incoming.write(hello)
        with contextlib.suppress(ssl.SSLWantReadError):
            tls.do_handshake()
        flight = outgoing.read()
        for i in range(len(flight)):
            if self.closed:
                return
            try:
                conn.sendall(flight[i : i + 1])
                # A peer that went away shows as a readable end of stream.
                conn.settimeout(self.interval)
                with contextlib.suppress(TimeoutError):
                    if conn.recv(1, socket.MSG_PEEK) == b"":
                        raise ConnectionResetError
            except OSError:
                with self.lock:
                    self.cut_off += 1
                return


@contextlib.contextmanager
def self_signed(tmp: Path) -> Iterator[tuple[ssl.SSLContext, Path]]:
    """A server context with a fresh self-signed certificate for `localhost`, and the path
    of that certificate (a client trusts it through SSL_CERT_FILE)."""
    openssl = shutil.which("openssl")
    if openssl is None:
        raise RuntimeError("the openssl command is needed to make a test certificate")
    cert, key = tmp / "cert.pem", tmp / "key.pem"
    subprocess.run(
        [openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost",
         "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True,
    )  # fmt: skip
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    yield context, cert


class FixedAnswerGateway(_Server):
    """Answers every request with `status` and `body` (keep-alive); `requests` counts them.
    `body` may be changed while it runs (the gateway starts answering sensibly)."""

    def __init__(self, body: bytes, status: int = 200) -> None:
        self.body = body
        self.status = status
        super().__init__()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/ip2sms-request/"

    def handle(self, conn: socket.socket) -> None:
        with conn:
            while read_request(conn) is not None:
                with self.lock:
                    self.requests += 1
                    body, status = self.body, self.status
                conn.sendall(
                    f"HTTP/1.1 {status} X\r\nContent-Type: text/xml\r\n"
                    f"Content-Length: {len(body)}\r\n\r\n".encode("ascii")
                    + body
                )

"""The outbound HTTP path against real loopback servers: total deadline, pinning, no env.

Loopback only (allow_private=True, as an on-premise receiver would need).
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest

from sms_pipeline import http


@dataclass
class DripServer:
    """Answers one byte every `pause` seconds, for ever (until the client goes away)."""

    pause: float = 0.2
    port: int = 0
    requests: list[bytes] = field(default_factory=list)
    client_left: threading.Event = field(default_factory=threading.Event)
    stop: threading.Event = field(default_factory=threading.Event)


@pytest.fixture
def drip() -> Iterator[DripServer]:
    state = DripServer()
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    listener.settimeout(0.2)
    state.port = listener.getsockname()[1]

    def serve() -> None:
        while not state.stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            with conn:
                state.requests.append(conn.recv(65536))
                answer = b"HTTP/1.1 200 OK\r\nX-Slow: " + b"a" * 10_000_000
                for byte in answer:
                    if state.stop.wait(state.pause):
                        return
                    try:
                        conn.sendall(bytes([byte]))
                    except OSError:
                        state.client_left.set()
                        break

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        state.stop.set()
        thread.join(5)
        listener.close()


def test_a_server_dripping_one_byte_at_a_time_is_cut_off_at_the_total_deadline(
    drip: DripServer,
) -> None:
    # Each byte arrives well within any per-read timeout; only a total deadline ends this.
    with pytest.raises(http.DeadlineExceededError):
        http.post(
            f"http://127.0.0.1:{drip.port}/hook",
            b"{}",
            {},
            deadline_seconds=1.0,
            allow_private=True,
        )
    assert drip.client_left.wait(10), "the connection was not closed at the deadline"


def test_the_connection_goes_to_the_checked_address_with_the_url_host_in_host_header(
    drip: DripServer,
) -> None:
    # The stub resolver is asked once; the request reaches the address it gave, whatever
    # the name would resolve to on a second lookup (DNS rebinding).
    asked: list[str] = []

    def resolve(host: str, _port: int) -> list[str]:
        asked.append(host)
        return ["127.0.0.1"]

    with pytest.raises(http.DeadlineExceededError):
        http.post(
            f"http://receiver.invalid:{drip.port}/hook?t=1",
            b'{"a":1}',
            {"X-Test": "yes"},
            deadline_seconds=0.5,
            allow_private=True,
            resolver=resolve,
        )
    assert asked == ["receiver.invalid"]
    request = drip.requests[0]
    assert request.startswith(b"POST /hook?t=1 HTTP/1.1\r\n")
    assert f"Host: receiver.invalid:{drip.port}".encode() in request


def test_proxies_and_netrc_in_the_environment_are_ignored(
    drip: DripServer, monkeypatch: pytest.MonkeyPatch, tmp_path: object
) -> None:
    # A proxy that would swallow the request, and a .netrc that would add credentials.
    netrc = f"{tmp_path}/netrc"
    with open(netrc, "w") as f:
        f.write("machine 127.0.0.1 login leak password leaked\n")
    monkeypatch.setenv("NETRC", netrc)
    monkeypatch.setenv("HTTP_PROXY", "http://127.0.0.1:1")
    monkeypatch.setenv("http_proxy", "http://127.0.0.1:1")
    with pytest.raises(http.DeadlineExceededError):  # reached our server, not the "proxy"
        http.post(
            f"http://127.0.0.1:{drip.port}/h", b"{}", {}, deadline_seconds=0.5, allow_private=True
        )
    assert drip.requests and b"Authorization" not in drip.requests[0]


def test_a_closed_port_is_a_transient_failure_named_by_its_class_only() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(http.OutboundError) as caught:
        http.post(
            f"http://127.0.0.1:{port}/secret-token",
            b"{}",
            {},
            deadline_seconds=2,
            allow_private=True,
        )
    assert not caught.value.permanent
    assert "secret-token" not in caught.value.reason
    assert str(port) not in caught.value.reason

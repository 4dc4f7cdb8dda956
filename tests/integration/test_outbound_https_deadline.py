"""The callback deadline holds for https exactly as for http (issue 27, item 1).

`wrap_socket` detaches the raw socket the watchdog used to watch: its shutdown then failed
silently and a receiver dripping one byte at a time held a worker thread for minutes.
Loopback receivers with a self-signed certificate, trusted through SSL_CERT_FILE.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from sms_pipeline import http
from tests.loopback_peers import DripServer, read_request, self_signed
from tests.support import merge_json, wait_until

DEADLINE = 1.0
# A post that has not returned by then is held by the receiver: the drip below lasts hours.
HELD = 30.0


@pytest.fixture
def tls(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[object]:
    with self_signed(tmp_path) as (context, cert):
        monkeypatch.setenv("SSL_CERT_FILE", str(cert))
        yield context


def _post_in_thread(url: str) -> tuple[BaseException | None, float]:
    """post() in a thread (so a held call cannot hang the test); its error and duration."""
    outcome: dict[str, object] = {}

    def run() -> None:
        started = time.monotonic()
        try:
            http.post(url, b"{}", {}, deadline_seconds=DEADLINE, allow_private=True)
        except BaseException as exc:  # handed to the test
            outcome["error"] = exc
        outcome["seconds"] = time.monotonic() - started

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(HELD)
    assert not thread.is_alive(), f"post() held past {HELD:g} s by a dripping receiver"
    error = outcome.get("error")
    assert error is None or isinstance(error, BaseException)
    return error, float(outcome["seconds"])  # type: ignore[arg-type]


@pytest.mark.parametrize("scheme", ["http", "https", "https-handshake"])
def test_a_receiver_dripping_its_answer_is_cut_off_at_the_total_deadline(
    scheme: str, tls: object
) -> None:
    import ssl

    assert isinstance(tls, ssl.SSLContext)
    server = DripServer(
        0.2,
        tls=None if scheme == "http" else tls,
        drip_handshake=scheme == "https-handshake",
    )
    try:
        error, seconds = _post_in_thread(server.url)
        assert isinstance(error, http.DeadlineExceededError), error
        # The receiver saw the connection go (the watchdog shut it down, handshake or not).
        wait_until(lambda: server.cut_off > 0, 10, "the receiver to see the connection go")
        assert server.cut_off == 1
    finally:
        server.close()
    print(f"FIGURE: {scheme} drip receiver (1 byte / 0.2 s) cut off after {seconds:.2f} s")
    merge_json(
        Path(".sms_pipeline/reliability.json"),
        {f"callback_drip_{scheme}_cut_after_seconds": round(seconds, 2)},
    )


def test_a_normal_https_receiver_still_answers(tls: object, tmp_path: Path) -> None:
    import socket
    import ssl

    assert isinstance(tls, ssl.SSLContext)
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]

    def serve() -> None:
        conn, _ = listener.accept()
        with tls.wrap_socket(conn, server_side=True) as stream:
            read_request(stream)
            stream.sendall(b"HTTP/1.1 204 No Content\r\nContent-Length: 0\r\n\r\n")

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        answer = http.post(
            f"https://localhost:{port}/hook", b"{}", {}, deadline_seconds=5, allow_private=True
        )
    finally:
        thread.join(5)
        listener.close()
    assert answer.status == 204

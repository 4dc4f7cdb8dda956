"""CurlPool.submit: one future per request, each settled as its own answer arrives."""

from __future__ import annotations

import concurrent.futures
import socket
import threading

from sms_pipeline.gateway.transport import CurlPool
from tests.loopback_peers import _Server, read_request


class HoldsOnePath(_Server):
    """Answers at once, except requests to /hold, answered only once `release` is set."""

    def __init__(self) -> None:
        self.release = threading.Event()
        super().__init__()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}/{path}"

    def handle(self, conn: socket.socket) -> None:
        with conn:
            while (head := read_request(conn)) is not None:
                if head.startswith(b"POST /hold "):
                    self.release.wait(30)
                body = head.split(b" ", 2)[1]
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))


def _pool() -> CurlPool:
    return CurlPool(
        "test",
        headers=[],
        max_connections=4,
        connect_timeout=5.0,
        read_timeout=30.0,
        total_timeout=60.0,
        max_bytes=1000,
    )


def test_a_held_request_does_not_delay_the_answer_of_another() -> None:
    server = HoldsOnePath()
    pool = _pool()
    try:
        (held,) = pool.submit(server.url("hold"), [b"a"])
        quick = pool.submit(server.url("fast"), [b"b", b"c"])
        # Both quick answers arrive while the held one is still unanswered (the server
        # answers it only once released below): nothing waits for the slowest request.
        done, _ = concurrent.futures.wait(quick, timeout=30)
        assert done == set(quick)
        assert [f.result().body for f in quick] == [b"/fast", b"/fast"]
        assert not held.done()
        server.release.set()
        assert held.result(timeout=30).body == b"/hold"
    finally:
        server.release.set()
        pool.close()
        server.close()


def test_exchange_is_submit_and_wait_and_a_closed_pool_answers_every_future() -> None:
    server = HoldsOnePath()
    pool = _pool()
    try:
        replies = pool.exchange(server.url("fast"), [b"x", b"y"])
        assert [(r.status, r.body, r.error) for r in replies] == [(200, b"/fast", None)] * 2
        pool.close()
        (after,) = pool.submit(server.url("fast"), [b"z"])
        reply = after.result(timeout=30)
        assert reply.error is not None and "transport stopped" in reply.error.reason
    finally:
        server.release.set()
        pool.close()
        server.close()

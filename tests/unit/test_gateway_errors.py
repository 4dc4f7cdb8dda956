"""Error classes, and the client's sorting of every failure into permanent / transient."""

from __future__ import annotations

import base64
import contextlib
import http.server
import pickle
import re
import shutil
import socket
import struct
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from typing import Any

import pytest

from sms_pipeline.gateway import (
    GatewayAuthError,
    GatewayConnectionError,
    GatewayCreditsExhausted,
    GatewayDuplicate,
    GatewayError,
    GatewayHTTPError,
    GatewayProtocolError,
    GatewayRejected,
    GatewayStatus,
    GatewayThrottled,
    GatewayTimeout,
    IP2SMSClient,
    SendRequest,
    SendResult,
)
from sms_pipeline.gateway.client import parse_retry_after
from sms_pipeline.gateway.errors import OUTCOMES, rejection
from sms_pipeline.gateway.transport import _transfer_error
from tests.support import wait_until

PASSWORD = "s3cr3t-Pa55word"

# ------------------------------------------------------------------ error classes


@pytest.mark.parametrize(
    ("error", "permanent", "outcome"),
    [
        (GatewayTimeout("read timeout"), False, "timeout"),
        (GatewayConnectionError("refused"), False, "refused"),
        (GatewayProtocolError("bad"), False, "parse_error"),
        (GatewayRejected("Invalid abonent number"), True, "rejected"),
        (GatewayDuplicate("uniq_key dupe"), True, "rejected"),
        (GatewayCreditsExhausted("Prepaid bill error"), False, "rejected"),
        (GatewayAuthError(401), True, "auth"),
        (GatewayThrottled(429, retry_after=2.0), False, "http_429"),
        (GatewayHTTPError(502), False, "http_5xx"),
        (GatewayHTTPError(404), True, "http_4xx"),
    ],
)
def test_each_error_class_has_its_permanence_and_outcome(
    error: GatewayError, permanent: bool, outcome: str
) -> None:
    assert error.permanent is permanent
    assert error.outcome == outcome
    assert error.outcome in OUTCOMES
    assert isinstance(error, GatewayError)


@pytest.mark.parametrize(
    ("code", "cls", "permanent", "outcome"),
    [
        (500, GatewayHTTPError, False, "http_5xx"),
        (502, GatewayHTTPError, False, "http_5xx"),
        (503, GatewayHTTPError, False, "http_5xx"),
        (401, GatewayAuthError, True, "auth"),
        (403, GatewayAuthError, True, "auth"),
        (400, GatewayHTTPError, True, "http_4xx"),
        (404, GatewayHTTPError, True, "http_4xx"),
        (408, GatewayHTTPError, False, "http_4xx"),
        (429, GatewayThrottled, False, "http_429"),
    ],
)
def test_http_status_maps_to_class_and_permanence(
    code: int, cls: type[GatewayHTTPError], permanent: bool, outcome: str
) -> None:
    error = GatewayHTTPError.from_status(code)
    assert type(error) is cls
    assert error.status_code == code
    assert error.permanent is permanent
    assert error.outcome == outcome


def test_rejection_reason_picks_the_subclass() -> None:
    dupe = rejection("uniq_key dupe")
    assert isinstance(dupe, GatewayDuplicate)
    assert dupe.duplicate is True
    assert dupe.permanent is True
    for reason in ("Prepaid messages limit exceed", "Prepaid bill error", " prepaid BILL error "):
        credits = rejection(reason)
        assert isinstance(credits, GatewayCreditsExhausted)
        assert credits.permanent is False
    plain = rejection("Invalid abonent number")
    assert type(plain) is GatewayRejected
    assert plain.permanent is True
    assert plain.duplicate is False
    assert plain.error == "Invalid abonent number"
    assert rejection(None).error is None


def test_errors_survive_pickling_with_their_attributes() -> None:
    for error in (
        GatewayThrottled(429, retry_after=3.0),
        GatewayDuplicate("uniq_key dupe"),
        GatewayTimeout("read timeout"),
        GatewayHTTPError(503),
    ):
        copy = pickle.loads(pickle.dumps(error))  # noqa: S301 - our own object
        assert type(copy) is type(error)
        assert copy.__dict__ == error.__dict__
        assert str(copy) == str(error)


def test_long_reasons_are_clipped_to_one_line() -> None:
    error = GatewayRejected("x\n" * 500)
    assert len(error.reason) <= 200
    assert "\n" not in error.reason


def test_retry_after_seconds_and_http_date() -> None:
    now = datetime(2024, 1, 1, 12, 0, tzinfo=UTC)
    assert parse_retry_after("1") == 1.0
    assert parse_retry_after(" 2.5 ") == 2.5
    assert (
        parse_retry_after(format_datetime(now + timedelta(seconds=30), usegmt=True), now=now) == 30
    )
    assert (
        parse_retry_after(format_datetime(now - timedelta(seconds=30), usegmt=True), now=now) == 0
    )
    assert parse_retry_after("-5") == 0.0
    for bad in (None, "", "soon", "nan", "inf"):
        assert parse_retry_after(bad) is None


# ------------------------------------------------------------------ client over a loopback server


@dataclass
class Seen:
    """One request as the loopback gateway received it."""

    headers: dict[str, str]
    body: bytes


@dataclass
class Reset:
    """Close the connection with an RST instead of answering."""


@dataclass
class Sleep:
    """Answer nothing for `seconds` (longer than the client's read timeout)."""

    seconds: float


@dataclass
class Drip:
    """A 200 whose headers come one byte every `every` seconds (a slow-drip server)."""

    every: float


@dataclass
class Stream:
    """A 200 with `size` bytes of body written in 64 KiB chunks; counts what was sent."""

    size: int
    length: bool = False
    sent: int = 0
    closed_before_body: bool = False
    wait_for_close: bool = False


Handler = Callable[[Seen], Any]


class LoopbackGateway:
    """A real HTTP server on 127.0.0.1 that answers with whatever ``handler`` returns:
    (status, body, headers), or a Reset / Sleep / Drip / Stream behaviour."""

    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.requests: list[Seen] = []
        gateway = self

        class _Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                seen = Seen(dict(self.headers.items()), body)
                gateway.requests.append(seen)
                gateway._answer(self, gateway.handler(seen))

        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        server.daemon_threads = True
        server.request_queue_size = 64
        self.server = server
        self.url = f"http://127.0.0.1:{server.server_address[1]}"
        threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()

    def _answer(self, h: http.server.BaseHTTPRequestHandler, what: Any) -> None:
        with contextlib.suppress(OSError):
            if isinstance(what, Reset):
                h.connection.setsockopt(
                    socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0)
                )
                h.connection.close()
                h.close_connection = True
                return
            if isinstance(what, Sleep):
                time.sleep(what.seconds)
                h.close_connection = True
                return
            if isinstance(what, Drip):
                h.close_connection = True
                for byte in b"HTTP/1.1 200 OK\r\nX-Drip: " + b"a" * 10_000:
                    h.wfile.write(bytes([byte]))
                    h.wfile.flush()
                    time.sleep(what.every)
                return
            if isinstance(what, Stream):
                h.send_response(200)
                if what.length:
                    h.send_header("Content-Length", str(what.size))
                h.send_header("Connection", "close")
                h.end_headers()
                h.wfile.flush()
                h.close_connection = True
                if what.wait_for_close:
                    h.connection.settimeout(5)
                    try:
                        what.closed_before_body = h.connection.recv(1) == b""
                    except (TimeoutError, OSError):
                        what.closed_before_body = False
                    if what.closed_before_body:
                        return
                chunk = b" " * 65536
                while what.sent < what.size:
                    h.wfile.write(chunk)
                    what.sent += len(chunk)
                return
            status, body, headers = what
            h.send_response(status)
            for key, value in headers.items():
                h.send_header(key.replace("_", "-"), value)
            if "Content-Length" not in headers:
                h.send_header("Content-Length", str(len(body)))
            h.end_headers()
            h.wfile.write(body)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def gateways() -> Iterator[list[Any]]:
    made: list[Any] = []
    yield made
    for thing in made:
        thing.close()


_made: list[Any] = []


def make_client(handler: Handler, **kwargs: Any) -> tuple[IP2SMSClient, LoopbackGateway]:
    gateway = LoopbackGateway(handler)
    kwargs.setdefault("timeout", (2.0, 2.0))
    client = IP2SMSClient(
        f"{gateway.url}/ip2sms/",
        f"{gateway.url}/ip2sms-request/",
        "login",
        PASSWORD,
        "HEALTH",
        **kwargs,
    )
    _made.extend([client, gateway])
    return client, gateway


@pytest.fixture(autouse=True)
def _close_made() -> Iterator[None]:
    yield
    while _made:
        _made.pop().close()


def answer(body: bytes, status: int = 200, **headers: str) -> Handler:
    return lambda request: (status, body, headers)


def behave(what: Any) -> Handler:
    return lambda request: what


def test_password_is_absent_from_client_repr_and_str() -> None:
    client = IP2SMSClient("http://gw/a", "http://gw/b", "login", PASSWORD, "HEALTH")
    assert PASSWORD not in repr(client)
    assert PASSWORD not in str(client)
    assert PASSWORD not in repr(vars(client))
    client.close()


def test_client_sends_basic_auth_and_sizes_its_pool() -> None:
    client, gateway = make_client(
        answer(b'<status id="1" date=""><state>Accepted</state></status>'), pool_size=7
    )
    client.send("+380931234567", "x")
    expected = base64.b64encode(f"login:{PASSWORD}".encode()).decode()
    assert gateway.requests[0].headers["Authorization"] == f"Basic {expected}"
    assert client.pool_size == 7


def test_send_posts_utf8_xml_with_the_right_content_type() -> None:
    client, gateway = make_client(
        answer(b'<status id="1" date=""><state>Accepted</state></status>'), validity="+2 hour"
    )
    result = client.send("+380931234567", "Код 1234", uniq_key="k", ext_id="e")
    request = gateway.requests[0]
    assert request.headers["Content-Type"] == "text/xml; charset=utf-8"
    assert request.headers["Authorization"].startswith("Basic ")
    assert "Код 1234".encode() in request.body
    assert b'validity="+2 hour"' in request.body
    assert result.gateway_id == "1"
    assert result.status is GatewayStatus.ACCEPTED


def test_group_send_answer_gives_every_item() -> None:
    client, _ = make_client(
        answer(
            b'<status groupid="593589" date="Fri, 06 Sep 2013 22:11:05 +0300"><id>8076414</id>'
            b"<id>8076415</id><state>Accepted</state><state>Accepted</state></status>"
        )
    )
    result = client.send("+380931234567", "x")
    assert result.group_id == "593589"
    assert result.gateway_id == "8076414"
    assert len(result.items) == 2


@pytest.mark.parametrize(
    ("body", "cls", "permanent", "error"),
    [
        (
            b"<status date=''><state error='Invalid abonent number'>Rejected</state></status>",
            GatewayRejected,
            True,
            "Invalid abonent number",
        ),
        (
            b'<status id="8072382" date=""><state>Rejected</state></status>',
            GatewayRejected,
            True,
            None,
        ),
        (
            b'<status date="Fri, 06 Sep 2013 19:11:16 +0300">'
            b'<state error="Invalid message">Accepted</state></status>',
            GatewayRejected,
            True,
            "Invalid message",
        ),
        (
            b"<status date=''><state error='uniq_key dupe'>Rejected</state></status>",
            GatewayDuplicate,
            True,
            "uniq_key dupe",
        ),
        (
            b"<status date=''><state error='Prepaid messages limit exceed'>"
            b"Rejected</state></status>",
            GatewayCreditsExhausted,
            False,
            "Prepaid messages limit exceed",
        ),
        (b'<status date=""><state>Unaccepted</state></status>', GatewayRejected, True, None),
    ],
)
def test_send_answers_that_refuse_the_message_raise_rejections(
    body: bytes, cls: type[GatewayRejected], permanent: bool, error: str | None
) -> None:
    client, _ = make_client(answer(body))
    with pytest.raises(cls) as info:
        client.send("+380931234567", "x")
    assert type(info.value) is cls
    assert info.value.permanent is permanent
    assert info.value.error == error
    assert info.value.outcome == "rejected"


def test_status_returns_any_status_without_raising() -> None:
    client, _ = make_client(
        answer(b'<status id="9" date="x"><state error="Expired in SMSC">Rejected</state></status>')
    )
    result = client.status("9")
    assert result.status is GatewayStatus.REJECTED
    assert result.error == "Expired in SMSC"
    assert result.date is None
    assert result.date_raw == "x"


def test_status_fills_in_the_asked_id_when_the_answer_has_none() -> None:
    client, _ = make_client(answer(b"<status date=''><state>Delivered</state></status>"))
    assert client.status("77").gateway_id == "77"


@pytest.mark.parametrize(
    ("handler", "cls", "permanent", "outcome"),
    [
        (behave(Sleep(3.0)), GatewayTimeout, False, "timeout"),
        (behave(Reset()), GatewayConnectionError, False, "refused"),
        (answer(b"Application Error", 502), GatewayHTTPError, False, "http_5xx"),
        (answer(b"Unauthorized", 401), GatewayAuthError, True, "auth"),
        (answer(b"Forbidden", 403), GatewayAuthError, True, "auth"),
        (answer(b"Not found", 404), GatewayHTTPError, True, "http_4xx"),
        (answer(b"", 429, **{"Retry-After": "1"}), GatewayThrottled, False, "http_429"),
        (
            answer(b"", 302, Location="http://elsewhere/"),
            GatewayProtocolError,
            False,
            "parse_error",
        ),
        (
            answer(b"Request not recognized - xml parse failed"),
            GatewayProtocolError,
            False,
            "parse_error",
        ),
        (answer(b"<error>oops</error>"), GatewayProtocolError, False, "parse_error"),
    ],
)
def test_transport_and_http_failures_are_classified(
    handler: Callable[..., Any], cls: type[GatewayError], permanent: bool, outcome: str
) -> None:
    client, _ = make_client(handler, timeout=(1.0, 0.5))
    with pytest.raises(cls) as info:
        client.send("+380931234567", "x")
    assert type(info.value) is cls
    assert info.value.permanent is permanent
    assert info.value.outcome == outcome


@pytest.mark.parametrize(
    ("errno", "connected", "seconds", "cls", "reason"),
    [
        (28, False, 1.0, GatewayTimeout, "connect timeout"),
        (28, True, 1.0, GatewayTimeout, "read timeout"),
        (28, True, 15.0, GatewayTimeout, "total deadline exceeded"),
        (18, True, 0.1, GatewayConnectionError, "answer cut off"),
        (52, True, 0.1, GatewayConnectionError, "connection closed without an answer"),
        (56, True, 0.1, GatewayConnectionError, "connection reset while receiving"),
        (7, False, 0.1, GatewayConnectionError, "connection failed"),
        (6, False, 0.1, GatewayConnectionError, "connection failed"),
        (63, True, 0.1, GatewayProtocolError, "answer larger than 1024 bytes"),
        (8, True, 0.1, GatewayProtocolError, "answer unreadable"),
        (99, True, 0.1, GatewayConnectionError, "request failed"),
    ],
)
def test_curl_errors_become_transient_gateway_errors(
    errno: int, connected: bool, seconds: float, cls: type[GatewayError], reason: str
) -> None:
    error = _transfer_error(
        errno, too_large=False, connected=connected, seconds=seconds, total=15.0, limit=1024
    )
    assert type(error) is cls
    assert error.permanent is False
    assert error.reason.startswith(reason)


def test_slow_drip_answer_is_cut_off_at_the_total_deadline() -> None:
    # Each byte arrives well inside the read timeout; only the total deadline stops it.
    # Without it the drip (10,000 bytes, one per 50 ms) would hold the request ~500 s.
    client, _ = make_client(behave(Drip(0.05)), timeout=(1.0, 1.0), total_timeout=0.5)
    with pytest.raises(GatewayTimeout) as info:
        client.send("+380931234567", "x")
    assert info.value.reason == "total deadline exceeded"


def test_a_batch_is_sent_concurrently_and_answered_in_order() -> None:
    lock = threading.Lock()
    in_flight = [0, 0]  # now, most at once

    def handler(request: Seen) -> Any:
        number = re.search(rb"<to>\+?(\d+)</to>", request.body)
        assert number is not None
        if number.group(1).endswith(b"3"):
            return (503, b"busy", {})
        with lock:
            in_flight[0] += 1
            in_flight[1] = max(in_flight)
        time.sleep(0.3)  # a slow gateway: the others arrive while this one waits
        with lock:
            in_flight[0] -= 1
        xml = b'<status id="' + number.group(1) + b'" date=""><state>Accepted</state></status>'
        return (200, xml, {})

    client, gateway = make_client(handler, pool_size=8)
    batch = [SendRequest(f"+38093123456{i}", f"m{i}", uniq_key=f"k{i}") for i in range(8)]
    results = client.send_many(batch)
    assert len(gateway.requests) == 8
    for i, result in enumerate(results):
        if i == 3:
            assert isinstance(result, GatewayHTTPError) and not result.permanent
        else:
            assert isinstance(result, SendResult) and result.gateway_id == f"38093123456{i}"
    assert in_flight[1] > 1  # concurrent, not one after another


def test_throttled_answer_carries_retry_after() -> None:
    client, _ = make_client(answer(b"", 429, **{"Retry-After": "7"}))
    with pytest.raises(GatewayThrottled) as info:
        client.status("1")
    assert info.value.retry_after == 7.0


def test_huge_answer_is_not_read_whole() -> None:
    body = Stream(200 * 1024 * 1024)
    client, _ = make_client(behave(body), max_response_bytes=65536)
    with pytest.raises(GatewayProtocolError, match="larger than 65536"):
        client.send("+380931234567", "x")
    assert body.sent < body.size  # the client hung up long before 200 MB


def test_declared_huge_content_length_is_refused_without_reading() -> None:
    body = Stream(5 * 1024 * 1024, length=True, wait_for_close=True)
    client, _ = make_client(behave(body), max_response_bytes=4096)
    with pytest.raises(GatewayProtocolError):
        client.send("+380931234567", "x")
    wait_until(lambda: body.closed_before_body, 10, "the server to see the close")
    assert body.closed_before_body
    assert body.sent == 0


def test_refused_connection_on_a_closed_port() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    client = IP2SMSClient(
        f"http://127.0.0.1:{port}/ip2sms/", "http://x/", "l", PASSWORD, "S", timeout=(1, 1)
    )
    with pytest.raises(GatewayConnectionError) as info:
        client.send("+380931234567", "x")
    assert info.value.permanent is False
    client.close()


def test_no_exception_text_contains_the_password_or_the_body() -> None:
    handlers: list[Callable[..., Any]] = [
        behave(Sleep(3.0)),
        behave(Reset()),
        answer(f"<error>{PASSWORD} Код 9999</error>".encode(), 200),
        answer(PASSWORD.encode(), 500),
        answer(f"<status><state error='{PASSWORD}'>Sent</state></status>".encode()),
    ]
    for handler in handlers:
        client, _ = make_client(handler, timeout=(1.0, 0.5))
        with pytest.raises(GatewayError) as info:
            client.send("+380931234567", "Код 9999")
        text = f"{info.value!s} {info.value!r} {info.value.__cause__!r} {info.value.__context__!r}"
        assert PASSWORD not in text
        assert "9999" not in text


def test_observer_sees_every_request_with_its_outcome_once_per_batch() -> None:
    batches: list[tuple[str, list[tuple[str, float]]]] = []

    def observe(op: str, outcomes: Any) -> None:
        batches.append((op, list(outcomes)))

    client, _ = make_client(
        answer(b'<status id="1"><state>Accepted</state></status>'), observer=observe
    )
    client.send("+380931234567", "x")
    client.status_many(["1", "2", "3"])
    client_bad, _ = make_client(answer(b"", 503), observer=observe)
    with pytest.raises(GatewayHTTPError):
        client_bad.status("1")
    assert [(op, [outcome for outcome, _ in outcomes]) for op, outcomes in batches] == [
        ("send", ["ok"]),
        ("status", ["ok", "ok", "ok"]),
        ("status", ["http_5xx"]),
    ]
    assert all(seconds > 0 for _, outcomes in batches for _, seconds in outcomes)


def test_failing_observer_does_not_break_a_send() -> None:
    def boom(*args: object) -> None:
        raise RuntimeError("metrics down")

    client, _ = make_client(
        answer(b'<status id="1"><state>Accepted</state></status>'), observer=boom
    )
    assert client.send("+380931234567", "x").gateway_id == "1"


def test_client_is_a_context_manager_that_closes_on_exit() -> None:
    client, _ = make_client(answer(b'<status id="1"><state>Accepted</state></status>'))
    before = set(threading.enumerate())
    with client as entered:
        assert entered is client
        assert client.send("+380931234567", "x").gateway_id == "1"
        started = [t for t in threading.enumerate() if t not in before]
    # The send pool's thread, and the server's thread for its kept-alive connection.
    (loop_thread,) = [t for t in started if t.name == "ip2sms-send"]
    (connection,) = [t for t in started if t is not loop_thread]
    assert not loop_thread.is_alive()
    connection.join(5)  # the server notices the closed connection on its own thread
    assert not connection.is_alive()


def test_from_settings_uses_the_settings_values() -> None:
    from sms_pipeline.settings import load_settings

    settings = load_settings(
        ip2sms_login="acct", ip2sms_password="pw-from-settings", sms_gateway_connections=5
    )
    client = IP2SMSClient.from_settings(settings)
    assert client.login == "acct"
    assert client.timeout == (settings.ip2sms_connect_timeout, settings.ip2sms_read_timeout)
    assert client.total_timeout == settings.ip2sms_total_timeout
    assert client.pool_size == 5
    assert "pw-from-settings" not in repr(client)
    client.close()


def test_proxy_variables_in_the_environment_are_not_used(monkeypatch: pytest.MonkeyPatch) -> None:
    # A gateway is configured, not discovered: a proxy from the environment would see our
    # Basic-auth credentials and every message.
    proxy = LoopbackGateway(answer(b'<status id="via-proxy"><state>Accepted</state></status>'))
    _made.append(proxy)
    for name in (
        "http_proxy",
        "HTTP_PROXY",
        "https_proxy",
        "HTTPS_PROXY",
        "all_proxy",
        "ALL_PROXY",
    ):
        monkeypatch.setenv(name, proxy.url)
    monkeypatch.delenv("no_proxy", raising=False)
    monkeypatch.delenv("NO_PROXY", raising=False)
    client, gateway = make_client(answer(b'<status id="direct"><state>Accepted</state></status>'))
    assert client.send("+380931234567", "x").gateway_id == "direct"
    assert proxy.requests == []
    assert len(gateway.requests) == 1


def test_batches_from_two_threads_share_the_pool_concurrently() -> None:
    # One pool thread drives every transfer: a batch handed over while another waits on the
    # gateway starts at once, it does not queue behind it.
    def slow(request: Seen) -> Any:
        time.sleep(0.6)
        return (200, b'<status id="1"><state>Delivered</state></status>', {})

    client, gateway = make_client(slow)
    results: list[Any] = []
    started = time.monotonic()
    threads = [
        threading.Thread(target=lambda: results.append(client.status_many(["1", "2", "3"])))
        for _ in range(2)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert time.monotonic() - started < 1.1  # one round trip, not two
    assert [r.status.value for batch in results for r in batch] == ["Delivered"] * 6
    assert len(gateway.requests) == 6


def test_a_closed_pool_answers_at_once_with_a_transient_error() -> None:
    client, gateway = make_client(answer(b'<status id="1"><state>Accepted</state></status>'))
    assert client.status("1").gateway_id == "1"
    pool = client._pools.get("status")  # type: ignore[union-attr]
    pool.close()
    started = time.monotonic()
    (reply,) = pool.exchange(f"{gateway.url}/ip2sms-request/", [b"<request/>"])
    assert time.monotonic() - started < 1
    assert isinstance(reply.error, GatewayConnectionError)
    assert reply.error.permanent is False
    # The client replaces a stopped pool: the next request goes out again.
    assert client.status("1").gateway_id == "1"


def _self_signed(folder: Any) -> tuple[str, str]:
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("openssl not installed: cannot make a certificate for the TLS test")
    cert, key = str(folder / "gateway.pem"), str(folder / "gateway.key")
    subprocess.run(
        [openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
         "-keyout", key, "-out", cert],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    return cert, key


def test_https_gateway_is_verified_against_the_cas_python_trusts(
    tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # pycurl's wheels look for a CA bundle where Debian has none (every HTTPS send failed
    # with curl error 77): the transport names the CAs Python's ssl module uses instead.
    import ssl

    cert, key = _self_signed(tmp_path)
    gateway = LoopbackGateway(answer(b'<status id="tls"><state>Accepted</state></status>'))
    _made.append(gateway)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    gateway.server.socket = context.wrap_socket(gateway.server.socket, server_side=True)
    url = gateway.url.replace("http://", "https://")

    empty = tmp_path / "no-cas"
    empty.mkdir()
    monkeypatch.setenv("SSL_CERT_DIR", str(empty))
    monkeypatch.setenv("SSL_CERT_FILE", cert)  # our gateway's CA is trusted
    trusting = IP2SMSClient(f"{url}/ip2sms/", f"{url}/ip2sms-request/", "l", PASSWORD, "S")
    _made.append(trusting)
    assert trusting.send("+380931234567", "x").gateway_id == "tls"

    monkeypatch.setenv("SSL_CERT_FILE", str(empty / "none.pem"))  # nothing trusted
    doubting = IP2SMSClient(f"{url}/ip2sms/", f"{url}/ip2sms-request/", "l", PASSWORD, "S")
    _made.append(doubting)
    with pytest.raises(GatewayConnectionError) as info:
        doubting.send("+380931234567", "x")
    assert "curl error 60" in info.value.reason or "curl error 77" in info.value.reason

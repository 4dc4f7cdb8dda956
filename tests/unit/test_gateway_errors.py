"""Error classes, and the client's sorting of every failure into permanent / transient."""

from __future__ import annotations

import io
import pickle
import socket
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from typing import Any

import pytest
import requests
import requests.auth
from requests.adapters import BaseAdapter

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
)
from sms_pipeline.gateway.client import parse_retry_after
from sms_pipeline.gateway.errors import OUTCOMES, rejection

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


# ------------------------------------------------------------------ client over a fake transport


class _Body(io.RawIOBase):
    """A lazily generated answer body that counts what was read."""

    def __init__(self, size: int, chunk: bytes = b" ") -> None:
        self.remaining = size
        self.served = 0
        self.chunk = chunk

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        n = min(len(buffer), self.remaining)
        buffer[:n] = self.chunk * n
        self.remaining -= n
        self.served += n
        return n


class FakeAdapter(BaseAdapter):
    """Answers every request with what ``handler`` returns (or raises)."""

    def __init__(self, handler: Callable[[requests.PreparedRequest], Any]) -> None:
        super().__init__()
        self.handler = handler
        self.requests: list[requests.PreparedRequest] = []

    def send(self, request: requests.PreparedRequest, **kwargs: Any) -> requests.Response:  # type: ignore[override]
        self.requests.append(request)
        result = self.handler(request)
        if isinstance(result, requests.Response):
            return result
        status, body, headers = result
        response = requests.Response()
        response.status_code = status
        response.headers.update(headers)
        response.raw = body if isinstance(body, io.RawIOBase) else io.BytesIO(body)
        response.url = request.url or ""
        response.request = request
        return response

    def close(self) -> None:
        pass


def make_client(
    handler: Callable[[requests.PreparedRequest], Any], **kwargs: Any
) -> tuple[IP2SMSClient, FakeAdapter]:
    adapter = FakeAdapter(handler)
    session = requests.Session()
    session.mount("http://", adapter)
    session.auth = ("login", PASSWORD)
    client = IP2SMSClient(
        "http://gw/ip2sms/",
        "http://gw/ip2sms-request/",
        "login",
        PASSWORD,
        "HEALTH",
        session=session,
        **kwargs,
    )
    return client, adapter


def answer(body: bytes, status: int = 200, **headers: str) -> Callable[..., Any]:
    return lambda request: (status, body, headers)


def raising(exc: Exception) -> Callable[..., Any]:
    def handler(request: requests.PreparedRequest) -> Any:
        raise exc

    return handler


def test_password_is_absent_from_client_repr_and_str() -> None:
    client = IP2SMSClient("http://gw/a", "http://gw/b", "login", PASSWORD, "HEALTH")
    assert PASSWORD not in repr(client)
    assert PASSWORD not in str(client)
    assert PASSWORD not in repr(vars(client))
    client.close()


def test_client_builds_its_own_session_with_basic_auth_and_pool() -> None:
    client = IP2SMSClient("http://gw/a", "http://gw/b", "login", PASSWORD, "S", pool_size=7)
    adapter = client._session.get_adapter("http://gw/a")
    assert adapter._pool_maxsize == 7  # type: ignore[attr-defined]
    auth = client._session.auth
    assert isinstance(auth, requests.auth.HTTPBasicAuth)
    assert (auth.username, auth.password) == ("login", PASSWORD)
    client.close()


def test_send_posts_utf8_xml_with_the_right_content_type() -> None:
    client, adapter = make_client(
        answer(b'<status id="1" date=""><state>Accepted</state></status>'), validity="+2 hour"
    )
    result = client.send("+380931234567", "Код 1234", uniq_key="k", ext_id="e")
    request = adapter.requests[0]
    assert request.headers["Content-Type"] == "text/xml; charset=utf-8"
    assert request.headers["Authorization"].startswith("Basic ")
    assert isinstance(request.body, bytes)
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
        (raising(requests.ReadTimeout("read timed out")), GatewayTimeout, False, "timeout"),
        (raising(requests.ConnectTimeout("connect")), GatewayTimeout, False, "timeout"),
        (raising(requests.ConnectionError("refused")), GatewayConnectionError, False, "refused"),
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
    client, _ = make_client(handler)
    with pytest.raises(cls) as info:
        client.send("+380931234567", "x")
    assert type(info.value) is cls
    assert info.value.permanent is permanent
    assert info.value.outcome == outcome


def test_throttled_answer_carries_retry_after() -> None:
    client, _ = make_client(answer(b"", 429, **{"Retry-After": "7"}))
    with pytest.raises(GatewayThrottled) as info:
        client.status("1")
    assert info.value.retry_after == 7.0


def test_huge_answer_is_not_read_whole() -> None:
    body = _Body(5 * 1024 * 1024)
    client, _ = make_client(lambda r: (200, body, {}), max_response_bytes=65536)
    with pytest.raises(GatewayProtocolError, match="larger than 65536"):
        client.send("+380931234567", "x")
    assert body.served <= 65536 + 16384


def test_declared_huge_content_length_is_refused_without_reading() -> None:
    body = _Body(10)
    client, _ = make_client(
        lambda r: (200, body, {"Content-Length": str(5 * 1024 * 1024)}), max_response_bytes=4096
    )
    with pytest.raises(GatewayProtocolError):
        client.send("+380931234567", "x")
    assert body.served == 0


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
        raising(requests.ReadTimeout(f"timeout {PASSWORD}")),
        raising(requests.ConnectionError(f"refused {PASSWORD}")),
        answer(f"<error>{PASSWORD} Код 9999</error>".encode(), 200),
        answer(PASSWORD.encode(), 500),
        answer(f"<status><state error='{PASSWORD}'>Sent</state></status>".encode()),
    ]
    for handler in handlers:
        client, _ = make_client(handler)
        with pytest.raises(GatewayError) as info:
            client.send("+380931234567", "Код 9999")
        text = f"{info.value!s} {info.value!r} {info.value.__cause__!r} {info.value.__context__!r}"
        assert PASSWORD not in text
        assert "9999" not in text


def test_observer_sees_every_request_with_its_outcome() -> None:
    seen: list[tuple[str, str, float]] = []
    client, _ = make_client(
        answer(b'<status id="1"><state>Accepted</state></status>'),
        observer=lambda op, outcome, seconds: seen.append((op, outcome, seconds)),
    )
    client.send("+380931234567", "x")
    client.status("1")
    client_bad, _ = make_client(answer(b"", 503), observer=lambda *a: seen.append(a))
    with pytest.raises(GatewayHTTPError):
        client_bad.status("1")
    assert [(op, outcome) for op, outcome, _ in seen] == [
        ("send", "ok"),
        ("status", "ok"),
        ("status", "http_5xx"),
    ]
    assert all(seconds >= 0 for *_, seconds in seen)


def test_failing_observer_does_not_break_a_send() -> None:
    def boom(*args: object) -> None:
        raise RuntimeError("metrics down")

    client, _ = make_client(
        answer(b'<status id="1"><state>Accepted</state></status>'), observer=boom
    )
    assert client.send("+380931234567", "x").gateway_id == "1"


def test_client_is_a_context_manager() -> None:
    with IP2SMSClient("http://gw/a", "http://gw/b", "l", PASSWORD, "S") as client:
        assert isinstance(client, IP2SMSClient)


def test_from_settings_uses_the_settings_values() -> None:
    from sms_pipeline.settings import load_settings

    settings = load_settings(
        ip2sms_login="acct", ip2sms_password="pw-from-settings", sms_gateway_connections=5
    )
    client = IP2SMSClient.from_settings(settings)
    assert client.login == "acct"
    assert client.timeout == (settings.ip2sms_connect_timeout, settings.ip2sms_read_timeout)
    assert client._session.get_adapter(client.send_url)._pool_maxsize == 5  # type: ignore[attr-defined]
    assert "pw-from-settings" not in repr(client)
    client.close()

"""A synchronous IP2SMS client over one pooled ``requests.Session``.

Thread-safe for concurrent ``send``/``status`` calls from a worker's thread pool (the
session's connection pool is sized to the worker concurrency). Every failure is sorted
into permanent/transient in :meth:`IP2SMSClient._exchange` and :func:`_send_result`
(see :mod:`sms_pipeline.gateway.errors`), nowhere else.
"""

from __future__ import annotations

import email.utils
import logging
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from types import TracebackType
from typing import TYPE_CHECKING, Final, Literal, Self, TypeVar

import requests
from requests.adapters import HTTPAdapter
from requests.auth import HTTPBasicAuth

from sms_pipeline.gateway.codec import (
    DEFAULT_MAX_BYTES,
    ParsedAnswer,
    ParsedState,
    build_send_xml,
    build_status_xml,
    parse_answer,
)
from sms_pipeline.gateway.errors import (
    GatewayConnectionError,
    GatewayError,
    GatewayHTTPError,
    GatewayProtocolError,
    GatewayRejected,
    GatewayTimeout,
    rejection,
)
from sms_pipeline.gateway.statuses import GatewayStatus

if TYPE_CHECKING:
    from sms_pipeline.settings import Settings

log = logging.getLogger(__name__)

Op = Literal["send", "status"]
Observer = Callable[[str, str, float], None]
"""Called after every request with (op, outcome, seconds); outcome is "ok" or an error's."""

_CHUNK: Final = 8192
# Statuses that mean "the gateway did not take the message", whatever the id says.
_SEND_FAILURES: Final = frozenset({GatewayStatus.REJECTED, GatewayStatus.UNACCEPTED})


_R = TypeVar("_R", "SendResult", "StatusResult")
_A = TypeVar("_A")
_B = TypeVar("_B")


@dataclass(frozen=True, slots=True)
class StatusResult:
    """The gateway's answer about one message."""

    gateway_id: str | None
    status: GatewayStatus
    date: datetime | None
    date_raw: str | None
    error: str | None
    ext_id: str | None
    raw: bytes = field(repr=False)


@dataclass(frozen=True, slots=True)
class SendResult:
    """A submitted message. ``items`` lists every (id, state, error) of a group answer.

    ``gateway_id`` may be None when the gateway accepted without giving an id: the message
    went out but cannot be polled.
    """

    gateway_id: str | None
    status: GatewayStatus
    date: datetime | None
    date_raw: str | None
    error: str | None
    ext_id: str | None
    raw: bytes = field(repr=False)
    group_id: str | None = None
    items: tuple[ParsedState, ...] = ()


@dataclass(frozen=True, slots=True)
class SendRequest:
    """One message of a batch for :meth:`IP2SMSClient.send_many`."""

    phone_number: str
    body: str = field(repr=False)
    ext_id: str | None = None
    uniq_key: str | None = None
    source: str | None = None
    validity: str | None = None


def parse_retry_after(value: str | None, *, now: datetime | None = None) -> float | None:
    """Seconds from a Retry-After header (delta-seconds or HTTP-date); None if absent/bad."""
    if value is None or not value.strip():
        return None
    text = value.strip()
    try:
        seconds = float(text)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(text)
        except (TypeError, ValueError, IndexError, OverflowError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        seconds = (when - (now or datetime.now(UTC))).total_seconds()
    if seconds != seconds or seconds in (float("inf"), float("-inf")):  # NaN / inf
        return None
    return max(0.0, seconds)


def _send_result(answer: ParsedAnswer, raw: bytes) -> SendResult:
    """Turn a parsed send answer into a result, or raise the error it means."""
    good = [
        item
        for item in answer.items
        if item.status not in _SEND_FAILURES
        # An Accepted with an error (seen in the wild, without an id) was not taken.
        and not (item.error and item.status is GatewayStatus.ACCEPTED)
    ]
    if not good:
        first = answer.first
        if first.status is GatewayStatus.ACCEPTED:
            raise GatewayRejected(first.error, reason=f"accepted with error: {first.error}")
        raise rejection(first.error)
    item = good[0]
    return SendResult(
        gateway_id=item.gateway_id,
        status=item.status,
        date=answer.date,
        date_raw=answer.date_raw,
        error=item.error,
        ext_id=answer.ext_id,
        raw=raw,
        group_id=answer.group_id,
        items=answer.items,
    )


def _status_result(answer: ParsedAnswer, raw: bytes, gateway_id: str) -> StatusResult:
    item = next((i for i in answer.items if i.gateway_id == gateway_id), answer.first)
    return StatusResult(
        gateway_id=item.gateway_id or gateway_id,
        status=item.status,
        date=answer.date,
        date_raw=answer.date_raw,
        error=item.error,
        ext_id=answer.ext_id,
        raw=raw,
    )


class IP2SMSClient:
    """Client for the IP2SMS HTTP XML gateway.

    ``send`` and ``status`` return frozen results or raise a
    :class:`~sms_pipeline.gateway.errors.GatewayError` whose ``permanent`` flag says
    whether a retry can help. The password is kept private and never shown.
    """

    def __init__(
        self,
        send_url: str,
        status_url: str,
        login: str,
        password: str,
        source: str,
        timeout: tuple[float, float] = (3.05, 10.0),
        session: requests.Session | None = None,
        *,
        validity: str | None = None,
        max_response_bytes: int = DEFAULT_MAX_BYTES,
        pool_size: int = 10,
        observer: Observer | None = None,
    ) -> None:
        self.send_url = send_url
        self.status_url = status_url
        self.login = login
        self.source = source
        self.timeout = timeout
        self.validity = validity
        self.max_response_bytes = max_response_bytes
        self.observer = observer
        self.pool_size = pool_size
        self._pool: ThreadPoolExecutor | None = None
        self._pool_lock = threading.Lock()
        self._own_session = session is None
        if session is None:
            session = requests.Session()
            adapter = HTTPAdapter(pool_connections=2, pool_maxsize=pool_size)
            session.mount("http://", adapter)
            session.mount("https://", adapter)
            # A gateway is configured, not discovered: never pick up .netrc or env proxies
            # that could replace our credentials.
            session.trust_env = False
        if session.auth is None:
            # The password lives only in the session's auth object, never on the client.
            session.auth = HTTPBasicAuth(login, password)
        self._session = session
        self._headers = {"Content-Type": "text/xml; charset=utf-8", "Accept": "text/xml, */*"}

    @classmethod
    def from_settings(
        cls,
        settings: Settings | None = None,
        session: requests.Session | None = None,
        *,
        observer: Observer | None = None,
    ) -> IP2SMSClient:
        """A client configured from :class:`~sms_pipeline.settings.Settings`."""
        if settings is None:
            from sms_pipeline.settings import get_settings

            settings = get_settings()
        return cls(
            settings.ip2sms_send_url,
            settings.ip2sms_status_url,
            settings.ip2sms_login,
            settings.ip2sms_password.get_secret_value(),
            settings.ip2sms_source,
            (settings.ip2sms_connect_timeout, settings.ip2sms_read_timeout),
            session,
            validity=settings.ip2sms_validity,
            max_response_bytes=settings.ip2sms_max_response_bytes,
            pool_size=settings.sms_gateway_connections,
            observer=observer,
        )

    def __repr__(self) -> str:
        return (
            f"IP2SMSClient(send_url={self.send_url!r}, status_url={self.status_url!r}, "
            f"login={self.login!r}, password='***', source={self.source!r})"
        )

    __str__ = __repr__

    # ------------------------------------------------------------------ public API

    def send(
        self,
        phone_number: str,
        body: str,
        *,
        ext_id: str | None = None,
        uniq_key: str | None = None,
        start: str | None = None,
        validity: str | None = None,
        source: str | None = None,
    ) -> SendResult:
        """Submit one SMS. Raises GatewayError (check ``.permanent``) or ValueError for
        text XML cannot carry (a caller bug: nothing was sent)."""
        payload = build_send_xml(
            phone_number,
            body,
            source=source or self.source,
            ext_id=ext_id,
            uniq_key=uniq_key,
            start=start,
            validity=validity if validity is not None else self.validity,
        )
        return self._exchange("send", self.send_url, payload, _send_result)

    def send_many(self, requests_: Sequence[SendRequest]) -> list[SendResult | GatewayError]:
        """Submit a batch concurrently; one result or GatewayError per request, in order.

        A request whose text XML cannot carry (a caller bug) comes back as a permanent
        GatewayRejected: nothing was sent for it.
        """

        def one(r: SendRequest) -> SendResult | GatewayError:
            try:
                return self.send(
                    r.phone_number,
                    r.body,
                    ext_id=r.ext_id,
                    uniq_key=r.uniq_key,
                    source=r.source,
                    validity=r.validity,
                )
            except GatewayError as exc:
                return exc
            except ValueError as exc:
                return GatewayRejected(None, reason=f"not sendable: {exc}")

        return self._concurrently(one, requests_)

    def status_many(self, gateway_ids: Sequence[str]) -> list[StatusResult | GatewayError]:
        """Ask for several statuses concurrently; one result or GatewayError per id, in order."""

        def one(gateway_id: str) -> StatusResult | GatewayError:
            try:
                return self.status(gateway_id)
            except GatewayError as exc:
                return exc

        return self._concurrently(one, gateway_ids)

    def status(self, gateway_id: str) -> StatusResult:
        """Ask for one message's status; any status word is returned, none raises."""
        payload = build_status_xml(gateway_id)

        def convert(answer: ParsedAnswer, raw: bytes) -> StatusResult:
            return _status_result(answer, raw, gateway_id)

        return self._exchange("status", self.status_url, payload, convert)

    def _concurrently(self, fn: Callable[[_A], _B], items: Sequence[_A]) -> list[_B]:
        if len(items) <= 1:
            return [fn(item) for item in items]
        with self._pool_lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(self.pool_size, thread_name_prefix="ip2sms")
            pool = self._pool
        return list(pool.map(fn, items))

    def close(self) -> None:
        """Close the session if this client created it."""
        with self._pool_lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=False)
        if self._own_session:
            self._session.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # ------------------------------------------------------------------ internals

    def _exchange(
        self,
        op: Op,
        url: str,
        payload: bytes,
        convert: Callable[[ParsedAnswer, bytes], _R],
    ) -> _R:
        started = time.perf_counter()
        outcome = "ok"
        try:
            raw = self.post_xml(url, payload)
            result = convert(parse_answer(raw, max_bytes=self.max_response_bytes), raw)
        except GatewayError as exc:
            outcome = exc.outcome
            # The transport exception behind it may quote URLs, answers or headers: keep
            # it out of tracebacks and error reporters, the reason says what happened.
            exc.__cause__ = exc.__context__ = None
            raise
        finally:
            self._observe(op, outcome, time.perf_counter() - started)
        if op == "send":
            log.debug("ip2sms send ok gateway_id=%s status=%s", result.gateway_id, result.status)
        return result

    def post_xml(self, url: str, payload: bytes) -> bytes:
        """POST XML with our auth and limits; the answer bytes, or the transport/HTTP GatewayError.

        Public for protocol extensions on the same gateway (the inbound API client).
        """
        try:
            response = self._session.post(
                url,
                data=payload,
                headers=self._headers,
                timeout=self.timeout,
                stream=True,
                allow_redirects=False,
            )
        except requests.Timeout as exc:
            kind = "connect" if isinstance(exc, requests.ConnectTimeout) else "read"
            raise GatewayTimeout(f"{kind} timeout") from None
        except requests.ConnectionError as exc:
            raise GatewayConnectionError(f"connection failed ({type(exc).__name__})") from None
        except requests.RequestException as exc:
            raise GatewayConnectionError(f"request failed ({type(exc).__name__})") from None
        with response:
            code = response.status_code
            if not 200 <= code < 300:
                if 300 <= code < 400 or code < 200:
                    # A redirect would turn our POST into a GET elsewhere: don't follow.
                    raise GatewayProtocolError(f"unexpected HTTP {code}")
                raise GatewayHTTPError.from_status(
                    code, parse_retry_after(response.headers.get("Retry-After"))
                )
            return self._read_limited(response)

    def _read_limited(self, response: requests.Response) -> bytes:
        limit = self.max_response_bytes
        declared = response.headers.get("Content-Length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            raise GatewayProtocolError(f"answer larger than {limit} bytes")
        chunks: list[bytes] = []
        size = 0
        try:
            # Counting decoded bytes also stops a gzip bomb.
            for chunk in response.iter_content(_CHUNK):
                size += len(chunk)
                if size > limit:
                    raise GatewayProtocolError(f"answer larger than {limit} bytes")
                chunks.append(chunk)
        except requests.ConnectionError as exc:
            # requests reports a read timeout inside the body as a ConnectionError.
            if "timed out" in str(exc).lower():
                raise GatewayTimeout("read timeout") from None
            raise GatewayConnectionError(f"answer cut off ({type(exc).__name__})") from None
        except requests.RequestException as exc:
            raise GatewayProtocolError(f"answer unreadable ({type(exc).__name__})") from None
        return b"".join(chunks)

    def _observe(self, op: str, outcome: str, seconds: float) -> None:
        if self.observer is None:
            return
        try:
            self.observer(op, outcome, seconds)
        except Exception:
            # Metrics must never turn a good send into a failure (and a resend).
            log.exception("ip2sms observer failed")


__all__ = [
    "IP2SMSClient",
    "Observer",
    "SendRequest",
    "SendResult",
    "StatusResult",
    "parse_retry_after",
]

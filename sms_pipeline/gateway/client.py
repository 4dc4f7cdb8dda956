"""The IP2SMS client: one keep-alive connection pool, batches sent concurrently.

The transport is aiohttp on an event loop of the client's own (a daemon thread, started on
first use and again after a fork). ``send_many``/``status_many`` run a whole batch as
concurrent requests on that loop, so a batch costs one gateway round trip and no thread
per request; ``send``/``status``/``post_xml`` are the same exchange for one request,
callable from any thread. Sends and status checks use separate connection pools, so
status traffic can never take the connections sends need.

Every exchange has a total deadline (IP2SMS_TOTAL_TIMEOUT: connect, headers and body
together) on top of the connect and per-read timeouts: a server that drips its answer a
byte at a time is cut off at the deadline. Every failure is sorted into
permanent/transient in :func:`_transport_error`, :meth:`IP2SMSClient._apost` and
:func:`_send_result` (see :mod:`sms_pipeline.gateway.errors`), nowhere else.
"""

from __future__ import annotations

import asyncio
import base64
import email.utils
import logging
import os
import threading
import time
import weakref
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from types import TracebackType
from typing import TYPE_CHECKING, Final, Literal, Self, TypeVar

import aiohttp

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
    GatewayRequestInvalid,
    GatewayTimeout,
    Outcome,
    rejection,
)
from sms_pipeline.gateway.statuses import GatewayStatus

if TYPE_CHECKING:
    from sms_pipeline.settings import Settings

log = logging.getLogger(__name__)

Op = Literal["send", "status"]
Observer = Callable[[Op, Outcome, float], None]
"""Called after every request with (op, outcome, seconds); outcome is OK or an error's."""

_CHUNK: Final = 8192
# Statuses that mean "the gateway did not take the message", whatever the id says.
_SEND_FAILURES: Final = frozenset({GatewayStatus.REJECTED, GatewayStatus.UNACCEPTED})


_R = TypeVar("_R", "SendResult", "StatusResult")
_T = TypeVar("_T")


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
    # Parts of the accepted answer that could not be read (see ParsedAnswer.problems):
    # the message was still taken, and must be recorded as submitted.
    problems: tuple[str, ...] = ()


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
        problems=answer.problems,
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


def _unbuildable(exc: Exception) -> GatewayRequestInvalid:
    # ValueError messages from the codec name a field and a code point, never the text;
    # anything else is described by its type only.
    detail = str(exc) if isinstance(exc, ValueError) else type(exc).__name__
    return GatewayRequestInvalid(f"request could not be built: {detail}")


def _transport_error(exc: BaseException) -> GatewayError:
    """The GatewayError a transport failure means (timeouts and lost connections are
    transient). The reason names the kind of failure only, never the exception's text."""
    if isinstance(exc, aiohttp.ConnectionTimeoutError):
        return GatewayTimeout("connect timeout")
    if isinstance(exc, aiohttp.SocketTimeoutError | aiohttp.ServerTimeoutError):
        return GatewayTimeout("read timeout")
    if isinstance(exc, TimeoutError):
        return GatewayTimeout("total deadline exceeded")
    if isinstance(exc, aiohttp.ClientConnectorError):
        return GatewayConnectionError(f"connection failed ({type(exc).__name__})")
    if isinstance(exc, aiohttp.ServerDisconnectedError | aiohttp.ClientPayloadError):
        return GatewayConnectionError(f"answer cut off ({type(exc).__name__})")
    if isinstance(exc, aiohttp.ClientResponseError):
        return GatewayProtocolError(f"answer unreadable ({type(exc).__name__})")
    if isinstance(exc, aiohttp.ClientError | OSError):
        return GatewayConnectionError(f"connection failed ({type(exc).__name__})")
    return GatewayConnectionError(f"request failed ({type(exc).__name__})")


class _Loop:
    """An event loop on a daemon thread, and the aiohttp sessions that live on it."""

    def __init__(self, login: str, password: str, pool_size: int, timeout: tuple[float, float]):
        self.pid = os.getpid()
        token = base64.b64encode(f"{login}:{password}".encode()).decode("ascii")
        self._headers = {"Authorization": f"Basic {token}"}
        self._pool_size = pool_size
        self._timeout = aiohttp.ClientTimeout(
            total=None, sock_connect=timeout[0], sock_read=timeout[1]
        )
        self._sessions: dict[str, aiohttp.ClientSession] = {}
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="ip2sms", daemon=True)
        self._thread.start()

    def __repr__(self) -> str:
        return f"_Loop(pid={self.pid})"

    def session(self, pool: str) -> aiohttp.ClientSession:
        """The session of `pool` ("send" or "status"); called on the loop only."""
        session = self._sessions.get(pool)
        if session is None:
            connector = aiohttp.TCPConnector(
                limit=self._pool_size, limit_per_host=self._pool_size, keepalive_timeout=30
            )
            # trust_env stays off: a gateway is configured, not discovered (no .netrc or
            # proxy variables that could replace our credentials).
            session = aiohttp.ClientSession(
                connector=connector, headers=self._headers, timeout=self._timeout, trust_env=False
            )
            self._sessions[pool] = session
        return session

    def run(self, coro: Awaitable[_T]) -> _T:
        return asyncio.run_coroutine_threadsafe(_awaited(coro), self.loop).result()

    def close(self) -> None:
        async def close_sessions() -> None:
            for session in self._sessions.values():
                await session.close()
            self._sessions.clear()

        if threading.current_thread() is self._thread:  # a finalizer run on the loop itself
            self.loop.call_soon(self.loop.stop)
            return
        if self.pid == os.getpid() and self.loop.is_running():
            try:
                self.run(close_sessions())
            finally:
                self.loop.call_soon_threadsafe(self.loop.stop)
                self._thread.join(5)
        if not self.loop.is_running():
            self.loop.close()


async def _awaited(awaitable: Awaitable[_T]) -> _T:
    return await awaitable


class IP2SMSClient:
    """Client for the IP2SMS HTTP XML gateway.

    ``send`` and ``status`` return frozen results or raise a
    :class:`~sms_pipeline.gateway.errors.GatewayError` whose ``permanent`` flag says
    whether a retry can help; ``send_many``/``status_many`` return one result or error per
    item. The password is kept private and never shown. Thread-safe.
    """

    def __init__(
        self,
        send_url: str,
        status_url: str,
        login: str,
        password: str,
        source: str,
        timeout: tuple[float, float] = (3.05, 10.0),
        *,
        total_timeout: float = 15.0,
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
        self.total_timeout = total_timeout
        self.validity = validity
        self.max_response_bytes = max_response_bytes
        self.observer = observer
        self.pool_size = pool_size
        self._headers = {"Content-Type": "text/xml; charset=utf-8", "Accept": "text/xml, */*"}
        self._loop_lock = threading.Lock()
        self._loop: _Loop | None = None
        # The password lives only in a closure that builds the loop's auth, never on the client.

        def new_loop() -> _Loop:
            return _Loop(login, password, pool_size, timeout)

        self._new_loop: Callable[[], _Loop] = new_loop

    @classmethod
    def from_settings(
        cls,
        settings: Settings | None = None,
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
            total_timeout=settings.ip2sms_total_timeout,
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
        """Submit one SMS. Raises GatewayError (check ``.permanent``); a request that
        cannot be built (text XML cannot carry) is GatewayRequestInvalid, permanent, and
        nothing is sent."""
        payload = self._send_payload(
            SendRequest(phone_number, body, ext_id, uniq_key, source, validity), start=start
        )
        return self._run(self._aexchange("send", self.send_url, payload, _send_result))

    def _send_payload(self, r: SendRequest, *, start: str | None = None) -> bytes:
        try:
            return build_send_xml(
                r.phone_number,
                r.body,
                source=r.source or self.source,
                ext_id=r.ext_id,
                uniq_key=r.uniq_key,
                start=start,
                validity=r.validity if r.validity is not None else self.validity,
            )
        except Exception as exc:
            raise _unbuildable(exc) from None

    def send_many(self, batch: Sequence[SendRequest]) -> list[SendResult | GatewayError]:
        """Submit a batch concurrently; one result or GatewayError per request, in order.

        A request that cannot be built comes back as a permanent GatewayRequestInvalid:
        nothing was sent for it.
        """

        async def one(r: SendRequest) -> SendResult | GatewayError:
            try:
                payload = self._send_payload(r)
                return await self._aexchange("send", self.send_url, payload, _send_result)
            except GatewayError as exc:
                return exc

        return self._run(_gather([one(r) for r in batch])) if batch else []

    def status(self, gateway_id: str) -> StatusResult:
        """Ask for one message's status; any status word is returned, none raises."""
        return self._run(self._astatus(gateway_id))

    def status_many(self, gateway_ids: Sequence[str]) -> list[StatusResult | GatewayError]:
        """Ask for several statuses concurrently; one result or GatewayError per id, in order."""

        async def one(gateway_id: str) -> StatusResult | GatewayError:
            try:
                return await self._astatus(gateway_id)
            except GatewayError as exc:
                return exc

        return self._run(_gather([one(i) for i in gateway_ids])) if gateway_ids else []

    def post_xml(self, url: str, payload: bytes) -> bytes:
        """POST XML with our auth and limits; the answer bytes, or the transport/HTTP GatewayError.

        Public for protocol extensions on the same gateway (the inbound API client).
        """
        return self._run(self._apost("status", url, payload))

    def close(self) -> None:
        """Close the connection pools and stop the client's event loop."""
        with self._loop_lock:
            loop, self._loop = self._loop, None
        if loop is not None:
            loop.close()

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

    def _run(self, coro: Awaitable[_T]) -> _T:
        with self._loop_lock:
            loop = self._loop
            if loop is None or loop.pid != os.getpid():  # first use, or a forked child
                loop = self._loop = self._new_loop()
                # A client dropped without close() still closes its pools and loop.
                weakref.finalize(self, loop.close)
        return loop.run(coro)

    def _current_loop(self) -> _Loop:
        loop = self._loop
        assert loop is not None  # only called from coroutines that _run scheduled
        return loop

    async def _astatus(self, gateway_id: str) -> StatusResult:
        try:
            payload = build_status_xml(gateway_id)
        except Exception as exc:
            raise _unbuildable(exc) from None

        def convert(answer: ParsedAnswer, raw: bytes) -> StatusResult:
            return _status_result(answer, raw, gateway_id)

        return await self._aexchange("status", self.status_url, payload, convert)

    async def _aexchange(
        self,
        op: Op,
        url: str,
        payload: bytes,
        convert: Callable[[ParsedAnswer, bytes], _R],
    ) -> _R:
        started = time.perf_counter()
        outcome = Outcome.OK
        try:
            raw = await self._apost(op, url, payload)
            try:
                result = convert(parse_answer(raw, max_bytes=self.max_response_bytes), raw)
            except GatewayError:
                raise
            except Exception as exc:
                # Whatever else an answer can make the parser raise is still an answer we
                # could not read: transient (a resend carries the same uniq_key), never a
                # crash that leaves the message SENDING.
                raise GatewayProtocolError(
                    f"answer could not be read ({type(exc).__name__})"
                ) from None
        except GatewayError as exc:
            outcome = exc.outcome
            # The transport exception behind it may quote URLs, answers or headers: keep
            # it out of tracebacks and error reporters, the reason says what happened.
            exc.__cause__ = exc.__context__ = None
            raise
        finally:
            self._observe(op, outcome, time.perf_counter() - started)
        if op == "send" and log.isEnabledFor(logging.DEBUG):
            log.debug("ip2sms send ok gateway_id=%s status=%s", result.gateway_id, result.status)
        return result

    async def _apost(self, pool: str, url: str, payload: bytes) -> bytes:
        session = self._current_loop().session(pool)
        try:
            async with asyncio.timeout(self.total_timeout):
                async with session.post(
                    url, data=payload, headers=self._headers, allow_redirects=False
                ) as response:
                    code = response.status
                    if not 200 <= code < 300:
                        if 300 <= code < 400 or code < 200:
                            # A redirect would turn our POST into a GET elsewhere: don't follow.
                            raise GatewayProtocolError(f"unexpected HTTP {code}")
                        raise GatewayHTTPError.from_status(
                            code, parse_retry_after(response.headers.get("Retry-After"))
                        )
                    return await self._read_limited(response)
        except GatewayError:
            raise
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            raise _transport_error(exc) from None

    async def _read_limited(self, response: aiohttp.ClientResponse) -> bytes:
        limit = self.max_response_bytes
        declared = response.headers.get("Content-Length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            raise GatewayProtocolError(f"answer larger than {limit} bytes")
        chunks: list[bytes] = []
        size = 0
        # Counting decoded bytes also stops a gzip bomb.
        while chunk := await response.content.read(_CHUNK):
            size += len(chunk)
            if size > limit:
                raise GatewayProtocolError(f"answer larger than {limit} bytes")
            chunks.append(chunk)
        return b"".join(chunks)

    def _observe(self, op: Op, outcome: Outcome, seconds: float) -> None:
        if self.observer is None:
            return
        try:
            self.observer(op, outcome, seconds)
        except Exception:
            # Metrics must never turn a good send into a failure (and a resend).
            log.exception("ip2sms observer failed")


async def _gather(coros: Sequence[Awaitable[_T]]) -> list[_T]:
    return list(await asyncio.gather(*coros))


__all__ = [
    "IP2SMSClient",
    "Observer",
    "SendRequest",
    "SendResult",
    "StatusResult",
    "parse_retry_after",
]

"""The IP2SMS client, one per process (long: send, status and balance share its pools).

One keep-alive connection pool per kind of request; a batch runs concurrently.

The transport is libcurl's multi interface on a thread of its own
(:mod:`sms_pipeline.gateway.transport`). ``start_send``/``start_status`` hand requests
over and return one future each, settled as that answer arrives (the send window waits on
them); ``send_many``/``status_many`` are the same and wait for all, so a batch costs one
gateway round trip and no thread per request; ``send``/``status``/``post_xml`` are the
same exchange for one request, callable from any thread. Sends and status checks use
separate connection pools, so status traffic can never take the connections sends need.

Every exchange has a total deadline (IP2SMS_TOTAL_TIMEOUT: connect, headers and body
together) on top of the connect and read timeouts: a server that drips its answer a byte
at a time is cut off at the deadline. Every failure is sorted into permanent/transient in
:func:`sms_pipeline.gateway.transport._transfer_error` (the transport),
:func:`_http_body` (HTTP statuses) and :func:`_send_result` (the answer), see
:mod:`sms_pipeline.gateway.errors`; nowhere else.
"""

from __future__ import annotations

import base64
import concurrent.futures
import email.utils
import functools
import logging
import os
import threading
import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from types import TracebackType
from typing import TYPE_CHECKING, Final, Literal, Self, TypeVar

from sms_pipeline.gateway.codec import (
    DEFAULT_MAX_BYTES,
    ParsedAnswer,
    ParsedState,
    build_send_xml,
    build_status_xml,
    parse_answer,
)
from sms_pipeline.gateway.errors import (
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
from sms_pipeline.gateway.transport import CurlPool, Future, Reply, late_reply
from sms_pipeline.settings import mask_url

if TYPE_CHECKING:
    from sms_pipeline.settings import Settings

log = logging.getLogger(__name__)

Op = Literal["send", "status"]
Observer = Callable[[Op, Sequence[tuple[Outcome, float]]], None]
"""Called with (op, [(outcome, seconds), ...]) once every request of a group started together
(a batch) is answered, one pair per request that went out; outcome is OK or the error's.
Once per batch: a metrics store takes a batch in one call."""

# Statuses that mean "the gateway did not take the message", whatever the id says.
_SEND_FAILURES: Final = frozenset({GatewayStatus.REJECTED, GatewayStatus.UNACCEPTED})


_R = TypeVar("_R", "SendResult", "StatusResult")


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

    phone_number: str = field(repr=False)  # personal data: never in a log line
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


def _http_body(reply: Reply) -> bytes:
    """The answer's body, or the GatewayError its transport failure or HTTP status means."""
    if reply.error is not None:
        raise reply.error
    code = reply.status
    if not 200 <= code < 300:
        if 300 <= code < 400 or code < 200:
            # A redirect would turn our POST into a GET elsewhere: it is not followed.
            raise GatewayProtocolError(f"unexpected HTTP {code}")
        raise GatewayHTTPError.from_status(code, parse_retry_after(reply.header("Retry-After")))
    return reply.body


class _Seen:
    """The outcomes of one group of requests started together, for one observer call once
    the last of them is answered (a metrics store takes a batch in one call)."""

    def __init__(self, size: int) -> None:
        self._left = size
        self._outcomes: list[tuple[Outcome, float]] = []
        self._lock = threading.Lock()

    def add(self, outcome: Outcome, seconds: float) -> list[tuple[Outcome, float]] | None:
        with self._lock:
            self._outcomes.append((outcome, seconds))
            self._left -= 1
            return self._outcomes if self._left == 0 else None


class _Pools:
    """The connection pools ("send", "status") of one process, created on first use."""

    def __init__(self, new_pool: Callable[[str], CurlPool]) -> None:
        self.pid = os.getpid()
        self._new_pool = new_pool
        self._pools: dict[str, CurlPool] = {}
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"_Pools(pid={self.pid})"

    def get(self, name: str) -> CurlPool:
        with self._lock:
            pool = self._pools.get(name)
            if pool is None or pool.stopped:  # a pool whose thread died is replaced
                pool = self._pools[name] = self._new_pool(name)
            return pool

    def close(self) -> None:
        with self._lock:
            pools, self._pools = list(self._pools.values()), {}
        for pool in pools:
            pool.close()


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
        self._pools_lock = threading.Lock()
        self._pools: _Pools | None = None
        # The password lives only in a closure that builds the pools' auth, never on the client.
        token = base64.b64encode(f"{login}:{password}".encode()).decode("ascii")
        headers = (
            f"Authorization: Basic {token}",
            "Content-Type: text/xml; charset=utf-8",
            "Accept: text/xml, */*",
            "Expect:",  # no 100-continue round trip
        )

        def new_pool(name: str) -> CurlPool:
            return CurlPool(
                name,
                headers=headers,
                max_connections=pool_size,
                connect_timeout=timeout[0],
                read_timeout=timeout[1],
                total_timeout=total_timeout,
                max_bytes=max_response_bytes,
            )

        self._new_pools: Callable[[], _Pools] = lambda: _Pools(new_pool)

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
            f"IP2SMSClient(send_url={mask_url(self.send_url)!r}, "
            f"status_url={mask_url(self.status_url)!r}, "
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
        return _raise_error(self._exchange("send", self.send_url, [payload], _send_answer)[0])

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
        return self._wait("send", self.start_send(batch))

    def start_send(self, batch: Sequence[SendRequest]) -> list[Future[SendResult | GatewayError]]:
        """Submit a batch without waiting: one future per request, in order, each settled
        with its result or GatewayError as soon as its own answer is read (by the total
        deadline). A request that cannot be built is settled at once, permanent."""
        built: list[bytes | GatewayError] = []
        for r in batch:
            try:
                built.append(self._send_payload(r))
            except GatewayRequestInvalid as exc:
                built.append(exc)
        return self._start("send", self.send_url, built, _send_answer)

    def status(self, gateway_id: str) -> StatusResult:
        """Ask for one message's status; any status word is returned, none raises."""
        return _raise_error(self.status_many([gateway_id])[0])

    def status_many(self, gateway_ids: Sequence[str]) -> list[StatusResult | GatewayError]:
        """Ask for several statuses concurrently; one result or GatewayError per id, in order."""
        return self._wait("status", self.start_status(gateway_ids))

    def start_status(self, gateway_ids: Sequence[str]) -> list[Future[StatusResult | GatewayError]]:
        """Ask for several statuses without waiting: one future per id, in order."""
        built: list[bytes | GatewayError] = []
        for gateway_id in gateway_ids:
            try:
                built.append(build_status_xml(gateway_id))
            except Exception as exc:
                built.append(_unbuildable(exc))
        return self._start("status", self.status_url, built, _status_of(gateway_ids))

    def deadline(self, op: Op, requests: int) -> float:
        """Seconds by which `requests` started at once are certainly answered."""
        return self._pool(op).deadline(requests)

    def post_xml(self, url: str, payload: bytes) -> bytes:
        """POST XML with our auth and limits; the answer bytes, or the transport/HTTP GatewayError.

        Public for protocol extensions on the same gateway (the inbound API client).
        """
        (future,) = self._submit("status", url, [payload])
        concurrent.futures.wait([future], self.deadline("status", 1))
        reply = late_reply(future)
        try:
            return _http_body(reply)
        except GatewayError as exc:
            exc.__cause__ = exc.__context__ = None
            raise

    def close(self) -> None:
        """Close the connection pools and stop their threads."""
        with self._pools_lock:
            pools, self._pools = self._pools, None
        if pools is not None:
            pools.close()

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

    def _pool(self, op: Op) -> CurlPool:
        with self._pools_lock:
            pools = self._pools
            if pools is None or pools.pid != os.getpid():  # first use, or a forked child
                pools = self._pools = self._new_pools()
                # A client dropped without close() still closes its pools.
                weakref.finalize(self, pools.close)
        return pools.get(op)

    def _submit(self, op: Op, url: str, payloads: Sequence[bytes]) -> list[Future[Reply]]:
        return self._pool(op).submit(url, payloads)

    def _start(
        self,
        op: Op,
        url: str,
        built: Sequence[bytes | GatewayError],
        convert: Callable[[int, ParsedAnswer, bytes], _R],
    ) -> list[Future[_R | GatewayError]]:
        """Start the payloads that could be built (the others settled with their error);
        each answer is converted where it arrives, so a caller only ever sees results."""
        out: list[Future[_R | GatewayError]] = []
        payloads: list[bytes] = []
        slots: list[tuple[int, Future[_R | GatewayError]]] = []
        for index, b in enumerate(built):
            future: Future[_R | GatewayError] = Future()
            out.append(future)
            if isinstance(b, bytes):
                payloads.append(b)
                slots.append((index, future))
            else:
                future.set_result(b)
        if not payloads:
            return out
        replies = self._submit(op, url, payloads)
        seen = _Seen(len(replies))
        for (index, future), reply in zip(slots, replies, strict=True):
            convert_one = functools.partial(self._convert, op, index, future, convert, seen)
            reply.add_done_callback(convert_one)
        return out

    def _convert(
        self,
        op: Op,
        index: int,
        future: Future[_R | GatewayError],
        convert: Callable[[int, ParsedAnswer, bytes], _R],
        seen: _Seen,
        done: Future[Reply],
    ) -> None:
        # Runs on the pool's thread: it must settle `future` whatever happens.
        outcomes: list[tuple[Outcome, float]] | None = None
        try:
            reply = late_reply(done)
            result = self._answer(index, reply, convert)
            if isinstance(result, GatewayError):
                outcomes = seen.add(result.outcome, reply.seconds)
            else:
                outcomes = seen.add(Outcome.OK, reply.seconds)
                if op == "send" and log.isEnabledFor(logging.DEBUG):
                    log.debug(
                        "ip2sms send ok gateway_id=%s status=%s", result.gateway_id, result.status
                    )
        except BaseException as exc:  # a bug here must not leave the caller waiting
            result = GatewayProtocolError(f"answer could not be read ({type(exc).__name__})")
        future.set_result(result)
        if outcomes is not None:  # the group's last answer: its figures in one call
            self._observe(op, outcomes)

    def _wait(
        self, op: Op, futures: Sequence[Future[_R | GatewayError]]
    ) -> list[_R | GatewayError]:
        """Wait for every future (the pool's deadline at most); one result each, in order."""
        if not futures:
            return []
        concurrent.futures.wait(futures, self.deadline(op, len(futures)))
        late = GatewayTimeout("total deadline exceeded")
        return [f.result() if f.done() else late for f in futures]

    def _exchange(
        self,
        op: Op,
        url: str,
        payloads: Sequence[bytes],
        convert: Callable[[int, ParsedAnswer, bytes], _R],
    ) -> list[_R | GatewayError]:
        """POST the payloads concurrently; each answer converted, or its GatewayError."""
        return self._wait(op, self._start(op, url, payloads, convert))

    def _answer(
        self, index: int, reply: Reply, convert: Callable[[int, ParsedAnswer, bytes], _R]
    ) -> _R | GatewayError:
        try:
            raw = _http_body(reply)
            try:
                return convert(index, parse_answer(raw, max_bytes=self.max_response_bytes), raw)
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
            # Keep whatever it was raised from out of tracebacks and error reporters: the
            # reason says what happened.
            exc.__cause__ = exc.__context__ = None
            return exc

    def _observe(self, op: Op, outcomes: Sequence[tuple[Outcome, float]]) -> None:
        if self.observer is None:
            return
        try:
            self.observer(op, outcomes)
        except Exception:
            # Metrics must never turn a good send into a failure (and a resend).
            log.exception("ip2sms observer failed")


def _raise_error(result: _R | GatewayError) -> _R:
    if isinstance(result, GatewayError):
        raise result
    return result


def _status_of(asked: Sequence[str]) -> Callable[[int, ParsedAnswer, bytes], StatusResult]:
    def convert(index: int, answer: ParsedAnswer, raw: bytes) -> StatusResult:
        return _status_result(answer, raw, asked[index])

    return convert


def _send_answer(_index: int, answer: ParsedAnswer, raw: bytes) -> SendResult:
    return _send_result(answer, raw)


__all__ = [
    "IP2SMSClient",
    "Observer",
    "SendRequest",
    "SendResult",
    "StatusResult",
    "parse_retry_after",
]

"""The hooks services call to record metrics (long: one small hook per event or batch).

Metrics must never turn a good send into a failure (and a resend): every hook swallows
its own errors. Labels are bounded: message type, status words, account NAME (the
accounts table bounds it), never a phone number or an id.

A hook never opens a database connection: what it records goes to the store's buffer
(written by the store's own thread), in one `add` per call; an account name it needs is
read through the caller's session and cached. Inside a transaction, increments wait for
its commit.
"""

from __future__ import annotations

import datetime as dt
import functools
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Final, ParamSpec

from sqlalchemy import Connection, event, select
from sqlalchemy.orm import Session

from sms_pipeline.db.models import Account, SendStatus
from sms_pipeline.gateway.client import Op
from sms_pipeline.gateway.errors import Outcome as GatewayOutcome
from sms_pipeline.gateway.statuses import GatewayStatus
from sms_pipeline.metrics import catalogue as c
from sms_pipeline.metrics.catalogue import MessageEvent
from sms_pipeline.metrics.store import Increment, Observation, get_store

log = logging.getLogger(__name__)
P = ParamSpec("P")

_PENDING_KEY: Final = "sms_pipeline.pending_metrics"
# The send status a message ends a step with → the sms_messages_total status it counts as.
SEND_STATUS_EVENTS: Final[dict[str, MessageEvent]] = {
    SendStatus.SUBMITTED: MessageEvent.SUBMITTED,
    SendStatus.REJECTED: MessageEvent.REJECTED,
    SendStatus.RETRYCOUNT_EXCEEDED: MessageEvent.RETRYCOUNT_EXCEEDED,
    SendStatus.NUMBER_INVALID: MessageEvent.NUMBER_INVALID,
    SendStatus.DATA1_INVALID: MessageEvent.DATA1_INVALID,
    SendStatus.SEND_AT_INVALID: MessageEvent.SEND_AT_INVALID,
    SendStatus.PRIORITY_INVALID: MessageEvent.PRIORITY_INVALID,
    SendStatus.OPTED_OUT: MessageEvent.OPTED_OUT,
    SendStatus.EXPIRED: MessageEvent.EXPIRED,
    SendStatus.SUPERSEDED: MessageEvent.SUPERSEDED,
}

# Account names, cached: a label is needed per message, the name changes rarely. Bounded
# (least recently used first out) and trusted for a minute, so a renamed account shows
# under its new name soon.
_NAMES_MAX: Final = 1024
_NAMES_TTL_SECONDS: Final = 60.0
_clock: Callable[[], float] = time.monotonic
_names_lock = threading.Lock()
_account_names: OrderedDict[int, tuple[str, float]] = OrderedDict()


def _never_raises(fn: Callable[P, None]) -> Callable[P, None]:
    @functools.wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> None:
        try:
            fn(*args, **kwargs)
        except Exception:
            log.warning("metrics hook %s failed", fn.__name__, exc_info=True)

    return wrapper


def account_name(account_id: int, bind: Session | Connection) -> str:
    """The account's name, read through the caller's own session or connection.

    Never on a connection of its own: inside the caller's transaction a second connection
    would, on SQLite, wait for that transaction's write lock ("database is locked" after
    the busy timeout).
    """
    now = _clock()
    with _names_lock:
        cached = _account_names.get(account_id)
        if cached is not None and cached[1] > now:
            _account_names.move_to_end(account_id)
            return cached[0]
    found = bind.execute(select(Account.name).where(Account.id == account_id)).scalar()
    if found is None:
        return "unknown"
    name = str(found)
    with _names_lock:
        _account_names[account_id] = (name, now + _NAMES_TTL_SECONDS)
        _account_names.move_to_end(account_id)
        while len(_account_names) > _NAMES_MAX:
            _account_names.popitem(last=False)
    return name


def forget_account_names() -> None:
    with _names_lock:
        _account_names.clear()


def _seconds(later: dt.datetime | None, earlier: dt.datetime | None) -> float | None:
    if later is None or earlier is None:
        return None
    # The gateway's status date has whole seconds: a fast delivery can look negative.
    return max(0.0, (later - earlier).total_seconds())


@dataclass
class _Pending:
    increments: list[Increment] = field(default_factory=list)
    observations: list[Observation] = field(default_factory=list)


def _record_later(
    session: Session, increments: Iterable[Increment], observations: Iterable[Observation] = ()
) -> None:
    # Recorded when the session commits (in one call), dropped if it rolls back.
    pending: _Pending = session.info.setdefault(_PENDING_KEY, _Pending())
    pending.increments.extend(increments)
    pending.observations.extend(observations)


@event.listens_for(Session, "after_commit")
def _record_committed(session: Session) -> None:
    pending: _Pending | None = session.info.pop(_PENDING_KEY, None)
    if pending is None:
        return
    try:
        get_store().add(pending.increments, pending.observations)
    except Exception:
        log.warning("metrics: committed increments not recorded", exc_info=True)


@event.listens_for(Session, "after_rollback")
def _drop_rolled_back(session: Session) -> None:
    session.info.pop(_PENDING_KEY, None)


# --- gateway -----------------------------------------------------------------------------------


@_never_raises
def gateway_request(operation: Op, outcomes: Sequence[tuple[GatewayOutcome, float]]) -> None:
    """The IP2SMSClient observer: a batch's operation, and each request's outcome and latency."""
    get_store().add(
        [
            (c.GATEWAY_REQUESTS_TOTAL, {"operation": operation, "outcome": outcome}, 1.0)
            for outcome, _ in outcomes
        ],
        [
            (c.GATEWAY_DURATION, {"operation": operation}, seconds, c.GATEWAY_LATENCY_BUCKETS)
            for _, seconds in outcomes
        ],
    )


@_never_raises
def gateway_route(gateway: str, outcomes: Sequence[tuple[str, float]]) -> None:
    """One batch's send requests to one gateway: each request's route outcome and latency."""
    get_store().add(
        [
            (c.GATEWAY_ROUTE_REQUESTS_TOTAL, {"gateway": gateway, "outcome": outcome}, 1.0)
            for outcome, _ in outcomes
        ],
        [
            (c.GATEWAY_ROUTE_DURATION, {"gateway": gateway}, s, c.GATEWAY_LATENCY_BUCKETS)
            for _, s in outcomes
        ],
    )


@_never_raises
def gateway_switch(gateway: str, from_state: str, to_state: str) -> None:
    """A gateway changed state (the worker whose update won counts it, once)."""
    get_store().inc(c.GATEWAY_SWITCHES_TOTAL, {"gateway": gateway, "to": to_state})


@_never_raises
def gateway_slow(gateway: str) -> None:
    """A gateway was taken out of rotation for slow deliveries (once, by the winning worker)."""
    get_store().inc(c.GATEWAY_SLOW_DEMOTIONS_TOTAL, {"gateway": gateway})


@_never_raises
def otp_fallback(message_type: str, gateway: str) -> None:
    """A code was sent once more through `gateway` (SMS_OTP_FALLBACK_SECONDS)."""
    get_store().inc(c.OTP_FALLBACKS_TOTAL, {"type": message_type, "gateway": gateway})


@_never_raises
def limit_refused(limit: str, subject: str) -> None:
    """An abuse limit held a message back (`subject`: API key or account NAME)."""
    get_store().inc(c.LIMIT_REFUSALS_TOTAL, {"limit": limit, "subject": subject})


# --- messages ------------------------------------------------------------------------------


def _stored(message_type: str, account: str, send_status: str) -> list[Increment]:
    labels = {"type": message_type, "account": account}
    increments: list[Increment] = [
        (c.MESSAGES_TOTAL, {**labels, "status": MessageEvent.ENQUEUED}, 1.0)
    ]
    final_event = SEND_STATUS_EVENTS.get(send_status)
    if final_event is not None:
        increments.append((c.MESSAGES_TOTAL, {**labels, "status": final_event}, 1.0))
    return increments


@_never_raises
def message_stored(session: Session, message_type: str, account: str, send_status: str) -> None:
    """A message row was written (enqueue, SQL route, replication): counted when it commits."""
    _record_later(session, _stored(message_type, account, send_status))


@_never_raises
def message_stored_committed(message_type: str, account: str, send_status: str) -> None:
    """A message row was written and is already committed (a one-statement enqueue)."""
    get_store().add(_stored(message_type, account, send_status))


def _ended(
    message_type: str, account: str, attempts: int, send_status: str
) -> tuple[list[Increment], list[Observation]]:
    # Only final outcomes count as messages; retries show in the gateway request counters
    # and, at the end, in the attempts histogram.
    event_name = SEND_STATUS_EVENTS.get(send_status)
    if event_name is None:
        return [], []
    return (
        [(c.MESSAGES_TOTAL, {"type": message_type, "account": account, "status": event_name}, 1.0)],
        [(c.MESSAGE_ATTEMPTS, {"type": message_type}, attempts, c.ATTEMPT_BUCKETS)],
    )


def _status_change(
    message_type: str,
    status: str,
    submitted_at: dt.datetime | None,
    changed_at: dt.datetime | None,
    enqueued_at: dt.datetime | None = None,
) -> tuple[list[Increment], list[Observation]]:
    increments: list[Increment] = [
        (c.STATUS_TRANSITIONS_TOTAL, {"type": message_type, "status": status}, 1.0)
    ]
    observations: list[Observation] = []
    if status != GatewayStatus.DELIVERED:
        return increments, observations
    took = _seconds(changed_at, submitted_at)
    if took is not None:
        observations.append(
            (c.SUBMIT_TO_DELIVERED, {"type": message_type}, took, c.SUBMIT_TO_DELIVERED_BUCKETS)
        )
    # What the patient waits for a code: from enqueue to the handset (alerts compare it with
    # the code's validity).
    whole = _seconds(changed_at, enqueued_at)
    if whole is not None:
        observations.append(
            (
                c.ENQUEUE_TO_DELIVERED,
                {"type": message_type},
                whole,
                c.ENQUEUE_TO_DELIVERED_BUCKETS,
            )
        )
    return increments, observations


@dataclass(frozen=True)
class Answer:
    """The gateway's acceptance of a message, as its metrics see it."""

    gateway_status: str
    ready_at: dt.datetime | None  # enqueued, or its requested send time if later
    submitted_at: dt.datetime
    status_changed_at: dt.datetime


@dataclass(frozen=True)
class Sent:
    """One message of a recorded send batch."""

    type: str
    account: str  # the account's NAME
    attempts: int  # the attempts that counted
    send_status: str  # where the attempt left it: a message still waiting counts nothing
    answer: Answer | None = None  # when the gateway took it with an answer


def _add_all(parts: Iterable[tuple[list[Increment], list[Observation]]]) -> None:
    """Every part's increments and observations in one `add` (one lock, one buffer pass)."""
    increments: list[Increment] = []
    observations: list[Observation] = []
    for counted, observed in parts:
        increments += counted
        observations += observed
    if increments or observations:
        get_store().add(increments, observations)


def _sent(m: Sent) -> Iterator[tuple[list[Increment], list[Observation]]]:
    yield _ended(m.type, m.account, m.attempts, m.send_status)
    a = m.answer
    if a is None:
        return
    waited = _seconds(a.submitted_at, a.ready_at)
    if waited is not None:
        yield [], [(c.ENQUEUE_TO_SUBMIT, {"type": m.type}, waited, c.ENQUEUE_TO_SUBMIT_BUCKETS)]
    yield _status_change(m.type, a.gateway_status, a.submitted_at, a.status_changed_at, a.ready_at)


@_never_raises
def messages_sent(messages: Iterable[Sent]) -> None:
    """A send batch was recorded (after its transaction): all of its metrics in one call."""
    _add_all(part for m in messages for part in _sent(m))


@_never_raises
def message_ended(
    session: Session, message_type: str, account_id: int, attempts: int, send_status: str
) -> None:
    """A message ended without a send attempt of its own (expired, superseded, its worker
    lost): counted when `session` commits, its account name read through `session`."""
    increments, observations = _ended(
        message_type, account_name(account_id, session), attempts, send_status
    )
    _record_later(session, increments, observations)


@_never_raises
def messages_ended_committed(
    message_type: str, account: str, attempts: Iterable[int], send_status: str
) -> None:
    """Messages ended without a send attempt of their own, already committed (a code's
    one-statement supersede): `attempts` holds each one's attempt count."""
    increments: list[Increment] = []
    observations: list[Observation] = []
    for n in attempts:
        more, seen = _ended(message_type, account, n, send_status)
        increments.extend(more)
        observations.extend(seen)
    if increments or observations:
        get_store().add(increments, observations)


@_never_raises
def privacy_action(action: str, count: int) -> None:
    """Bodies redacted, messages purged by retention, people erased (docs/privacy.md)."""
    get_store().inc(c.PRIVACY_ACTIONS_TOTAL, {"action": action}, float(count))


@dataclass(frozen=True, slots=True)
class StatusChange:
    """One message's gateway status changed to `status` (a real change, once)."""

    type: str
    status: str
    submitted_at: dt.datetime | None = None
    changed_at: dt.datetime | None = None
    enqueued_at: dt.datetime | None = None


@_never_raises
def statuses_changed(changes: Iterable[StatusChange]) -> None:
    """A group of status answers was recorded: all of their metrics in one call."""
    _add_all(
        _status_change(ch.type, ch.status, ch.submitted_at, ch.changed_at, ch.enqueued_at)
        for ch in changes
    )


@_never_raises
def status_went_backwards(message_type: str, kept: str) -> None:
    """The gateway answered a status behind the stored `kept` one: ignored, counted here."""
    get_store().inc(c.STATUS_BACKWARDS_TOTAL, {"type": message_type, "status": kept})


@_never_raises
def inbound_skipped(kind: str, count: int) -> None:
    """Incoming items of `kind` that could not be read or stored were skipped."""
    if count > 0:
        get_store().inc(c.INBOUND_SKIPPED_TOTAL, {"kind": kind}, float(count))


@_never_raises
def intake_error(door: str, kind: str) -> None:
    """A row a door could not read at all was moved aside; the others went on."""
    get_store().inc(c.INTAKE_ERRORS_TOTAL, {"door": door, "kind": kind})


@_never_raises
def poller_unit_failed(poller: str, count: int = 1) -> None:
    """A periodic job skipped `count` units that failed (the others went on)."""
    if count > 0:
        get_store().inc(c.POLLER_FAILURES_TOTAL, {"poller": poller}, float(count))


@_never_raises
def statuses_changed_in(session: Session, message_types: Iterable[str], status: str) -> None:
    """A bulk update (Terminated) changed these messages: counted when `session` commits."""
    counts: dict[str, int] = {}
    for message_type in message_types:
        counts[message_type] = counts.get(message_type, 0) + 1
    _record_later(
        session,
        [
            (c.STATUS_TRANSITIONS_TOTAL, {"type": t, "status": status}, float(n))
            for t, n in sorted(counts.items())
        ],
    )


__all__ = [
    "Answer",
    "Sent",
    "StatusChange",
    "account_name",
    "forget_account_names",
    "gateway_request",
    "inbound_skipped",
    "limit_refused",
    "message_ended",
    "message_stored",
    "message_stored_committed",
    "messages_sent",
    "privacy_action",
    "status_went_backwards",
    "statuses_changed",
    "statuses_changed_in",
]

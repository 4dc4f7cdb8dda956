"""One-line hooks the services call to record metrics; none of them ever raises.

Metrics must never turn a good send into a failure (and a resend): every hook swallows
its own errors. Labels are bounded: message type, status words, account NAME (the
accounts table bounds it), never a phone number or an id.
"""

from __future__ import annotations

import datetime as dt
import functools
import logging
import threading
from collections.abc import Callable, Iterable
from typing import Final, ParamSpec

from sqlalchemy import Connection, event, select
from sqlalchemy.orm import Session

from sms_pipeline.db.models import Account
from sms_pipeline.metrics import catalogue as c
from sms_pipeline.metrics.store import get_store

log = logging.getLogger(__name__)
P = ParamSpec("P")

_PENDING_KEY: Final = "sms_pipeline.pending_metrics"
# The send status a message ends its enqueue/send step with → the sms_messages_total status.
SEND_STATUS_EVENTS: Final[dict[str, str]] = {
    "SUBMITTED": "submitted",
    "REJECTED": "rejected",
    "RETRYCOUNT EXCEEDED": "retrycount_exceeded",
    "number invalid": "number_invalid",
    "data1 invalid": "data1_invalid",
    "OPTED OUT": "opted_out",
    "EXPIRED": "expired",
    "SUPERSEDED": "superseded",
}
# AttemptResult outcomes that end a message's sending ("submitted" here: uniq_key dupe).
_ATTEMPT_OUTCOMES: Final = {
    "rejected": "rejected",
    "exhausted": "retrycount_exceeded",
    "submitted": "submitted",
    "opted_out": "opted_out",
    "expired": "expired",
    "superseded": "superseded",
}

_names_lock = threading.Lock()
_account_names: dict[int, str] = {}


def _never_raises(fn: Callable[P, None]) -> Callable[P, None]:
    @functools.wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> None:
        try:
            fn(*args, **kwargs)
        except Exception:
            log.warning("metrics hook %s failed", fn.__name__, exc_info=True)

    return wrapper


def account_name(account_id: int, bind: Session | Connection | None = None) -> str:
    """The account's name (cached per process: accounts are few and never renamed in flight).

    A caller inside a transaction passes its session or connection (`bind`): the name is
    read through it. Opening a second connection there would, on SQLite, wait for the
    caller's own write lock ("database is locked" after the busy timeout). Without `bind`
    the lookup takes a pooled connection of its own: only outside any transaction.
    """
    with _names_lock:
        name = _account_names.get(account_id)
    if name is not None:
        return name
    query = select(Account.name).where(Account.id == account_id)
    if bind is not None:
        found = bind.execute(query).scalar()
    else:
        with get_store().engine.connect() as conn:
            found = conn.execute(query).scalar()
    name = str(found) if found is not None else "unknown"
    if found is not None:
        with _names_lock:
            _account_names[account_id] = name
    return name


def forget_account_names() -> None:
    with _names_lock:
        _account_names.clear()


def _seconds(later: dt.datetime | None, earlier: dt.datetime | None) -> float | None:
    if later is None or earlier is None:
        return None
    # The gateway's status date has whole seconds: a fast delivery can look negative.
    return max(0.0, (later - earlier).total_seconds())


# --- gateway -----------------------------------------------------------------------------------


@_never_raises
def gateway_request(operation: str, outcome: str, seconds: float) -> None:
    """The IP2SMSClient observer: one request's operation, outcome and latency."""
    store = get_store()
    store.inc(c.GATEWAY_REQUESTS_TOTAL, {"operation": operation, "outcome": outcome})
    store.observe(c.GATEWAY_DURATION, {"operation": operation}, seconds, c.GATEWAY_LATENCY_BUCKETS)


@_never_raises
def limit_refused(limit: str, subject: str) -> None:
    """An abuse limit held a message back (`subject`: API key or account NAME)."""
    get_store().inc(c.LIMIT_REFUSALS_TOTAL, {"limit": limit, "subject": subject})


# --- messages ------------------------------------------------------------------------------


def _stored(
    message_type: str, account: str, send_status: str
) -> list[tuple[str, dict[str, object], float]]:
    labels = {"type": message_type, "account": account}
    increments: list[tuple[str, dict[str, object], float]] = [
        (c.MESSAGES_TOTAL, {**labels, "status": "enqueued"}, 1.0)
    ]
    final_event = SEND_STATUS_EVENTS.get(send_status)
    if final_event is not None:
        increments.append((c.MESSAGES_TOTAL, {**labels, "status": final_event}, 1.0))
    return increments


@_never_raises
def message_stored(session: Session, message_type: str, account: str, send_status: str) -> None:
    """A message row was written (enqueue, SQL route, replication): counted when it commits."""
    session.info.setdefault(_PENDING_KEY, []).extend(_stored(message_type, account, send_status))


@_never_raises
def message_stored_committed(message_type: str, account: str, send_status: str) -> None:
    """A message row was written and is already committed (a one-statement enqueue)."""
    store = get_store()
    for name, labels, value in _stored(message_type, account, send_status):
        store.inc(name, labels, value)


@event.listens_for(Session, "after_commit")
def _record_committed(session: Session) -> None:
    pending = session.info.pop(_PENDING_KEY, None)
    if not pending:
        return
    try:
        store = get_store()
        for name, labels, value in pending:
            store.inc(name, labels, value)
    except Exception:
        log.warning("metrics: committed increments not recorded", exc_info=True)


@event.listens_for(Session, "after_rollback")
def _drop_rolled_back(session: Session) -> None:
    session.info.pop(_PENDING_KEY, None)


@_never_raises
def message_submitted(
    message_type: str,
    account_id: int,
    attempts: int,
    ready_at: dt.datetime | None,
    submitted_at: dt.datetime,
    gateway_status: str,
    status_changed_at: dt.datetime | None = None,
) -> None:
    """The gateway took a message (recorded after the row says so)."""
    store = get_store()
    labels = {"type": message_type}
    store.inc(
        c.MESSAGES_TOTAL,
        {**labels, "account": account_name(account_id), "status": "submitted"},
    )
    store.observe(c.MESSAGE_ATTEMPTS, labels, attempts, c.ATTEMPT_BUCKETS)
    waited = _seconds(submitted_at, ready_at)
    if waited is not None:
        store.observe(c.ENQUEUE_TO_SUBMIT, labels, waited, c.ENQUEUE_TO_SUBMIT_BUCKETS)
    status_changed(message_type, gateway_status, submitted_at, status_changed_at or submitted_at)


@_never_raises
def message_failed(
    message_type: str,
    account_id: int,
    attempts: int,
    outcome: str,
    bind: Session | Connection | None = None,
) -> None:
    """A send attempt failed; `outcome` is AttemptResult.outcome (rejected, exhausted, retry...).

    Only final outcomes count as messages; retries show in the gateway request counters
    and, at the end, in the attempts histogram. Inside a transaction pass its session or
    connection as `bind` (see `account_name`).
    """
    event_name = _ATTEMPT_OUTCOMES.get(outcome)
    if event_name is None:
        return
    store = get_store()
    store.inc(
        c.MESSAGES_TOTAL,
        {"type": message_type, "account": account_name(account_id, bind), "status": event_name},
    )
    store.observe(c.MESSAGE_ATTEMPTS, {"type": message_type}, attempts, c.ATTEMPT_BUCKETS)


@_never_raises
def privacy_action(action: str, count: int) -> None:
    """Bodies redacted, messages purged by retention, people erased (docs/privacy.md)."""
    get_store().inc(c.PRIVACY_ACTIONS_TOTAL, {"action": action}, float(count))


@_never_raises
def status_changed(
    message_type: str,
    status: str,
    submitted_at: dt.datetime | None = None,
    changed_at: dt.datetime | None = None,
) -> None:
    """A message's gateway status changed to `status` (call once per real change)."""
    store = get_store()
    store.inc(c.STATUS_TRANSITIONS_TOTAL, {"type": message_type, "status": status})
    if status == "Delivered":
        took = _seconds(changed_at, submitted_at)
        if took is not None:
            store.observe(
                c.SUBMIT_TO_DELIVERED, {"type": message_type}, took, c.SUBMIT_TO_DELIVERED_BUCKETS
            )


@_never_raises
def inbound_skipped(kind: str, count: int) -> None:
    """Incoming items of `kind` that could not be read or stored were skipped."""
    if count > 0:
        get_store().inc(c.INBOUND_SKIPPED_TOTAL, {"kind": kind}, float(count))


@_never_raises
def statuses_changed_in(session: Session, message_types: Iterable[str], status: str) -> None:
    """A bulk update (Terminated) changed these messages: counted when `session` commits."""
    counts: dict[str, int] = {}
    for message_type in message_types:
        counts[message_type] = counts.get(message_type, 0) + 1
    session.info.setdefault(_PENDING_KEY, []).extend(
        (c.STATUS_TRANSITIONS_TOTAL, {"type": t, "status": status}, float(n))
        for t, n in sorted(counts.items())
    )


__all__ = [
    "account_name",
    "gateway_request",
    "inbound_skipped",
    "message_failed",
    "message_stored",
    "message_stored_committed",
    "message_submitted",
    "status_changed",
    "statuses_changed_in",
]

"""One send attempt: claim the message, call the gateway, record the outcome.

The claim (QUEUED → SENDING, attempts + 1) commits before the gateway is called, so a
crash mid-call leaves a row that says an attempt was under way; its lease expires and
the outbox sweeper puts it back. Every message carries `uniq_key`, so a repeated
submission is refused by the gateway rather than delivered twice.
"""

from __future__ import annotations

import datetime as dt
import functools
import logging
import random
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from celery.utils.time import get_exponential_backoff_interval
from sqlalchemy import Connection, Update, bindparam, exists, or_, select, update
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session

from sms_pipeline import hints
from sms_pipeline.db import affected, get_engine, session_scope
from sms_pipeline.db.models import Account, OptOut, SendStatus, SmsLog, utcnow
from sms_pipeline.gateway import (
    GatewayConnectionError,
    GatewayCreditsExhausted,
    GatewayDuplicate,
    GatewayError,
    GatewayRejected,
    GatewayStatus,
    GatewayThrottled,
    IP2SMSClient,
    SendResult,
)
from sms_pipeline.metrics import hooks as metrics
from sms_pipeline.services import accounts as account_rules
from sms_pipeline.services import privacy, quotas
from sms_pipeline.services.enqueue import ESSENTIAL_TYPES
from sms_pipeline.services.gateway import get_gateway_client
from sms_pipeline.services.masking import mask_phone
from sms_pipeline.services.status import first_check_at
from sms_pipeline.settings import Settings, get_settings

log = logging.getLogger(__name__)
T = TypeVar("T")

# A dispatch that arrives this early (a sweeper re-dispatch racing a countdown) still runs.
EARLY_TOLERANCE = dt.timedelta(seconds=1)


@dataclass(frozen=True)
class AttemptResult:
    """What one run of the send task did; `retry_in` asks the task to run again later."""

    outcome: str  # submitted | retry | rejected | exhausted | deferred | skipped | opted_out
    retry_in: float | None = None
    detail: str | None = None


@dataclass(frozen=True)
class _Claim:
    id: uuid.UUID
    phone_number: str
    body: str
    uniq_key: str | None
    ext_id: str | None
    sender_id: str | None
    account_id: int
    segments: int
    attempt: int
    type: str = "text"
    ready_at: dt.datetime | None = None  # enqueued, or the requested send time if later
    postpaid: bool = False  # as read at the claim: post-paid accounts are never charged
    expires_at: dt.datetime | None = None  # a code's time left goes to the gateway


def retry_delay(attempt: int, settings: Settings) -> float:
    """Exponential backoff (base x 2^(attempt-1), capped) with jitter over its upper half."""
    delay = get_exponential_backoff_interval(
        factor=settings.sms_retry_backoff_seconds,
        retries=attempt - 1,
        maximum=int(settings.sms_retry_backoff_max_seconds),
        full_jitter=False,
    )
    return float(delay) * random.uniform(0.5, 1.0)


def with_db_retry(fn: Callable[[], T], *, tries: int = 6) -> T:
    """Run a short transaction again while the database is briefly unreachable.

    Recording an outcome after the gateway answered is worth a few seconds of waiting:
    losing it would mean a second submission (refused by uniq_key, but with the
    gateway id lost).
    """
    for attempt in range(tries):
        try:
            return fn()
        except OperationalError:
            if attempt == tries - 1:
                raise
            time.sleep(min(8.0, 0.5 * 2**attempt))
    raise AssertionError("unreachable")


def _defer(session: Session, message_id: uuid.UUID, until: dt.datetime, reason: str) -> None:
    # dispatched_at = None: the sweeper publishes it again once it is due.
    session.execute(
        update(SmsLog)
        .where(SmsLog.id == message_id, SmsLog.send_status == SendStatus.QUEUED.value)
        .values(due_at=until, dispatched_at=None, last_error=reason)
    )


def _autocommit(settings: Settings) -> Connection | None:
    """A PostgreSQL connection in autocommit, for one-statement transactions; None on SQLite.

    A single UPDATE is atomic on its own: without BEGIN and COMMIT it costs one round trip
    instead of three, which is most of a send's database time.
    """
    engine = get_engine(settings)
    if engine.dialect.name != "postgresql":
        return None
    return engine.connect().execution_options(isolation_level="AUTOCOMMIT")


@functools.cache
def _fast_claim_statement() -> Update:
    # Built once: constructing this statement costs more Python time than running it.
    # The account conditions mirror accounts.may_send; keep the two in step.
    return (
        update(SmsLog)
        .where(
            SmsLog.id == bindparam("b_id"),
            SmsLog.send_status == SendStatus.QUEUED.value,
            SmsLog.due_at <= bindparam("b_due"),
            Account.id == SmsLog.account_id,
            Account.active.is_(True),
            or_(Account.paused_until.is_(None), Account.paused_until <= bindparam("b_now")),
            Account.send_start_hour == 0,
            Account.send_end_hour == 23,
            or_(Account.postpaid.is_(True), Account.credits >= SmsLog.segments),
            or_(Account.rate_limit_per_second.is_(None), Account.rate_limit_per_second == 0),
            or_(
                SmsLog.type.in_(sorted(ESSENTIAL_TYPES)),
                ~exists().where(OptOut.phone_number == SmsLog.phone_number),
            ),
            privacy.still_sendable(bindparam("b_now")),
        )
        .values(
            send_status=SendStatus.SENDING.value,
            attempts=SmsLog.attempts + 1,
            lease_until=bindparam("b_lease"),
        )
        .returning(
            SmsLog.phone_number,
            SmsLog.body,
            SmsLog.uniq_key,
            SmsLog.ext_id,
            SmsLog.sender_id,
            SmsLog.account_id,
            SmsLog.segments,
            SmsLog.attempts,
            SmsLog.type,
            SmsLog.inserted_at,
            SmsLog.send_after,
            Account.postpaid,
            SmsLog.expires_at,
        )
    )


def _fast_claim(message_id: uuid.UUID, settings: Settings, now: dt.datetime) -> _Claim | None:
    """The common case in one statement: claim a due message whose account lets it go now.

    The conditions are those under which `_claim` below would claim it (active, not
    paused, a window open around the clock, credits, no rate limit, not opted out); when
    any fails, nothing is written and `_claim` decides (defer, opt out, skip) as before.
    """
    conn = None if quotas.account_caps_on(settings) else _autocommit(settings)  # caps: slow path
    if conn is None:
        return None
    params = {
        "b_id": message_id,
        "b_due": now + EARLY_TOLERANCE,
        "b_now": now,
        "b_lease": now + dt.timedelta(seconds=settings.sms_send_lease_seconds),
    }
    with conn:
        row = conn.execute(_fast_claim_statement(), params).first()
    if row is None:
        return None
    return _Claim(
        id=message_id,
        phone_number=row.phone_number,
        body=row.body,
        uniq_key=row.uniq_key,
        ext_id=row.ext_id,
        sender_id=row.sender_id,
        account_id=row.account_id,
        segments=row.segments,
        attempt=row.attempts,
        type=row.type,
        ready_at=max(row.inserted_at, row.send_after or row.inserted_at),
        postpaid=row.postpaid,
        expires_at=row.expires_at,
    )


def _claim(message_id: uuid.UUID, settings: Settings) -> _Claim | AttemptResult:
    now = utcnow()
    fast = _fast_claim(message_id, settings, now)
    if fast is not None:
        return fast
    with session_scope(settings) as session:
        # One round trip for the message, its account and its opt-out (the hot path: three
        # separate reads cost more than the rest of the claim).
        opted_out = exists().where(OptOut.phone_number == SmsLog.phone_number).label("opted_out")
        found = session.execute(
            select(SmsLog, Account, opted_out)
            .outerjoin(Account, Account.id == SmsLog.account_id)
            .where(SmsLog.id == message_id)
        ).first()
        if found is None or found[0].send_status != SendStatus.QUEUED.value:
            return AttemptResult("skipped", detail="not waiting to be sent")
        message, account, number_opted_out = found
        ended = privacy.end_if_unsendable(session, message, now)
        if ended is not None:  # expired or superseded: final, never sent
            return AttemptResult(ended, detail=ended)
        if message.due_at > now + EARLY_TOLERANCE:
            return AttemptResult("skipped", detail="not due yet")
        if message.type not in ESSENTIAL_TYPES and number_opted_out:
            # The number opted out after this text was queued: log it final, never send.
            opted = affected(
                session.execute(
                    update(SmsLog)
                    .where(SmsLog.id == message_id, SmsLog.send_status == SendStatus.QUEUED.value)
                    .values(
                        send_status=SendStatus.OPTED_OUT.value,
                        final_at=now,
                        lease_until=None,
                        last_error="number opted out",
                    )
                    .execution_options(synchronize_session=False)
                )
            )
            if opted:
                metrics.message_failed(message.type, message.account_id, 0, "opted_out", session)
            return AttemptResult("opted_out" if opted else "skipped", detail="number opted out")
        if account is None:  # the foreign key makes this impossible; say so if it happens
            return AttemptResult("skipped", detail="account missing")
        permission = account_rules.may_send_today(account, message.segments, now, settings)
        if not permission.allowed:
            until = permission.wait_until or now + dt.timedelta(minutes=1)
            _defer(session, message_id, until, permission.reason or "waiting")
            return AttemptResult("deferred", detail=permission.reason)
        if not account_rules.take_rate_token(account, settings):
            return AttemptResult("deferred", retry_in=random.uniform(0.2, 1.0), detail="rate")
        attempt = session.execute(
            update(SmsLog)
            .where(SmsLog.id == message_id, SmsLog.send_status == SendStatus.QUEUED.value)
            .values(
                send_status=SendStatus.SENDING.value,
                attempts=SmsLog.attempts + 1,
                lease_until=now + dt.timedelta(seconds=settings.sms_send_lease_seconds),
            )
            .returning(SmsLog.attempts)
            .execution_options(synchronize_session=False)
        ).scalar()
        if attempt is None:
            return AttemptResult("skipped", detail="claimed by another worker")
        return _Claim(
            id=message.id,
            phone_number=message.phone_number,
            body=message.body,
            uniq_key=message.uniq_key,
            ext_id=message.ext_id,
            sender_id=message.sender_id,
            account_id=message.account_id,
            segments=message.segments,
            attempt=attempt,
            type=message.type,
            ready_at=max(message.inserted_at, message.send_after or message.inserted_at),
            postpaid=account.postpaid,
            expires_at=message.expires_at,
        )


def _ours(claim: _Claim) -> Any:
    # Our claim still holds: nobody released it (lease) and re-claimed it meanwhile.
    return (
        (SmsLog.id == claim.id)
        & (SmsLog.send_status == SendStatus.SENDING.value)
        & (SmsLog.attempts == claim.attempt)
    )


@functools.cache
def _submitted_statement(final: bool) -> Update:
    # Built once (see _fast_claim_statement); `final` picks final_at or next_check_at.
    when: dict[str, Any] = {("final_at" if final else "next_check_at"): bindparam("b_when")}
    return (
        update(SmsLog)
        .where(
            SmsLog.id == bindparam("b_id"),
            SmsLog.send_status == SendStatus.SENDING.value,
            SmsLog.attempts == bindparam("b_attempt"),
        )
        .values(
            send_status=SendStatus.SUBMITTED.value,
            gateway_id=bindparam("b_gateway_id"),
            gateway_status=bindparam("b_gateway_status"),
            status_changed_at=bindparam("b_changed"),
            submitted_at=bindparam("b_now"),
            lease_until=None,
            last_error=bindparam("b_error"),
            **when,
        )
    )


def _record_submitted(claim: _Claim, result: SendResult, settings: Settings) -> AttemptResult:
    now = utcnow()
    status = result.status
    # An accepted answer with unreadable parts (a date out of range, an id too long to
    # keep) is still a submission: record it, with what could not be read.
    note = "; ".join(result.problems)[:500] or None
    if note:
        log.warning("message %s: accepted, but %s", claim.id, note)
    values: dict[str, Any] = {
        "send_status": SendStatus.SUBMITTED.value,
        "gateway_id": result.gateway_id,
        "gateway_status": status.value,
        "status_changed_at": result.date or now,
        "submitted_at": now,
        "lease_until": None,
        "last_error": note,
    }
    if status.is_final:
        values["final_at"] = now
    else:
        values["next_check_at"] = first_check_at(now, settings)

    statement = _submitted_statement(status.is_final)
    params = {
        "b_id": claim.id,
        "b_attempt": claim.attempt,
        "b_gateway_id": values["gateway_id"],
        "b_gateway_status": values["gateway_status"],
        "b_changed": values["status_changed_at"],
        "b_now": now,
        "b_when": values["final_at"] if status.is_final else values["next_check_at"],
        "b_error": note,
    }

    def write() -> int:
        conn = _autocommit(settings) if claim.postpaid else None
        if conn is not None:  # nothing to charge: one statement, no transaction needed
            with conn:
                return affected(conn.execute(statement, params))
        with session_scope(settings) as session:
            updated = affected(session.execute(statement, params))
            if updated and not claim.postpaid:
                account_rules.charge_credits(session, claim.account_id, claim.segments)
            return updated

    if not with_db_retry(write):
        log.warning("message %s: submitted, but the claim was lost meanwhile", claim.id)
        return AttemptResult("skipped", detail="claim lost after submission")
    quotas.count_account_send(claim.account_id, settings)
    metrics.message_submitted(
        claim.type, claim.account_id, claim.attempt, claim.ready_at, now, status.value,
        values["status_changed_at"],
    )  # fmt: skip
    log.info(
        "message %s to %s submitted (attempt %d, gateway id %s, %s)",
        claim.id,
        mask_phone(claim.phone_number),
        claim.attempt,
        result.gateway_id,
        status.value,
    )
    return AttemptResult("submitted")


def _record_failure(claim: _Claim, exc: GatewayError, settings: Settings) -> AttemptResult:
    now = utcnow()
    reason = exc.reason[:500]
    result: AttemptResult
    account_pause: tuple[dt.datetime, str] | None = None

    if isinstance(exc, GatewayDuplicate):
        # An earlier attempt reached the gateway (its answer was lost): it is submitted,
        # only its gateway id is unknown, so it cannot be polled. Its status is Unknown
        # until the Terminated rule closes it, so it never sits unexplained.
        values: dict[str, Any] = {
            "send_status": SendStatus.SUBMITTED.value,
            "gateway_status": GatewayStatus.UNKNOWN.value,
            "status_changed_at": now,
            "submitted_at": now,
            "lease_until": None,
            "last_error": "uniq_key dupe: an earlier attempt reached the gateway; "
            "its gateway id is unknown",
        }
        result = AttemptResult("submitted", detail="duplicate")
    elif isinstance(exc, GatewayCreditsExhausted):
        # Not the message's fault: give the attempt back and wait for credits.
        until = now + dt.timedelta(seconds=settings.sms_credit_pause_seconds)
        values = {
            "send_status": SendStatus.QUEUED.value,
            "attempts": SmsLog.attempts - 1,
            "due_at": until,
            "dispatched_at": None,
            "lease_until": None,
            "last_error": reason,
        }
        account_pause = (until, reason)
        result = AttemptResult("deferred", detail="credits exhausted")
    elif exc.permanent:
        values = {
            "send_status": SendStatus.REJECTED.value,
            "gateway_status": (
                GatewayStatus.REJECTED.value if isinstance(exc, GatewayRejected) else None
            ),
            "gateway_id": getattr(exc, "gateway_id", None),
            "status_changed_at": now,
            "final_at": now,
            "lease_until": None,
            "last_error": reason,
        }
        result = AttemptResult("rejected", detail=reason)
    elif claim.attempt >= settings.sms_max_attempts:
        values = {
            "send_status": SendStatus.RETRYCOUNT_EXCEEDED.value,
            "final_at": now,
            "lease_until": None,
            "last_error": reason,
        }
        result = AttemptResult("exhausted", detail=reason)
    else:
        delay = retry_delay(claim.attempt, settings)
        if exc.retry_after is not None:
            delay = max(delay, min(exc.retry_after, settings.sms_retry_backoff_max_seconds))
        due = now + dt.timedelta(seconds=delay)
        values = {
            "send_status": SendStatus.QUEUED.value,
            "due_at": due,
            "dispatched_at": due,
            "lease_until": None,
            "last_error": reason,
        }
        result = AttemptResult("retry", retry_in=delay, detail=reason)
    if isinstance(exc, GatewayThrottled):
        pause = exc.retry_after or settings.sms_rate_limit_backoff_seconds
        account_pause = (now + dt.timedelta(seconds=pause), "gateway throttled (429)")

    def write() -> int:
        with session_scope(settings) as session:
            updated = affected(session.execute(update(SmsLog).where(_ours(claim)).values(**values)))
            if updated and account_pause is not None:
                account_rules.pause_account(session, claim.account_id, *account_pause)
            return updated

    if not with_db_retry(write):
        return AttemptResult("skipped", detail="claim lost")
    metrics.message_failed(claim.type, claim.account_id, claim.attempt, result.outcome)
    log.info(
        "message %s to %s attempt %d: %s (%s)",
        claim.id,
        mask_phone(claim.phone_number),
        claim.attempt,
        result.outcome,
        reason,
    )
    if isinstance(exc, GatewayConnectionError) and hints.should_warn("gateway-unreachable"):
        log.warning("%s", hints.gateway_unreachable(settings.ip2sms_send_url, settings))
    return result


def attempt_send(
    message_id: uuid.UUID,
    *,
    settings: Settings | None = None,
    client: IP2SMSClient | None = None,
) -> AttemptResult:
    """Run one send attempt for `message_id`; safe to call twice for the same id."""
    settings = settings or get_settings()
    claim = _claim(message_id, settings)
    if isinstance(claim, AttemptResult):
        return claim
    client = client or get_gateway_client(settings)
    try:
        answer = client.send(
            claim.phone_number,
            claim.body,
            ext_id=claim.ext_id or claim.id.hex,
            uniq_key=claim.uniq_key,
            source=claim.sender_id or None,
            validity=privacy.gateway_validity(
                claim.type, claim.expires_at, utcnow(), settings.ip2sms_validity
            ),
        )
    except GatewayError as exc:
        return _record_failure(claim, exc, settings)
    return _record_submitted(claim, answer, settings)


def load_message(message_id: uuid.UUID, settings: Settings | None = None) -> SmsLog | None:
    with session_scope(settings) as session:
        return session.scalar(select(SmsLog).where(SmsLog.id == message_id))

"""Recording a batch: what each answer (or refusal) asks to be written, and all of it in
one transaction (credits charged, accounts paused after a 429 or an exhausted balance)."""

from __future__ import annotations

import datetime as dt
import logging
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, cast

from sqlalchemy import Table, bindparam, func, select, update
from sqlalchemy.orm import Session

from sms_pipeline import hints
from sms_pipeline.db import affected
from sms_pipeline.db.models import SendStatus, SmsLog
from sms_pipeline.gateway import (
    GatewayConnectionError,
    GatewayCreditsExhausted,
    GatewayDuplicate,
    GatewayError,
    GatewayRejected,
    GatewayStatus,
    GatewayThrottled,
    SendResult,
)
from sms_pipeline.services import accounts as account_rules
from sms_pipeline.services import outbox
from sms_pipeline.services.sending.results import AttemptResult, Outcome, retry_delay, with_db_retry
from sms_pipeline.services.sending.scope import Claim, _Db
from sms_pipeline.services.status import first_check_at
from sms_pipeline.settings import Settings

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class _Write:
    """The new values of one claimed row (every column the record statement sets)."""

    claim: Claim
    result: AttemptResult
    send_status: SendStatus
    give_back: int = 0  # 1: the attempt did not count (not sent: opt-out, credits, rate)
    gateway_id: str | None = None
    gateway_status: str | None = None
    status_changed_at: dt.datetime | None = None
    submitted_at: dt.datetime | None = None
    final_at: dt.datetime | None = None
    next_check_at: dt.datetime | None = None
    due_at: dt.datetime | None = None
    dispatched_at: dt.datetime | None = None
    last_error: str | None = None
    pause: tuple[dt.datetime, str] | None = None  # pause the account until, why
    charge: bool = False  # take the message's segments from a prepaid account
    # Which gateway has it (or may): set by the attempt when `set_gateway`, else unchanged.
    gateway: str | None = None
    set_gateway: bool = False

    def params(self) -> dict[str, Any]:
        return {
            "b_id": self.claim.id,
            "b_attempt": self.claim.attempt,
            "b_status": self.send_status.value,
            "b_give_back": self.give_back,
            "b_gateway_id": self.gateway_id,
            "b_gateway_status": self.gateway_status,
            "b_changed": self.status_changed_at,
            "b_submitted": self.submitted_at,
            "b_final": self.final_at,
            "b_next": self.next_check_at,
            "b_due": self.due_at or self.claim.due_at,
            "b_dispatched": self.dispatched_at,
            "b_error": self.last_error[:500] if self.last_error else None,
            "b_gateway": self.gateway if self.set_gateway else self.claim.gateway,
        }


_LOG = cast(Table, SmsLog.__table__)


# A Core statement on the table (not the entity): executemany without ORM bookkeeping.
_RECORD = (
    update(_LOG)
    .where(
        _LOG.c.id == bindparam("b_id"),
        _LOG.c.send_status == SendStatus.SENDING.value,
        _LOG.c.attempts == bindparam("b_attempt"),
    )
    .values(
        send_status=bindparam("b_status"),
        attempts=_LOG.c.attempts - bindparam("b_give_back"),
        gateway_id=bindparam("b_gateway_id"),
        gateway_status=bindparam("b_gateway_status"),
        status_changed_at=bindparam("b_changed"),
        submitted_at=bindparam("b_submitted"),
        final_at=bindparam("b_final"),
        next_check_at=bindparam("b_next"),
        due_at=bindparam("b_due"),
        dispatched_at=bindparam("b_dispatched"),
        lease_until=None,
        last_error=bindparam("b_error"),
        gateway=bindparam("b_gateway"),
    )
)


def _record(writes: Sequence[_Write], now: dt.datetime, db: _Db) -> int:
    """Every outcome of the batch in one transaction; returns the rows written."""
    if not writes:
        return 0
    charges: dict[int, list[uuid.UUID]] = {}
    for w in writes:
        if w.charge:
            charges.setdefault(w.claim.account_id, []).append(w.claim.id)
    pauses: dict[int, tuple[dt.datetime, str]] = {}
    for w in writes:
        if w.pause is not None:
            current = pauses.get(w.claim.account_id)
            if current is None or current[0] < w.pause[0]:
                pauses[w.claim.account_id] = w.pause

    def write() -> int:
        with db.tx.begin(), Session(bind=db.tx) as session:
            # Core on the connection itself: no ORM bookkeeping per row.
            written = affected(db.tx.execute(_RECORD, [w.params() for w in writes]))
            for account_id, ids in charges.items():
                # Charged for what this batch recorded as submitted: a row whose claim was
                # lost meanwhile (and so not written above) costs nothing.
                segments = (
                    select(func.coalesce(func.sum(SmsLog.segments), 0))
                    .where(
                        SmsLog.id.in_(ids),
                        SmsLog.send_status == SendStatus.SUBMITTED.value,
                        SmsLog.submitted_at == now,
                    )
                    .scalar_subquery()
                )
                account_rules.charge_credits(session, account_id, segments)
            started.clear()
            for account_id, (until, reason) in pauses.items():
                name = account_rules.pause_account(session, account_id, until, reason, now)
                if name is not None:
                    started.append(account_rules.pause_warning(name, until, reason))
            return written

    started: list[str] = []
    written = with_db_retry(write)
    for warning in started:  # once per pause: only the batch that started it
        log.warning("%s", warning)
    return written


def _submitted(claim: Claim, answer: SendResult, now: dt.datetime, settings: Settings) -> _Write:
    status = answer.status
    # An accepted answer with unreadable parts (a date out of range, an id too long to
    # keep) is still a submission: record it, with what could not be read.
    note = "; ".join(answer.problems)[:500] or None
    if note:
        log.warning("message %s: accepted, but %s", claim.id, note)
    return _Write(
        claim,
        AttemptResult(Outcome.SUBMITTED),
        SendStatus.SUBMITTED,
        gateway_id=answer.gateway_id,
        gateway_status=status.value,
        status_changed_at=answer.date or now,
        submitted_at=now,
        final_at=now if status.is_final else None,
        next_check_at=None if status.is_final else first_check_at(now, settings),
        last_error=note,
        charge=True,
    )


def _failed(claim: Claim, exc: GatewayError, now: dt.datetime, settings: Settings) -> _Write:
    reason = exc.reason[:500]
    pause: tuple[dt.datetime, str] | None = None
    if isinstance(exc, GatewayConnectionError) and hints.should_warn("gateway-unreachable"):
        log.warning("%s", hints.gateway_unreachable(settings.ip2sms_send_url, settings))
    if isinstance(exc, GatewayThrottled):
        seconds = exc.retry_after or settings.sms_rate_limit_backoff_seconds
        pause = (now + dt.timedelta(seconds=seconds), "gateway throttled (429)")
    if isinstance(exc, GatewayDuplicate):
        # An earlier attempt reached the gateway (its answer was lost): it is submitted,
        # only its gateway id is unknown, so it cannot be polled. Its status is Unknown
        # until the Terminated rule closes it, so it never sits unexplained.
        return _Write(
            claim,
            AttemptResult(Outcome.SUBMITTED, detail="duplicate"),
            SendStatus.SUBMITTED,
            gateway_status=GatewayStatus.UNKNOWN.value,
            status_changed_at=now,
            submitted_at=now,
            last_error="uniq_key dupe: an earlier attempt reached the gateway; "
            "its gateway id is unknown",
        )
    if isinstance(exc, GatewayCreditsExhausted):
        # Not the message's fault: give the attempt back and wait for credits.
        until = now + dt.timedelta(seconds=settings.sms_credit_pause_seconds)
        return _Write(
            claim,
            AttemptResult(Outcome.DEFERRED, settings.sms_credit_pause_seconds, "credits exhausted"),
            SendStatus.QUEUED,
            give_back=1,
            due_at=until,
            last_error=reason,
            pause=(until, reason),
        )
    if exc.permanent:
        return _Write(
            claim,
            AttemptResult(Outcome.REJECTED, detail=reason),
            SendStatus.REJECTED,
            gateway_id=getattr(exc, "gateway_id", None),
            gateway_status=GatewayStatus.REJECTED.value
            if isinstance(exc, GatewayRejected)
            else None,
            status_changed_at=now,
            final_at=now,
            last_error=reason,
            pause=pause,
        )
    if claim.attempt >= settings.sms_max_attempts:
        return _Write(
            claim,
            AttemptResult(Outcome.EXHAUSTED, detail=reason),
            SendStatus.RETRYCOUNT_EXCEEDED,
            final_at=now,
            last_error=reason,
            pause=pause,
        )
    delay = retry_delay(claim.attempt, settings)
    if exc.retry_after is not None:
        delay = max(delay, min(exc.retry_after, settings.sms_retry_backoff_max_seconds))
    due = now + dt.timedelta(seconds=delay)
    return _Write(
        claim,
        AttemptResult(Outcome.RETRY, retry_in=delay, detail=reason),
        SendStatus.QUEUED,
        due_at=due,
        # A countdown kick reaches it then; without broker countdowns, the sweeper does.
        dispatched_at=due if delay <= outbox.max_countdown() else None,
        last_error=reason,
        pause=pause,
    )


def _not_sent(claim: Claim, outcome: Outcome, reason: str, wait: float, now: dt.datetime) -> _Write:
    """A claimed message that a per-message rule keeps from going now: the attempt is given
    back; OPTED_OUT is final, anything else waits `wait` seconds."""
    if outcome is Outcome.OPTED_OUT:
        return _Write(
            claim,
            AttemptResult(Outcome.OPTED_OUT, detail=reason),
            SendStatus.OPTED_OUT,
            give_back=1,
            final_at=now,
            last_error=reason,
        )
    due = now + dt.timedelta(seconds=wait)
    return _Write(
        claim,
        AttemptResult(Outcome.DEFERRED, wait, reason),
        SendStatus.QUEUED,
        give_back=1,
        due_at=due,
        dispatched_at=due if wait <= outbox.max_countdown() else None,
        last_error=reason,
    )

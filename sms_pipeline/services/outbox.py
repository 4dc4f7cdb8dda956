"""The outbox: kick the send queues only after rows commit, and kick again for what was lost.

`dispatched_at` is the moment a send kick is expected to reach a message (now, or the end
of a retry's countdown). A kick carries no id: it makes a worker drain every due message
of its queue class (see `sms_pipeline.broker.dispatch`). The sweeper kicks again for waiting
messages that are due and whose last dispatch is older than the grace period: a broker
restart, a killed worker or a failed publish all end here, and the conditional claim in
the send service makes a second drain harmless.
"""

from __future__ import annotations

import datetime as dt
import logging
import uuid
from collections.abc import Iterable
from dataclasses import dataclass

from sqlalchemy import and_, event, or_, select, update
from sqlalchemy.orm import Session

from sms_pipeline.broker import dispatch
from sms_pipeline.db import affected, session_scope, skip_locked
from sms_pipeline.db.models import SendStatus, SmsLog, utcnow
from sms_pipeline.metrics import hooks as metrics
from sms_pipeline.settings import Settings, get_settings

log = logging.getLogger(__name__)

# Countdowns longer than this stay in the database (due_at) for the sweeper: broker
# countdowns live in worker memory and in Redis' unacked hash.
MAX_COUNTDOWN_SECONDS = 300.0


def max_countdown() -> float:
    """The longest wait a kick may spend in the broker: none on RabbitMQ (quorum queues
    would need delayed-delivery exchanges), where every wait is the sweeper's."""
    return MAX_COUNTDOWN_SECONDS if get_settings().broker_holds_countdowns else 0.0


_PENDING_KEY = "sms_pipeline.pending_dispatch"


@dataclass(frozen=True)
class Dispatch:
    message_id: uuid.UUID
    type: str
    priority: int
    countdown: float | None = None


def dispatch_for(
    message_id: uuid.UUID, message_type: str, priority: int, due_at: dt.datetime, now: dt.datetime
) -> Dispatch | None:
    """The dispatch for a waiting message, or None when it is due too far away."""
    wait = (due_at - now).total_seconds()
    if wait > max_countdown():
        return None
    return Dispatch(message_id, message_type, priority, wait if wait > 0 else None)


def dispatch_of(message: SmsLog, now: dt.datetime) -> Dispatch | None:
    return dispatch_for(message.id, message.type, message.priority, message.due_at, now)


def publish(dispatches: Iterable[Dispatch]) -> int:
    """Kick the send queues these waiting messages belong to; returns how many it covers.

    The broker carries no message ids: a kick makes the worker drain every due message of
    its class (see `sms_pipeline.broker.dispatch`). A failure is logged: the sweeper covers it.
    """
    now_classes: set[dispatch.QueueClass] = set()
    later: dict[dispatch.QueueClass, float] = {}
    covered = 0
    for d in dispatches:
        covered += 1
        queue_class = dispatch.queue_class_of(d.type)
        if d.countdown:
            later[queue_class] = min(d.countdown, later.get(queue_class, d.countdown))
        else:
            now_classes.add(queue_class)
    if now_classes:
        dispatch.kick(sorted(now_classes))
    for queue_class, countdown in later.items():
        dispatch.kick([queue_class], countdown=countdown)
    return covered


def dispatch_after_commit(session: Session, dispatch: Dispatch) -> None:
    """Publish `dispatch` once `session`'s transaction commits (never on rollback)."""
    session.info.setdefault(_PENDING_KEY, []).append(dispatch)


@event.listens_for(Session, "after_commit")
def _publish_pending(session: Session) -> None:
    pending = session.info.pop(_PENDING_KEY, None)
    if pending:
        publish(pending)


@event.listens_for(Session, "after_rollback")
def _drop_pending(session: Session) -> None:
    session.info.pop(_PENDING_KEY, None)


# --- the sweeper ------------------------------------------------------------------------


@dataclass(frozen=True)
class SweepResult:
    released: int  # expired SENDING claims put back in the queue
    exhausted: int  # expired claims that had used their last attempt
    dispatched: int


def release_expired_claims(
    session: Session, now: dt.datetime, settings: Settings
) -> tuple[int, int]:
    """Claims whose worker died: back to QUEUED, or RETRYCOUNT EXCEEDED if none are left
    (released, exhausted)."""
    base = and_(SmsLog.send_status == SendStatus.SENDING.value, SmsLog.lease_until < now)
    exhausted = session.execute(
        update(SmsLog)
        .where(base, SmsLog.attempts >= settings.sms_max_attempts)
        .values(
            send_status=SendStatus.RETRYCOUNT_EXCEEDED.value,
            last_error="worker lost during the last attempt",
            lease_until=None,
            final_at=now,
        )
        .returning(SmsLog.type, SmsLog.account_id, SmsLog.attempts)
        .execution_options(synchronize_session=False)
    ).all()
    released = affected(
        session.execute(
            update(SmsLog)
            .where(base)
            .values(
                send_status=SendStatus.QUEUED.value,
                last_error="worker lost during a send attempt",
                lease_until=None,
                dispatched_at=None,
                due_at=now,
            )
            .execution_options(synchronize_session=False)
        )
    )
    for row in exhausted:
        metrics.message_ended(
            session, row.type, row.account_id, row.attempts, SendStatus.RETRYCOUNT_EXCEEDED
        )
    return released, len(exhausted)


def sweep_outbox(
    settings: Settings | None = None, *, limit: int = 5000, now: dt.datetime | None = None
) -> SweepResult:
    """One pass: release dead claims, then publish due messages whose dispatch is stale."""
    settings = settings or get_settings()
    now = now or utcnow()
    stale = now - dt.timedelta(seconds=settings.sms_outbox_grace_seconds)
    with session_scope(settings) as session:
        released, exhausted = release_expired_claims(session, now, settings)
        query = (
            select(SmsLog.id, SmsLog.type, SmsLog.priority, SmsLog.due_at)
            .where(
                SmsLog.send_status == SendStatus.QUEUED.value,
                SmsLog.due_at <= now,
                or_(SmsLog.dispatched_at.is_(None), SmsLog.dispatched_at < stale),
            )
            .order_by(SmsLog.priority.desc(), SmsLog.due_at)
            .limit(limit)
        )
        rows = session.execute(skip_locked(session, query, of=SmsLog)).all()
        if rows:
            # A stale dispatch may only be queued behind a backlog, not lost: expect the
            # re-dispatch to take as long as the message has waited (capped), so a backlog
            # is re-published a few times (log2 of its wait), not at every sweep.
            cap = 10.0 * settings.sms_outbox_grace_seconds
            session.execute(
                update(SmsLog),
                [
                    {
                        "id": r.id,
                        "dispatched_at": now
                        + dt.timedelta(
                            seconds=min(cap, max(0.0, (now - r.due_at).total_seconds()))
                        ),
                    }
                    for r in rows
                ],
            )
    if released or exhausted:
        log.warning("outbox: released %d dead claims, %d out of attempts", released, exhausted)
    dispatched = publish([Dispatch(r.id, r.type, r.priority) for r in rows])
    if rows:
        log.info("outbox: re-dispatched %d waiting messages", dispatched)
    return SweepResult(released, exhausted, dispatched)

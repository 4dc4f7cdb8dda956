"""Terminated: messages still moving after their deadline end, once that is known."""

from __future__ import annotations

import datetime as dt
import logging
from typing import cast

from sqlalchemy import ColumnElement, Table, and_, bindparam, func, or_, select, update
from sqlalchemy.orm import Session

from sms_pipeline.db import skip_locked
from sms_pipeline.db.models import MOVING_STATUS_VALUES, SmsLog
from sms_pipeline.db.sqltime import lower_bound_plus_seconds
from sms_pipeline.gateway import GatewayStatus
from sms_pipeline.metrics import hooks as metrics
from sms_pipeline.services.status.rules import checked_after_deadline, deadline_of
from sms_pipeline.settings import Settings

log = logging.getLogger(__name__)


def _past_deadline(cutoff: dt.datetime) -> list[ColumnElement[bool]]:
    """Still moving, and submitted (or, never submitted, enqueued) before `cutoff`."""
    return [
        SmsLog.gateway_status.in_(MOVING_STATUS_VALUES),
        or_(
            SmsLog.submitted_at < cutoff,
            and_(SmsLog.submitted_at.is_(None), SmsLog.inserted_at < cutoff),
        ),
    ]


def terminate_overdue(session: Session, now: dt.datetime, settings: Settings) -> int:
    """Messages still moving after their deadline become Terminated, once it is known.

    Known means: the gateway answered a status request sent at or after the deadline
    (`last_checked_at`, recorded by every answered check) and still said the message was
    moving. A message delivered a minute before the deadline, whose previous check was
    minutes earlier, therefore gets its check at the deadline (see `next_check_time`) and
    ends Delivered. A message the gateway cannot be asked about (no gateway id) ends at the
    deadline. One whose checks keep failing stays moving, checked every last backoff step,
    until the gateway answers or `give_up_failing` ends it.
    """
    timeout = settings.sms_terminate_after_seconds
    cutoff = now - dt.timedelta(seconds=timeout)
    bind = session.get_bind()
    started = func.coalesce(SmsLog.submitted_at, SmsLog.inserted_at)
    no_gateway_id = or_(SmsLog.gateway_id.is_(None), SmsLog.gateway_id == "")
    candidates = (
        select(
            SmsLog.id,
            SmsLog.gateway_id,
            SmsLog.submitted_at,
            SmsLog.inserted_at,
            SmsLog.last_checked_at,
        )
        .where(
            *_past_deadline(cutoff),
            # In SQL as well as below, so a backlog of messages not yet checked after their
            # deadline cannot fill the batch and starve those that are.
            or_(
                no_gateway_id,
                SmsLog.last_checked_at >= lower_bound_plus_seconds(started, timeout, bind),
            ),
        )
        .limit(settings.sms_status_batch_limit)
    )
    candidates = skip_locked(bind, candidates)
    overdue = [
        r.id
        for r in session.execute(candidates)
        if not r.gateway_id
        or checked_after_deadline(
            r.last_checked_at, deadline_of(r.submitted_at, r.inserted_at, settings)
        )
    ]
    if not overdue:
        return 0
    types = (
        session.execute(
            update(SmsLog)
            .where(SmsLog.id.in_(overdue), SmsLog.gateway_status.in_(MOVING_STATUS_VALUES))
            .values(
                gateway_status=GatewayStatus.TERMINATED.value,
                status_changed_at=now,
                updated_at=now,
                final_at=now,
                next_check_at=None,
            )
            .returning(SmsLog.type)
            .execution_options(synchronize_session=False)
        )
        .scalars()
        .all()
    )
    metrics.statuses_changed_in(session, types, GatewayStatus.TERMINATED.value)
    return len(types)


def give_up_reason(
    failures: int, failing_since: dt.datetime, last_failure: str | None, now: dt.datetime
) -> str:
    """last_error of a message given up: how many checks failed, since when, and how."""
    span = int((now - failing_since).total_seconds())
    return (
        f"Terminated: no usable status answer: {failures} status checks failed over {span} s "
        f"since {failing_since:%Y-%m-%dT%H:%M:%SZ}, the last: {last_failure or 'unknown'}"
    )[:500]


def give_up_failing(session: Session, now: dt.datetime, settings: Settings) -> int:
    """Messages past their deadline whose status checks have all failed for
    SMS_STATUS_GIVE_UP_SECONDS become Terminated, the failures in `last_error`.

    Decided on the facts the checks recorded (`status_failures`, `status_failing_since`):
    a usable answer resets them, so it wins at any time before; the update is conditional
    on the facts read, so one recorded meanwhile wins too.
    """
    cutoff = now - dt.timedelta(seconds=settings.sms_terminate_after_seconds)
    failing_for = now - dt.timedelta(seconds=settings.status_give_up_seconds)
    candidates = (
        select(
            SmsLog.id,
            SmsLog.status_failures,
            SmsLog.status_failing_since,
            SmsLog.status_failure,
        )
        .where(
            *_past_deadline(cutoff),
            SmsLog.status_failures > 0,
            SmsLog.status_failing_since <= failing_for,
        )
        .limit(settings.sms_status_batch_limit)
    )
    candidates = skip_locked(session, candidates)
    rows = session.execute(candidates).all()
    if not rows:
        return 0
    table = cast(Table, SmsLog.__table__)
    statement = (
        update(table)
        .where(
            table.c.id == bindparam("b_id"),
            table.c.gateway_status.in_(MOVING_STATUS_VALUES),
            table.c.status_failures == bindparam("b_failures"),
        )
        .values(
            gateway_status=GatewayStatus.TERMINATED.value,
            status_changed_at=now,
            updated_at=now,
            final_at=now,
            next_check_at=None,
            last_error=bindparam("b_error"),
        )
    )
    params = [
        {
            "b_id": r.id,
            "b_failures": r.status_failures,
            "b_error": give_up_reason(
                r.status_failures, r.status_failing_since, r.status_failure, now
            ),
        }
        for r in rows
    ]
    session.execute(statement, params)
    ended = session.execute(
        select(SmsLog.id, SmsLog.type).where(
            SmsLog.id.in_([r.id for r in rows]),
            SmsLog.gateway_status == GatewayStatus.TERMINATED.value,
            SmsLog.final_at == now,
        )
    ).all()
    reasons = {p["b_id"]: p["b_error"] for p in params}
    for r in ended:
        log.warning("message %s: %s", r.id, reasons[r.id])
    metrics.statuses_changed_in(session, [r.type for r in ended], GatewayStatus.TERMINATED.value)
    return len(ended)


__all__ = ["give_up_failing", "give_up_reason", "terminate_overdue"]

"""Claiming due checks: the lease that keeps overlapping sweeps from asking twice."""

from __future__ import annotations

import datetime as dt
import uuid
from dataclasses import dataclass
from typing import Any, cast

from sqlalchemy import (
    Table,
    and_,
    bindparam,
    case,
    literal,
    select,
    update,
)
from sqlalchemy.orm import Session

from sms_pipeline.db import claim_among
from sms_pipeline.db.models import MOVING_STATUS_VALUES, SmsLog, UTCDateTime
from sms_pipeline.services.status.rules import deadline_of, next_check_time
from sms_pipeline.settings import Settings

_LOG = cast(Table, SmsLog.__table__)


@dataclass(frozen=True)
class Claimed:
    id: uuid.UUID
    gateway_id: str | None


def claim_due_checks(
    session: Session, now: dt.datetime, settings: Settings, *, limit: int | None = None
) -> list[Claimed]:
    """Claim moving messages due for a check; their next check moves one backoff step on."""
    limit = limit or settings.sms_status_batch_limit
    backoff = settings.sms_status_check_backoff
    # The table, not the mapped class: the rows come back as plain rows (the ORM's loading
    # of ten thousand of them cost more than the UPDATE).
    c = _LOG.c
    due = and_(c.gateway_status.in_(MOVING_STATUS_VALUES), c.next_check_at <= now)
    candidates = select(c.id).where(due).order_by(c.next_check_at).limit(limit)
    claimed = claim_among(session, c.id, candidates)

    def at(step: int) -> Any:
        return literal(now + dt.timedelta(seconds=backoff[step]), UTCDateTime())

    last = len(backoff) - 1
    next_check = (
        case(*[(c.status_checks == i, at(i)) for i in range(last)], else_=at(last))
        if last
        else at(0)
    )
    rows = session.execute(
        update(_LOG)
        .where(claimed, due)
        .values(
            next_check_at=next_check,
            status_checks=c.status_checks + 1,
            # A look is not a change: keep updated_at (the column's onupdate would bump it).
            updated_at=c.updated_at,
        )
        .returning(c.id, c.gateway_id, c.submitted_at, c.inserted_at, c.status_checks)
    ).all()
    # A backoff step never jumps past the Terminated deadline: the message gets its check
    # at the deadline, so a late delivery is seen before Terminated is decided. The step
    # itself is in the UPDATE above (one statement for the common case); the few rows
    # whose deadline falls inside their step are pulled back here.
    capped = []
    for r in rows:
        deadline = deadline_of(r.submitted_at, r.inserted_at, settings)
        following = next_check_time(now, r.status_checks - 1, deadline, backoff)
        if r.gateway_id and following == deadline:
            capped.append({"b_id": r.id, "b_next": deadline})
    if capped:
        session.execute(
            update(_LOG)
            .where(c.id == bindparam("b_id"))
            .values(next_check_at=bindparam("b_next"), updated_at=c.updated_at),
            capped,
        )
    return [Claimed(r.id, r.gateway_id) for r in rows]


__all__ = ["Claimed", "claim_due_checks"]

"""Claiming a batch: the messages `eligibility.claimable` admits, of one queue class (or of
given ids), become SENDING with `attempts + 1` and a lease, in one statement committed
before the gateway is called."""

from __future__ import annotations

import datetime as dt
import functools
from collections.abc import Sequence
from typing import Any

from sqlalchemy import Engine, Integer, Select, bindparam, select, update

from sms_pipeline.broker import dispatch
from sms_pipeline.db import skip_locked
from sms_pipeline.db.models import OptOut, SendStatus, SmsLog
from sms_pipeline.services.sending import eligibility
from sms_pipeline.services.sending.scope import Claim, _Db, _Scope
from sms_pipeline.settings import Settings


@functools.cache
def _claim_statement(by_class: bool, by_ids: bool, engine: Engine) -> Any:
    # Built once per shape (constructing it costs more Python time than running it); the
    # queue class's types, the ids, the allowed accounts and the limit are parameters.
    where = eligibility.claimable()
    if by_class:
        where.append(SmsLog.type.in_(bindparam("b_types", expanding=True)))
    if by_ids:
        where.append(SmsLog.id.in_(bindparam("b_ids", expanding=True)))
    pick: Select[Any] = (
        select(SmsLog.id)
        .where(*where)
        .order_by(SmsLog.priority.desc(), SmsLog.due_at)
        .limit(bindparam("b_limit", type_=Integer()))
    )
    pick = skip_locked(engine, pick)
    # A CTE, joined: PostgreSQL runs the locking pick once. As `id IN (subquery)` it may
    # re-run the subquery for every row of the table (minutes with a 20,000 backlog).
    picked = pick.cte("picked")
    return (
        update(SmsLog)
        .where(SmsLog.id == picked.c.id)
        .where(SmsLog.send_status == SendStatus.QUEUED.value)
        .values(
            send_status=SendStatus.SENDING.value,
            attempts=SmsLog.attempts + 1,
            lease_until=bindparam("b_lease"),
        )
        .returning(
            SmsLog.id,
            SmsLog.phone_number,
            SmsLog.body,
            SmsLog.uniq_key,
            SmsLog.ext_id,
            SmsLog.sender_id,
            SmsLog.account_id,
            SmsLog.segments,
            SmsLog.attempts,
            SmsLog.type,
            SmsLog.priority,
            SmsLog.due_at,
            SmsLog.inserted_at,
            SmsLog.send_after,
            SmsLog.expires_at,
            SmsLog.gateway,
        )
    )


def _claim(
    scope: _Scope,
    allowed: Sequence[int],
    now: dt.datetime,
    limit: int,
    settings: Settings,
    db: _Db,
) -> list[Claim]:
    if not allowed:
        return []
    statement = _claim_statement(scope.queue_class is not None, scope.ids is not None, db.engine)
    params: dict[str, Any] = {
        **eligibility.claimable_params(now, allowed),
        "b_lease": now + dt.timedelta(seconds=settings.sms_send_lease_seconds),
        "b_limit": limit,
    }
    if scope.queue_class is not None:
        params["b_types"] = list(dispatch.types_of(scope.queue_class))
    if scope.ids is not None:
        params["b_ids"] = list(scope.ids)
    rows = db.rows(statement, params)
    # One indexed read for the claim: which of its numbers opted out. Not an EXISTS in the
    # claim's RETURNING: SQLite strips the table names there, so `phone_number =
    # phone_number` compared the opt-out table with itself (every number "opted out").
    numbers = sorted({r.phone_number for r in rows})
    query = select(OptOut.phone_number).where(OptOut.phone_number.in_(numbers))
    opted = {r[0] for r in db.rows(query)} if numbers else set()
    claims = [
        Claim(
            id=r.id,
            phone_number=r.phone_number,
            body=r.body,
            uniq_key=r.uniq_key,
            ext_id=r.ext_id,
            sender_id=r.sender_id,
            account_id=r.account_id,
            segments=r.segments,
            attempt=r.attempts,
            type=r.type,
            priority=r.priority,
            due_at=r.due_at,
            ready_at=max(r.inserted_at, r.send_after or r.inserted_at),
            opted_out=r.phone_number in opted,
            expires_at=r.expires_at,
            gateway=r.gateway,
        )
        for r in rows
    ]
    # RETURNING has no order: serve the batch as the claim chose it.
    claims.sort(key=lambda c: (-c.priority, c.due_at))
    return claims

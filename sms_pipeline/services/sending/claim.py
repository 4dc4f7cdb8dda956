"""Claiming a batch: due QUEUED messages of one queue class (or of given ids) whose account
may send now become SENDING with `attempts + 1` and a lease, in one statement committed
before the gateway is called."""

from __future__ import annotations

import contextlib
import datetime as dt
import functools
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, cast

from sqlalchemy import Connection, Engine, Integer, Select, Table, bindparam, select, update

from sms_pipeline.broker import dispatch
from sms_pipeline.db import alone, autocommit_connection, get_engine, skip_locked
from sms_pipeline.db.models import Account, OptOut, SendStatus, SmsLog
from sms_pipeline.services import privacy
from sms_pipeline.services.sending.results import EARLY_TOLERANCE
from sms_pipeline.settings import Settings


@dataclass(frozen=True)
class Claim:
    id: uuid.UUID
    phone_number: str
    body: str
    uniq_key: str | None
    ext_id: str | None
    sender_id: str | None
    account_id: int
    segments: int
    attempt: int
    type: str
    priority: int
    due_at: dt.datetime
    ready_at: dt.datetime  # enqueued, or the requested send time if later
    opted_out: bool
    expires_at: dt.datetime | None = None  # a code's validity or the type's queue age
    # The gateway that has it or may have it (an earlier attempt's outcome unknown): its
    # resends go there and nowhere else (docs/gateways.md).
    gateway: str | None = None


@dataclass(frozen=True)
class _Scope:
    queue_class: dispatch.QueueClass | None
    ids: tuple[uuid.UUID, ...] | None

    def where(self) -> list[Any]:
        clauses: list[Any] = [SmsLog.send_status == SendStatus.QUEUED.value]
        if self.queue_class is not None:
            clauses.append(SmsLog.type.in_(dispatch.types_of(self.queue_class)))
        if self.ids is not None:
            clauses.append(SmsLog.id.in_(self.ids))
        return clauses


@dataclass
class _Db:
    """The connections a drain holds for its whole run (one pool checkout, one ping).

    `rows()` runs one statement as its own transaction (`db.alone`: no BEGIN and COMMIT
    round trips on PostgreSQL). `tx` is for the record step's transaction.
    """

    auto: Connection
    tx: Connection
    engine: Engine

    def rows(self, statement: Any, params: dict[str, Any] | None = None) -> list[Any]:
        with alone(self.auto):
            return list(self.auto.execute(statement, params).all())


@contextlib.contextmanager
def _database(settings: Settings) -> Iterator[_Db]:
    engine = get_engine(settings)
    with autocommit_connection(engine) as auto, engine.connect() as tx:
        yield _Db(auto, tx, engine)


def _accounts(db: _Db) -> dict[int, Account]:
    # Accounts are few (one per sending customer): reading them all is one cheap query,
    # and the rules are then evaluated once per account, not once per message.
    table = cast(Table, Account.__table__)
    return {r.id: Account(**r._mapping) for r in db.rows(select(table))}


@functools.cache
def _claim_statement(by_class: bool, by_ids: bool, engine: Engine) -> Any:
    # Built once per shape (constructing it costs more Python time than running it); the
    # queue class's types, the ids, the allowed accounts and the limit are parameters.
    due: Any = bindparam("b_due")
    where: list[Any] = [
        SmsLog.send_status == SendStatus.QUEUED.value,
        SmsLog.due_at <= due,
        SmsLog.account_id.in_(bindparam("b_accounts", expanding=True)),
        # Expired or superseded rows are never claimed; the privacy sweep ends them.
        privacy.still_sendable(bindparam("b_now")),
    ]
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
        "b_due": now + EARLY_TOLERANCE,
        "b_now": now,
        "b_lease": now + dt.timedelta(seconds=settings.sms_send_lease_seconds),
        "b_accounts": list(allowed),
        "b_limit": limit,
    }
    if scope.queue_class is not None:
        params["b_types"] = list(dispatch.types_of(scope.queue_class))
    if scope.ids is not None:
        params["b_ids"] = list(scope.ids)
    rows = db.rows(statement, params)
    # One indexed read for the batch: which of its numbers opted out.
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

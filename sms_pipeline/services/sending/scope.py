"""What a batch works on: its scope (a queue class or given ids), the connections a drain
holds, the accounts, and one claimed message (`Claim`)."""

from __future__ import annotations

import contextlib
import datetime as dt
import functools
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, cast

from sqlalchemy import Connection, Engine, Table, select

from sms_pipeline.broker import dispatch
from sms_pipeline.db import alone, autocommit_connection, get_engine
from sms_pipeline.db.models import Account, SendStatus, SmsLog
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


@functools.cache
def _accounts_statement() -> Any:
    # Built once: constructing the SELECT of every column cost more than running it.
    return select(cast(Table, Account.__table__))


def _accounts(db: _Db) -> dict[int, Account]:
    # Accounts are few (one per sending customer): reading them all is one cheap query,
    # and the rules are then evaluated once per account, not once per message.
    return {r.id: Account(**r._mapping) for r in db.rows(_accounts_statement())}

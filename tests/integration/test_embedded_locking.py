"""No second database connection inside an open write transaction.

On the embedded SQLite database a second connection inside a write transaction waits for
the first one's lock (BEGIN IMMEDIATE) and fails after the 30 s busy timeout with
"database is locked"; on PostgreSQL it only takes a second pool slot. Each test runs a
service on both databases and checks two things: it completes, and the thread that ran
it never took a connection while another of its connections was inside a transaction.
(The send path may hold an idle autocommit connection beside its transaction: that one
waits for no lock.)
"""

from __future__ import annotations

import contextlib
import datetime as dt
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import Engine, event, insert, select

from sms_pipeline import enqueue_sms
from sms_pipeline.db import get_engine, session_scope
from sms_pipeline.db.models import OptOut, SendStatus, SmsLog, SmsQueue, Verification, utcnow
from sms_pipeline.metrics.hooks import forget_account_names
from sms_pipeline.services import outbox
from sms_pipeline.services.accounts import get_or_create_default_account
from sms_pipeline.services.intake import replication, sql_route
from tests.backends import backend  # noqa: F401  (the fixture, used by name)
from tests.helpers import attempt_send

pytestmark = pytest.mark.usefixtures("backend")


def _in_transaction(dbapi_connection: Any) -> bool:
    """Whether the driver's connection is inside a database transaction right now."""
    if hasattr(dbapi_connection, "in_transaction"):  # sqlite3
        return bool(dbapi_connection.in_transaction)
    # psycopg: IDLE (0) outside a transaction; autocommit connections stay IDLE.
    return int(dbapi_connection.info.transaction_status) != 0


class ConnectionCounter:
    """Pooled connections this thread took while another of its connections was inside a
    transaction (the pattern that waits for its own lock on SQLite), and the most it held."""

    def __init__(self) -> None:
        self.thread = threading.get_ident()
        self.held: list[Any] = []
        self.most = 0
        self.inside_a_transaction = 0

    def checkout(self, dbapi_connection: Any, *_: Any) -> None:
        if threading.get_ident() == self.thread:
            if any(_in_transaction(c) for c in self.held):
                self.inside_a_transaction += 1
            self.held.append(dbapi_connection)
            self.most = max(self.most, len(self.held))

    def checkin(self, dbapi_connection: Any, *_: Any) -> None:
        if threading.get_ident() == self.thread and dbapi_connection in self.held:
            self.held.remove(dbapi_connection)


@contextlib.contextmanager
def counting_connections(engine: Engine) -> Iterator[ConnectionCounter]:
    counter = ConnectionCounter()
    event.listen(engine.pool, "checkout", counter.checkout)
    event.listen(engine.pool, "checkin", counter.checkin)
    try:
        yield counter
    finally:
        event.remove(engine.pool, "checkout", counter.checkout)
        event.remove(engine.pool, "checkin", counter.checkin)


@pytest.fixture
def account_id(monkeypatch: pytest.MonkeyPatch) -> int:
    monkeypatch.setattr(outbox, "publish", lambda dispatches: len(list(dispatches)))
    with session_scope() as session:
        return get_or_create_default_account(session).id


def test_sql_route_ingest_completes_holding_one_connection(account_id: int) -> None:
    with get_engine().begin() as conn:  # (the plain-SQL route has its own tests)
        conn.execute(
            insert(SmsQueue),
            [
                {"account_id": account_id, "num_to": "+380931234567", "data1": "hello"},
                {"account_id": account_id, "num_to": "not a number", "data1": "hi"},
            ],
        )
    with counting_connections(get_engine()) as counter:
        assert sql_route.ingest_account_queue(account_id) == 2
    assert counter.inside_a_transaction == 0
    with session_scope() as session:
        statuses = sorted(session.scalars(select(SmsLog.send_status)))
    assert statuses == [SendStatus.QUEUED.value, SendStatus.NUMBER_INVALID.value]


def test_replication_completes_holding_one_connection(account_id: int) -> None:
    with get_engine().begin() as conn:
        conn.execute(
            insert(Verification),
            [
                {
                    "phone_number": "+380931234567",
                    "code": 123456,
                    "check_digit": 0,
                    "status": "new",
                    "code_expired_at": utcnow() + dt.timedelta(minutes=10),
                    "inserted_at": utcnow(),
                }
            ],
        )
    with counting_connections(get_engine()) as counter:
        result = replication.replicate_verifications()
    assert (result.inserted, result.dispatched) == (1, 1)
    assert counter.inside_a_transaction == 0


def test_a_text_to_an_opted_out_number_is_closed_holding_one_connection(
    account_id: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    message_id = enqueue_sms("+380931234567", "hello", "text")
    with session_scope() as session:
        session.add(OptOut(phone_number="+380931234567", opted_out_at=utcnow(), source="api"))
    with counting_connections(get_engine()) as counter:
        assert attempt_send(message_id).outcome == "opted_out"
    assert counter.inside_a_transaction == 0


def test_a_code_superseding_another_is_stored_holding_one_connection(account_id: int) -> None:
    first = enqueue_sms("+380931234567", "Your code is 111111", "verification")
    # Nothing cached: the superseded message's metrics need the account's name, read
    # inside the new code's transaction.
    forget_account_names()
    with counting_connections(get_engine()) as counter:
        second = enqueue_sms("+380931234567", "Your code is 222222", "verification")
    assert counter.inside_a_transaction == 0
    with session_scope() as session:
        statuses = {
            r.id: r.send_status for r in session.execute(select(SmsLog.id, SmsLog.send_status))
        }
    assert statuses == {first: SendStatus.SUPERSEDED.value, second: SendStatus.QUEUED.value}

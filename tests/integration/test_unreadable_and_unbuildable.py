"""Every hostile input or unreadable answer ends final and explained, sent at most once.

A loopback HTTP server stands in for the gateway and answers exactly what the test says
(the simulator never sends a broken date); it counts the requests it gets. Runs on
PostgreSQL and on the embedded SQLite database.
"""

from __future__ import annotations

import datetime as dt
import threading
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from sqlalchemy import Column, MetaData, String, Table, Uuid, insert, update

from sms_pipeline import enqueue_sms
from sms_pipeline.db import get_engine, session_scope
from sms_pipeline.db.models import SendStatus, SmsLog, SmsQueue, UTCTimestamp, utcnow
from sms_pipeline.gateway.codec import MAX_GATEWAY_ID_LENGTH
from sms_pipeline.services import outbox, status
from sms_pipeline.services.accounts import get_or_create_default_account
from sms_pipeline.services.intake import replication, sql_route
from sms_pipeline.settings import get_settings
from tests.backends import backend  # noqa: F401  (the fixture, used by name)
from tests.factories import message_row as row
from tests.helpers import attempt_send

pytestmark = pytest.mark.usefixtures("backend")

OVERFLOW_DATE = "Fri, 31 Dec 9999 23:59:00 -0100"


class LoopbackGateway:
    """Answers every POST with `answer` (HTTP 200) and counts them."""

    def __init__(self) -> None:
        self.answer = b""
        self.posts = 0
        gateway = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                gateway.posts += 1
                self.send_response(200)
                self.send_header("Content-Type", "text/xml; charset=utf-8")
                self.send_header("Content-Length", str(len(gateway.answer)))
                self.end_headers()
                self.wfile.write(gateway.answer)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"


@pytest.fixture
def gateway(settings_env: Any, monkeypatch: pytest.MonkeyPatch) -> Iterator[LoopbackGateway]:
    fake = LoopbackGateway()
    thread = threading.Thread(target=fake.server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    settings_env(
        IP2SMS_SEND_URL=f"{fake.url}/ip2sms/",
        IP2SMS_STATUS_URL=f"{fake.url}/ip2sms-request/",
        SMS_TERMINATE_AFTER_SECONDS=20,
    )
    monkeypatch.setattr(outbox, "publish", lambda dispatches: len(list(dispatches)))
    try:
        yield fake
    finally:
        fake.server.shutdown()
        fake.server.server_close()


def send_again_as_the_sweeper_would(message_id: uuid.UUID) -> None:
    """A redelivered task, and the outbox sweeper long after: neither may send again."""
    assert attempt_send(message_id).outcome == "skipped"
    with session_scope() as session:  # pretend the dispatch is long stale
        session.execute(
            update(SmsLog)
            .where(SmsLog.id == message_id)
            .values(dispatched_at=None, lease_until=dt.datetime(2000, 1, 1, tzinfo=dt.UTC))
        )
    outbox.sweep_outbox()
    assert attempt_send(message_id).outcome == "skipped"


def test_an_accepted_answer_dated_past_year_9999_is_submitted_once(
    gateway: LoopbackGateway,
) -> None:
    gateway.answer = (
        f'<status id="8072817" date="{OVERFLOW_DATE}"><state>Accepted</state></status>'
    ).encode()
    message_id = enqueue_sms("+380931234567", "hello", "text")
    before = dt.datetime.now(dt.UTC)
    assert attempt_send(message_id).outcome == "submitted"
    send_again_as_the_sweeper_would(message_id)
    assert gateway.posts == 1
    submitted = row(message_id)
    assert submitted.send_status == SendStatus.SUBMITTED.value
    assert (submitted.gateway_id, submitted.gateway_status) == ("8072817", "Accepted")
    assert submitted.status_changed_at is not None and submitted.status_changed_at >= before
    assert submitted.last_error is not None and OVERFLOW_DATE in submitted.last_error


def test_an_accepted_answer_with_an_id_too_long_is_submitted_once_and_ends_terminated(
    gateway: LoopbackGateway,
) -> None:
    long_id = "7" * (MAX_GATEWAY_ID_LENGTH * 4)
    gateway.answer = f'<status id="{long_id}" date=""><state>Accepted</state></status>'.encode()
    message_id = enqueue_sms("+380931234567", "hello", "text")
    assert attempt_send(message_id).outcome == "submitted"
    send_again_as_the_sweeper_would(message_id)
    assert gateway.posts == 1
    submitted = row(message_id)
    assert submitted.send_status == SendStatus.SUBMITTED.value
    assert submitted.gateway_id is None
    assert submitted.last_error is not None and "cannot be polled" in submitted.last_error
    # Nothing to ask the gateway about: Terminated at the deadline, still explained.
    assert submitted.submitted_at is not None
    later = submitted.submitted_at + dt.timedelta(seconds=21)
    assert status.sweep_statuses(inline=True, now=later).terminated == 1
    assert gateway.posts == 1
    assert row(message_id).gateway_status == "Terminated"


def test_a_body_that_cannot_be_built_into_a_request_is_rejected_at_once_explained(
    gateway: LoopbackGateway,
) -> None:
    message_id = enqueue_sms("+380931234567", "hello", "text")
    with session_scope() as session:  # as a row written around enqueue validation would be
        session.execute(update(SmsLog).where(SmsLog.id == message_id).values(body="x\ufffey"))
    assert attempt_send(message_id).outcome == "rejected"
    ended = row(message_id)
    assert ended.send_status == SendStatus.REJECTED.value
    assert ended.final_at is not None and ended.lease_until is None
    assert ended.last_error is not None and "U+FFFE" in ended.last_error
    assert gateway.posts == 0


def test_sql_route_rows_with_characters_xml_cannot_carry_are_data1_invalid(
    gateway: LoopbackGateway,
) -> None:
    with session_scope() as session:
        account_id = get_or_create_default_account(session).id
    # Every row names every column (an executemany takes its columns from the first row).
    base = {
        "account_id": account_id,
        "num_to": "+380931234567",
        "data1": "hello",
        "sender_id": None,
        "customer_id": None,
    }
    with get_engine().begin() as conn:
        conn.execute(
            insert(SmsQueue),
            [
                {**base, "data1": "code \ufffe"},
                {**base, "sender_id": "HEALTH\x0b"},
                {**base, "customer_id": "c\uffff"},
                {**base, "num_to": "+38093\x0b1234567"},
                base,
            ],
        )
    assert sql_route.ingest_account_queue(account_id) == 5
    with session_scope() as session:
        rows = session.query(SmsLog).order_by(SmsLog.queue_id).all()
    assert [r.send_status for r in rows] == [
        "data1 invalid",
        "data1 invalid",
        "data1 invalid",
        "number invalid",
        "QUEUED",
    ]
    assert "body" in (rows[0].last_error or "") and "U+FFFE" in (rows[0].last_error or "")
    assert "sender_id" in (rows[1].last_error or "")
    assert "customer_id" in (rows[2].last_error or "")


def test_replicated_codes_with_characters_xml_cannot_carry_are_data1_invalid(
    gateway: LoopbackGateway,
) -> None:
    # An older shape of the service's table: a text code and the gateway id it kept.
    legacy = Table(
        "verifications_legacy",
        MetaData(),
        Column("id", Uuid(), primary_key=True),
        Column("phone_number", String(), nullable=False),
        Column("code", String(), nullable=False),
        Column("status", String(), nullable=False),
        Column("gateway_id", String()),
        Column("inserted_at", UTCTimestamp(), nullable=False),
        schema="verification",
    )
    engine = get_engine()
    legacy.create(engine)
    try:
        now = utcnow()
        with engine.begin() as conn:
            conn.execute(
                insert(legacy),
                [
                    {"id": uuid.uuid4(), "phone_number": "+380931234567", "code": "12\ufffe34",
                     "status": "new", "gateway_id": None, "inserted_at": now},
                    {"id": uuid.uuid4(), "phone_number": "+380931234568", "code": "1234",
                     "status": "new", "gateway_id": "g\x0b1", "inserted_at": now},
                ],
            )  # fmt: skip
        result, _ = replication.replicate_batch(get_settings(), source=legacy)
    finally:
        legacy.drop(engine)
    assert (result.inserted, result.invalid, result.tracked) == (2, 1, 1)
    with session_scope() as session:
        rows = {r.phone_number: r for r in session.query(SmsLog)}
    assert rows["+380931234567"].send_status == "data1 invalid"
    tracked = rows["+380931234568"]
    assert tracked.gateway_id is None and "U+000B" in (tracked.last_error or "")

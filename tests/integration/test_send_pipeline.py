"""The send pipeline end to end: real PostgreSQL, Redis, worker and gateway simulator."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from sqlalchemy import func, select, update

from sms_pipeline import InvalidMessage, enqueue_sms
from sms_pipeline.db import session_scope
from sms_pipeline.db.models import SendStatus, SmsLog, utcnow
from tests.helpers import NORMAL, TaskWatch, attempt_send, is_final, wait_for
from tests.support import wait_until

TRANSIENT_TWICE = "+380931234502"
TRANSIENT_ALWAYS = "+380931234503"
REJECTED = "+380931234504"


def test_enqueued_message_is_submitted_and_logged(worker: Any, simulator: Any) -> None:
    message_id = enqueue_sms(NORMAL, "Your code is 123456", "verification")
    row = wait_for(message_id, is_final)
    assert row.send_status == SendStatus.SUBMITTED.value
    assert row.gateway_id
    assert row.gateway_status == "Accepted"
    assert row.attempts == 1
    assert row.submitted_at is not None and row.status_changed_at is not None
    assert row.uniq_key == message_id.hex
    assert simulator.submissions(row.uniq_key) == 1


def test_two_transient_failures_then_submitted(worker: Any, simulator: Any) -> None:
    message_id = enqueue_sms(TRANSIENT_TWICE, "hello", "text")
    row = wait_for(message_id, is_final)
    assert row.send_status == SendStatus.SUBMITTED.value
    assert row.attempts == 3
    assert simulator.submissions(message_id.hex) == 3


def test_third_transient_failure_logs_retrycount_exceeded(worker: Any, simulator: Any) -> None:
    from sms_pipeline.broker.app import SEND_DUE_TASK

    with TaskWatch([SEND_DUE_TASK]) as tasks:
        message_id = enqueue_sms(TRANSIENT_ALWAYS, "hello", "text")
        row = wait_for(message_id, is_final)
        assert row.send_status == SendStatus.RETRYCOUNT_EXCEEDED.value
        assert row.attempts == 3
        assert row.last_error and "503" in row.last_error
        # A fourth attempt, if any, would run in a send task published by now.
        wait_until(tasks.settled, 30, "every send task to run")
    assert simulator.submissions(message_id.hex) == 3


def test_permanent_reject_is_logged_at_once_without_retry(worker: Any, simulator: Any) -> None:
    message_id = enqueue_sms(REJECTED, "hello", "text")
    row = wait_for(message_id, is_final)
    assert row.send_status == SendStatus.REJECTED.value
    assert row.gateway_status == "Rejected"
    assert row.last_error and "Invalid abonent number" in row.last_error
    assert row.attempts == 1
    assert simulator.submissions(message_id.hex) == 1


def test_duplicate_task_delivery_submits_once(db: Any, simulator: Any, monkeypatch: Any) -> None:
    from sms_pipeline.services import outbox

    monkeypatch.setattr(outbox, "publish", lambda dispatches: 0)
    message_id = enqueue_sms(NORMAL, "hello", "text")
    first = attempt_send(message_id)
    second = attempt_send(message_id)
    assert (first.outcome, second.outcome) == ("submitted", "skipped")
    assert simulator.submissions(message_id.hex) == 1


def test_rolled_back_caller_transaction_sends_nothing(
    db: Any, simulator: Any, monkeypatch: Any
) -> None:
    from sms_pipeline.db import get_sessionmaker
    from sms_pipeline.services import outbox

    published: list[Any] = []
    monkeypatch.setattr(outbox, "publish", lambda dispatches: published.extend(dispatches))
    with get_sessionmaker()() as session:
        enqueue_sms(NORMAL, "hello", session=session)
        session.rollback()
    with get_sessionmaker()() as session:
        kept = enqueue_sms(NORMAL, "hello", session=session)
        assert published == []  # not before the commit
        session.commit()
    assert [d.message_id for d in published] == [kept]
    with session_scope() as session:
        assert session.scalar(select(func.count()).select_from(SmsLog)) == 1


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"phone_number": "12", "body": "x"}, "phone_number"),
        ({"phone_number": "+380931234567", "body": "  "}, "body"),
        ({"phone_number": "+380931234567", "body": "x", "type": "fax"}, "type"),
        ({"phone_number": "+380931234567", "body": "x" * 2000}, "body"),
        ({"phone_number": "+380931234567", "body": "x", "account": "nope"}, "account"),
    ],
)
def test_bad_input_raises_invalid_message_and_stores_nothing(
    db: Any, kwargs: dict[str, Any], field: str
) -> None:
    with pytest.raises(InvalidMessage) as info:
        enqueue_sms(**kwargs)
    assert info.value.field == field
    with session_scope() as session:
        assert session.scalar(select(func.count()).select_from(SmsLog)) == 0


def test_sweeper_resends_message_whose_dispatch_was_lost(
    worker: Any, simulator: Any, monkeypatch: Any, settings_env: Any
) -> None:
    from sms_pipeline.services import outbox

    real_publish = outbox.publish
    lost: list[Any] = []

    def lose(dispatches: list[Any]) -> int:
        lost.extend(dispatches)
        return 0

    monkeypatch.setattr(outbox, "publish", lose)
    message_id = enqueue_sms(NORMAL, "hello", "text")
    assert [d.message_id for d in lost] == [message_id]  # its one kick, lost
    with session_scope() as session:
        assert session.get_one(SmsLog, message_id).send_status == SendStatus.QUEUED.value
    monkeypatch.setattr(outbox, "publish", real_publish)
    settings_env(SMS_OUTBOX_GRACE_SECONDS=1)
    with session_scope() as session:  # its lost dispatch went out longer ago than the grace
        session.execute(
            update(SmsLog)
            .where(SmsLog.id == message_id)
            .values(dispatched_at=utcnow() - dt.timedelta(seconds=1.1))
        )
    assert outbox.sweep_outbox().dispatched == 1
    row = wait_for(message_id, is_final)
    assert row.send_status == SendStatus.SUBMITTED.value


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"priority": 2**40}, "priority"),
        ({"customer_id": "abc\x00"}, "customer_id"),
        ({"body": "code \ud800"}, "body"),
    ],
)
def test_values_the_database_cannot_store_are_refused(
    db: Any, kwargs: dict[str, Any], field: str
) -> None:
    arguments: dict[str, Any] = {"phone_number": NORMAL, "body": "hello", **kwargs}
    with pytest.raises(InvalidMessage) as info:
        enqueue_sms(**arguments)
    assert info.value.field == field

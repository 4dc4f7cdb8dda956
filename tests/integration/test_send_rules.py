"""Accounts, windows, priority, credits and the SQL route, with the real pipeline."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from sqlalchemy import select, update

from sms_pipeline import InvalidMessage, enqueue_sms
from sms_pipeline.db import session_scope
from sms_pipeline.db.models import Account, SendStatus, SmsLog, SmsQueue, utcnow
from sms_pipeline.services import outbox
from sms_pipeline.services.intake import sql_route
from tests import factories
from tests.helpers import NORMAL, attempt_send, is_final, wait_for
from tests.support import wait_until


def make_account(**values: Any) -> int:
    """Prepaid with credits, sending around the clock, unless `values` say else."""
    rules = {"postpaid": False, "credits": 100, "send_start_hour": 0, "send_end_hour": 23}
    return factories.make_account(**{**rules, **values})


def hour_outside_now() -> tuple[int, int]:
    now = utcnow()
    start = (now.hour + 2) % 24
    return start, start  # a one-hour window two hours from now


def test_message_outside_window_waits_and_goes_when_window_opens(
    db: Any, simulator: Any, no_dispatch: list[Any]
) -> None:
    start, end = hour_outside_now()
    account_id = make_account(send_start_hour=start, send_end_hour=end)
    message_id = enqueue_sms(NORMAL, "hello", account=account_id)
    assert attempt_send(message_id).outcome == "deferred"
    with session_scope() as session:
        row = session.get_one(SmsLog, message_id)
        assert row.send_status == SendStatus.QUEUED.value and row.attempts == 0
        assert row.due_at.hour == start and row.due_at.minute == 0
        assert row.dispatched_at is None
        # The window opens (we move the clock by moving the window) and the message is due.
        session.execute(update(Account).values(send_start_hour=0, send_end_hour=23))
        session.execute(update(SmsLog).values(due_at=utcnow()))
    no_dispatch.clear()
    assert outbox.sweep_outbox().dispatched == 1
    assert [d.message_id for d in no_dispatch] == [message_id]
    assert attempt_send(message_id).outcome == "submitted"


def test_future_send_at_waits_in_the_database(db: Any, no_dispatch: list[Any]) -> None:
    later = utcnow() + dt.timedelta(hours=3)
    message_id = enqueue_sms(NORMAL, "hello", send_at=later)
    assert no_dispatch == []  # too far away for a broker countdown
    assert outbox.sweep_outbox().dispatched == 0
    assert attempt_send(message_id).outcome == "skipped"
    with session_scope() as session:
        assert session.get_one(SmsLog, message_id).due_at == later


def test_sweeper_dispatches_higher_priority_first(db: Any, no_dispatch: list[Any]) -> None:
    ids = {p: enqueue_sms(NORMAL, f"p{p}", priority=p) for p in (0, 5, 1, 9)}
    with session_scope() as session:
        session.execute(update(SmsLog).values(dispatched_at=None))
    no_dispatch.clear()
    outbox.sweep_outbox()
    assert [d.message_id for d in no_dispatch] == [ids[9], ids[5], ids[1], ids[0]]


def test_broker_serves_higher_priority_first(db: Any, redis_url: str, simulator: Any) -> None:
    from celery.contrib.testing.worker import start_worker

    from sms_pipeline.broker.app import app

    low = [enqueue_sms(NORMAL, f"low {i}", priority=0) for i in range(6)]
    high = enqueue_sms(NORMAL, "high", priority=9)
    with start_worker(app, pool="solo", perform_ping_check=False, loglevel="WARNING"):
        for message_id in [*low, high]:
            wait_for(message_id, is_final)
    with session_scope() as session:
        served = session.execute(select(SmsLog.id, SmsLog.gateway_id)).all()
    # The order the gateway accepted them in (its ids count up): the messages of one claim
    # are recorded together, so their submitted_at ties and says nothing of the order.
    order = [i for i, _ in sorted(served, key=lambda row: int(row[1] or 0))]
    # Prefetch lets the worker hold one low message before it sees the high one.
    assert order.index(high) <= 1


def test_credits_decrease_by_segments_and_postpaid_never_changes(
    db: Any, simulator: Any, no_dispatch: list[Any]
) -> None:
    prepaid = make_account(credits=10)
    postpaid = make_account(postpaid=True, credits=1_000_000)
    two_parts = "a" * 200
    for account_id in (prepaid, postpaid):
        attempt_send(enqueue_sms(NORMAL, two_parts, account=account_id))
    with session_scope() as session:
        assert session.get_one(Account, prepaid).credits == 8
        assert session.get_one(Account, postpaid).credits == 1_000_000


def test_account_out_of_credits_stops_sending(
    db: Any, simulator: Any, no_dispatch: list[Any]
) -> None:
    account_id = make_account(credits=1)
    first = enqueue_sms(NORMAL, "one", account=account_id)
    second = enqueue_sms(NORMAL, "two", account=account_id)
    assert attempt_send(first).outcome == "submitted"
    assert attempt_send(second).outcome == "deferred"
    with session_scope() as session:
        row = session.get_one(SmsLog, second)
        assert row.send_status == SendStatus.QUEUED.value
        assert row.attempts == 0
        assert row.last_error == "out of credits"


def test_inactive_account_refused_at_enqueue_and_queued_messages_wait(
    db: Any, simulator: Any, no_dispatch: list[Any]
) -> None:
    account_id = make_account()
    waiting = enqueue_sms(NORMAL, "queued before", account=account_id)
    with session_scope() as session:
        session.execute(update(Account).values(active=False))
    with pytest.raises(InvalidMessage, match="account"):
        enqueue_sms(NORMAL, "hello", account=account_id)
    assert attempt_send(waiting).outcome == "deferred"
    with session_scope() as session:
        assert session.get_one(SmsLog, waiting).send_status == SendStatus.QUEUED.value


def test_gateway_credit_refusal_gives_the_attempt_back_and_pauses_account(
    db: Any, simulator: Any, no_dispatch: list[Any]
) -> None:
    account_id = make_account(postpaid=True)
    message_id = enqueue_sms("+380931234510", "hello", account=account_id)
    assert attempt_send(message_id).outcome == "deferred"
    with session_scope() as session:
        row = session.get_one(SmsLog, message_id)
        account = session.get_one(Account, account_id)
        assert (row.send_status, row.attempts) == (SendStatus.QUEUED.value, 0)
        assert account.paused_until is not None and account.paused_until > utcnow()
        assert "Prepaid" in (account.pause_reason or "")


def test_gateway_429_counts_an_attempt_and_slows_the_account(
    db: Any, simulator: Any, no_dispatch: list[Any]
) -> None:
    account_id = make_account(postpaid=True)
    message_id = enqueue_sms("+380931234509", "hello", account=account_id)
    result = attempt_send(message_id)
    assert result.outcome == "retry" and result.retry_in is not None and result.retry_in >= 1
    with session_scope() as session:
        assert session.get_one(SmsLog, message_id).attempts == 1
        assert session.get_one(Account, account_id).paused_until is not None


@pytest.mark.parametrize("simulator", [{"slow_seconds": 1.5}], indirect=True, ids=["slow-1.5s"])
def test_uniq_key_dupe_after_lost_answer_is_recorded_as_submitted(
    db: Any, simulator: Any, no_dispatch: list[Any], settings_env: Any
) -> None:
    # The slow rule answers after 1.5 s; the client gives up after 0.5 s, and the gateway
    # keeps the message. The retry then meets uniq_key dupe.
    settings_env(IP2SMS_READ_TIMEOUT=0.5)
    message_id = enqueue_sms("+380931234506", "hello")
    assert attempt_send(message_id).outcome == "retry"
    wait_until(lambda: simulator.accepted(message_id.hex), 30, "the gateway to keep it")
    with session_scope() as session:
        session.execute(update(SmsLog).values(due_at=utcnow()))
    assert attempt_send(message_id).outcome == "submitted"
    with session_scope() as session:
        row = session.get_one(SmsLog, message_id)
        assert row.send_status == SendStatus.SUBMITTED.value
        assert row.gateway_id is None and "uniq_key dupe" in (row.last_error or "")
        # Unknown, so the Terminated rule ends it if nothing else does.
        assert row.gateway_status == "Unknown" and row.final_at is None
    assert simulator.submissions(message_id.hex) == 2


def test_sql_route_rows_become_messages_and_bad_rows_are_explained(
    db: Any, no_dispatch: list[Any]
) -> None:
    account_id = make_account(process_queue_interval=1)
    with session_scope() as session:
        session.add_all(
            [
                SmsQueue(account_id=account_id, num_to="+380931234567", data1="ok", priority=3),
                SmsQueue(account_id=account_id, num_to="not a number", data1="x"),
                SmsQueue(account_id=account_id, num_to="+380931234567", data1=""),
            ]
        )
    assert sql_route.poll_queues() == 3
    with session_scope() as session:
        rows = {r.send_status: r for r in session.scalars(select(SmsLog))}
        assert set(rows) == {"QUEUED", "number invalid", "data1 invalid"}
        assert rows["QUEUED"].priority == 3 and rows["QUEUED"].queue_id is not None
        assert session.scalars(select(SmsQueue)).all() == []
    assert [d.message_id for d in no_dispatch] == [rows["QUEUED"].id]
    # The interval has not passed: a second poll does nothing.
    assert sql_route.poll_queues() == 0

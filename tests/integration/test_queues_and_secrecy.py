"""Urgent traffic overtakes a bulk backlog; nothing secret reaches the broker or the logs."""

from __future__ import annotations

import logging
import uuid
from typing import Any

import pytest
import redis
from sqlalchemy import func, insert, select

from sms_pipeline import enqueue_sms
from sms_pipeline.broker import dispatch
from sms_pipeline.broker.app import app
from sms_pipeline.db import session_scope
from sms_pipeline.db.models import SendStatus, SmsLog, utcnow
from sms_pipeline.services.accounts import get_or_create_default_account
from tests.helpers import NORMAL, is_final, redis_texts, wait_for

BACKLOG = 20_000


def purge_broker(redis_url: str) -> None:
    redis.Redis.from_url(redis_url).flushdb()


def test_verification_overtakes_a_bulk_backlog_of_20000_texts(
    db: Any, redis_url: str, simulator: Any
) -> None:
    from celery.contrib.testing.worker import start_worker

    now = utcnow()
    with session_scope() as session:
        account_id = get_or_create_default_account(session).id
    rows = [
        {
            "id": uuid.uuid4(),
            "phone_number": NORMAL,
            "type": "text",
            "body": "bulk",
            "account_id": account_id,
            "send_status": SendStatus.QUEUED.value,
            "due_at": now,
            "dispatched_at": now,
            "uniq_key": uuid.uuid4().hex,
            "inserted_at": now,
            "updated_at": now,
        }
        for _ in range(BACKLOG)
    ]
    with session_scope() as session:
        session.execute(insert(SmsLog), rows)
    dispatch.kick([dispatch.QueueClass.BULK], force=True)
    try:
        with start_worker(
            app, pool="threads", concurrency=8, perform_ping_check=False, loglevel="WARNING"
        ):
            urgent = enqueue_sms(NORMAL, "Your code is 424242", "verification")
            wait_for(urgent, is_final, timeout=60)
            with session_scope() as session:
                sent_bulk = session.scalar(
                    select(func.count())
                    .select_from(SmsLog)
                    .where(SmsLog.type == "text", SmsLog.send_status == "SUBMITTED")
                )
    finally:
        purge_broker(redis_url)
    assert sent_bulk is not None
    assert sent_bulk < BACKLOG / 2, f"the verification waited for {sent_bulk} bulk messages"


def test_broker_messages_carry_no_number_or_body(db: Any, redis_url: str) -> None:

    secret_body = "Your code is 918273"
    try:
        # enqueue publishes a kick for the urgent queue class (no id at all).
        enqueue_sms("+380931112233", secret_body, "verification")
        payloads = redis_texts(redis.Redis.from_url(redis_url))
    finally:
        purge_broker(redis_url)
    assert any("sms_pipeline.send_due" in p for p in payloads)
    for text in payloads:
        assert "918273" not in text
        assert "380931112233" not in text


def test_logs_hold_no_body_number_or_password(
    worker: Any, simulator: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    numbers = ["+380931112233", "+380931112203", "+380931112204"]  # ok, always 503, reject
    codes = [f"55{i}661" for i in range(len(numbers))]
    ids = [enqueue_sms(n, f"Your code is {c}", "2FA") for n, c in zip(numbers, codes, strict=True)]
    for message_id in ids:
        wait_for(message_id, is_final)
    lines = [record.getMessage() for record in caplog.records]
    lines += [str(record.args) for record in caplog.records]
    assert any("submitted" in line for line in lines)
    for line in lines:
        for number in numbers:
            assert number[1:] not in line
        for code in codes:
            assert code not in line
        assert "Your code" not in line
        assert "demo:demo" not in line

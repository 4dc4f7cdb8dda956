"""Every send rule holds through the real batched send path, on PostgreSQL and on SQLite.

One batch (`sending.send_batch`, what the worker's drain runs) over the real simulator on
loopback, for an account or a number that one rule concerns: the message goes or waits
as that rule says, and nothing that must wait reaches the gateway.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from sms_pipeline import enqueue_sms
from sms_pipeline.broker.dispatch import QueueClass
from sms_pipeline.db import session_scope
from sms_pipeline.db.models import Account, OptOut, SendStatus, SmsLog, utcnow
from sms_pipeline.services import outbox, sending
from tests.factories import make_account
from tests.factories import message_row as row

NUMBER = "+380931234567"


@pytest.fixture(params=["postgresql", "sqlite"])
def database(
    request: pytest.FixtureRequest,
    db: Any,
    settings_env: Any,
    simulator: Any,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[str]:
    monkeypatch.setattr(outbox, "publish", lambda dispatches: 0)  # no broker: batches by hand
    if request.param == "sqlite":
        from sms_pipeline.db import get_engine, migrate
        from sms_pipeline.services.intake.enqueue import forget_accounts

        settings_env(SMS_DATABASE_URL=f"sqlite:///{tmp_path / 'embedded.db'}")
        forget_accounts()
        migrate.upgrade(get_engine())
    yield request.param
    from sms_pipeline.services.intake.enqueue import forget_accounts

    forget_accounts()


def account(**values: Any) -> int:
    """Credits without end, sending around the clock, unless `values` say else."""
    rules = {"credits": 1_000_000, "send_start_hour": 0, "send_end_hour": 23}
    return make_account(**{**rules, **values})


def send_once() -> sending.BatchResult:
    return sending.send_batch(queue_class=QueueClass.BULK)


def closed_window() -> dict[str, int]:
    start = (utcnow().hour + 2) % 24
    return {"send_start_hour": start, "send_end_hour": start}


CASES: dict[str, tuple[dict[str, Any], str, str | None]] = {
    # rule: (account values, expected outcome, expected last_error)
    "open": ({}, "submitted", None),
    "outside window": (closed_window(), "deferred", "outside send window"),
    "paused": (
        {"paused_until": utcnow() + dt.timedelta(hours=1), "pause_reason": "429 storm"},
        "deferred",
        "429 storm",
    ),
    "inactive": ({}, "deferred", "account inactive"),  # deactivated after enqueue
    "out of credits": ({"postpaid": False, "credits": 0}, "deferred", "out of credits"),
    "enough credits": ({"postpaid": False, "credits": 1}, "submitted", None),
}


@pytest.mark.parametrize("rule", list(CASES))
def test_account_rules_hold_through_the_send_path(database: str, rule: str) -> None:
    values, outcome, error = CASES[rule]
    account_id = account(**values)
    message_id = enqueue_sms(NUMBER, f"rule {rule}", account=account_id)
    if rule == "inactive":
        with session_scope() as session:
            session.get(Account, account_id).active = False  # type: ignore[union-attr]
    result = send_once().results[message_id]
    assert result.outcome == outcome
    stored = row(message_id)
    if outcome == "submitted":
        assert stored.send_status == SendStatus.SUBMITTED.value and stored.gateway_id
        assert stored.attempts == 1
    else:
        assert stored.send_status == SendStatus.QUEUED.value
        assert stored.attempts == 0  # nothing reached the gateway
        assert stored.last_error == error
        assert stored.due_at > utcnow()  # waits in the database, not in a loop
        assert send_once().claimed == 0  # and is not claimed again meanwhile


def test_prepaid_balance_holds_across_one_batch(database: str) -> None:
    account_id = account(postpaid=False, credits=2)
    ids = [enqueue_sms(NUMBER, f"m{i}", account=account_id) for i in range(4)]
    batch = send_once()
    outcomes = sorted(batch.results[i].outcome.value for i in ids)
    assert outcomes == ["deferred", "deferred", "submitted", "submitted"]
    with session_scope() as session:
        assert session.get(Account, account_id).credits == 0  # type: ignore[union-attr]


def test_rate_limit_holds_across_one_batch(database: str) -> None:
    from sms_pipeline.services.accounts import rules as accounts
    from sms_pipeline.settings import get_settings

    # Both databases number their accounts from 1: start from an empty limiter.
    accounts._limiter(get_settings()).storage.reset()
    account_id = account(rate_limit_per_second=2)
    ids = [enqueue_sms(NUMBER, f"m{i}", account=account_id) for i in range(5)]
    batch = send_once()
    outcomes = [batch.results[i].outcome.value for i in ids]
    assert outcomes.count("submitted") == 2
    assert outcomes.count("deferred") == 3
    for message_id in ids:
        stored = row(message_id)
        if stored.send_status == SendStatus.QUEUED.value:
            assert stored.attempts == 0 and stored.last_error == "rate"


def test_opt_out_stops_texts_but_not_essential_types(database: str) -> None:
    text = enqueue_sms(NUMBER, "newsletter")
    medication = enqueue_sms(NUMBER, "your prescription is ready", "medication_request")
    with session_scope() as session:
        session.add(OptOut(phone_number=NUMBER, source="test"))
    batch = send_once()
    assert batch.results[text].outcome == "opted_out"
    assert batch.results[medication].outcome == "submitted"
    assert row(text).send_status == SendStatus.OPTED_OUT.value
    assert row(text).attempts == 0


def test_one_number_opting_out_stops_only_that_numbers_texts(database: str) -> None:
    # On SQLite a claim that read the opt-out in its RETURNING compared the opt-out table
    # with itself: one STOP made every text of every number OPTED OUT.
    stopped = enqueue_sms(NUMBER, "newsletter")
    others = [enqueue_sms(f"+38093123456{i}", "newsletter") for i in range(3)]
    with session_scope() as session:
        session.add(OptOut(phone_number=NUMBER, source="test"))
    batch = send_once()
    assert batch.results[stopped].outcome == "opted_out"
    assert [batch.results[i].outcome for i in others] == ["submitted"] * 3


def test_higher_priority_goes_first_and_urgent_never_waits_for_bulk(database: str) -> None:
    low = enqueue_sms(NUMBER, "low", priority=0)
    high = enqueue_sms(NUMBER, "high", priority=9)
    code = enqueue_sms(NUMBER, "Your code is 1234", "verification")
    first = sending.send_batch(queue_class=QueueClass.BULK, limit=1)
    assert list(first.results) == [high]
    urgent = sending.send_batch(queue_class=QueueClass.URGENT)
    assert list(urgent.results) == [code]
    assert row(low).send_status == SendStatus.QUEUED.value
    with session_scope() as session:
        assert session.scalar(select(SmsLog.send_status).where(SmsLog.id == low)) == "QUEUED"

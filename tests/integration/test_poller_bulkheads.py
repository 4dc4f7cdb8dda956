"""Every poller isolates its units (issue 27, item 5): one failing unit is counted
(sms_poller_failures_total{poller}) and skipped, and the others go on.

Each unit's failure is injected where the unit's own work runs (a bug or a database error
in it), then the real poller runs over real rows.
"""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

import pytest
from sqlalchemy import select, update

from sms_pipeline import dispatch, enqueue_sms
from sms_pipeline.db import session_scope
from sms_pipeline.db.models import (
    Account,
    CallbackEvent,
    SendStatus,
    SmsLog,
    SmsQueue,
    utcnow,
)
from sms_pipeline.metrics import catalogue as c
from sms_pipeline.metrics.store import get_store
from sms_pipeline.services import callbacks, replication, sql_route
from sms_pipeline.services.status import checks as status_checks
from tests.helpers import NORMAL


def failures(poller: str) -> float:
    store = get_store()
    store.flush()
    return store.value(c.POLLER_FAILURES_TOTAL, {"poller": poller})


def make_account(name: str, **values: Any) -> int:
    with session_scope() as session:
        account = Account(name=name, username=name, postpaid=True, **values)
        session.add(account)
        session.flush()
        return account.id


def test_one_sql_route_account_failing_holds_no_other_account(
    db: Any, no_dispatch: list[Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    broken = make_account("broken", process_queue_interval=1)
    healthy = make_account("healthy", process_queue_interval=1)
    with session_scope() as session:
        for account_id in (broken, healthy):
            session.add(SmsQueue(account_id=account_id, num_to=NORMAL, data1="hi"))
    real = sql_route.ingest_account_queue

    def ingest(account_id: int, settings: Any = None, **kwargs: Any) -> int:
        if account_id == broken:
            raise RuntimeError("a bug in this account's intake")
        return real(account_id, settings, **kwargs)

    monkeypatch.setattr(sql_route, "ingest_account_queue", ingest)
    before = failures("sql_route")
    assert sql_route.poll_queues() == 1
    assert failures("sql_route") - before == 1
    with session_scope() as session:
        assert [r.account_id for r in session.scalars(select(SmsLog))] == [healthy]
        # The broken account's row waits for the next round, not lost.
        assert [r.account_id for r in session.scalars(select(SmsQueue))] == [broken]


def test_a_failing_replication_batch_is_counted_and_the_pass_returns(
    db: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    def batch(*_args: Any, **_kwargs: Any) -> Any:
        raise RuntimeError("a bug in a batch")

    monkeypatch.setattr(replication, "replicate_batch", batch)
    before = failures("replication")
    result = replication.replicate_verifications()
    assert result.inserted == 0
    assert failures("replication") - before == 1


@pytest.fixture
def final_with_callbacks(db: Any, settings_env: Any, no_dispatch: list[Any]) -> list[uuid.UUID]:
    settings_env(SMS_CALLBACK_ALLOW_PRIVATE="true", SMS_CALLBACK_SECRET="s")
    ids = [enqueue_sms(NORMAL, "hi", callback_url="http://127.0.0.1:9/hook") for _ in range(3)]
    now = utcnow()
    with session_scope() as session:
        session.execute(
            update(SmsLog).values(
                send_status=SendStatus.SUBMITTED.value,
                gateway_status="Delivered",
                submitted_at=now,
                status_changed_at=now,
                final_at=now,
            )
        )
    return ids


def test_one_callback_event_that_cannot_be_built_holds_no_other_event(
    final_with_callbacks: list[uuid.UUID], monkeypatch: pytest.MonkeyPatch
) -> None:
    bad = final_with_callbacks[1]
    real = callbacks.event_payload

    def payload(row: Any) -> Any:
        if row.id == bad:
            raise ValueError("a value the payload cannot carry")
        return real(row)

    monkeypatch.setattr(callbacks, "event_payload", payload)
    monkeypatch.setattr(dispatch, "callback_deliveries", lambda ids, expires: len(ids))
    before = failures("callbacks")
    sweep = callbacks.sweep_callbacks()
    assert (sweep.created, sweep.dispatched) == (2, 2)
    assert failures("callbacks") - before == 1
    with session_scope() as session:
        got = set(session.scalars(select(CallbackEvent.message_id)))
    assert got == set(final_with_callbacks) - {bad}


def test_recording_events_failing_still_dispatches_the_due_deliveries(
    final_with_callbacks: list[uuid.UUID], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(dispatch, "callback_deliveries", lambda ids, expires: len(ids))
    assert callbacks.sweep_callbacks().created == 3  # due now, and dispatched
    with session_scope() as session:
        session.execute(update(CallbackEvent).values(next_attempt_at=utcnow()))

    def broken(*_args: Any) -> int:
        raise RuntimeError("recording failed")

    monkeypatch.setattr(callbacks, "create_events", broken)
    before = failures("callbacks")
    assert callbacks.sweep_callbacks().dispatched == 3
    assert failures("callbacks") - before == 1


def test_a_chunk_of_status_checks_failing_is_counted(
    db: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    def unreadable(*_args: Any) -> Any:
        raise RuntimeError("the database went away mid-chunk")

    monkeypatch.setattr(status_checks, "read_rows", unreadable)
    before = failures("status")
    assert status_checks.check_many([uuid.uuid4()]) == []
    assert failures("status") - before == 1


def test_one_inbound_account_failing_is_counted_and_the_others_are_polled(
    db: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from sms_pipeline.services import inbound

    broken = make_account("broken", get_replies_interval=1)
    healthy = make_account("healthy", get_replies_interval=1)
    polled: list[int] = []

    def poll(account_id: int, kind: Any, **kwargs: Any) -> Any:
        polled.append(account_id)
        if account_id == broken:
            raise RuntimeError("a bug with this account's page")
        return kwargs["result"]

    monkeypatch.setattr(inbound, "poll_account", poll)
    before = failures("inbound")
    result = inbound.poll_inbound(client=object())  # type: ignore[arg-type]
    assert result.errors == 1 and polled == [broken, healthy]
    assert failures("inbound") - before == 1


def test_a_verification_that_cannot_be_replicated_is_set_aside_and_holds_no_other(
    db: Any, no_dispatch: list[Any]
) -> None:
    from sqlalchemy import insert, text

    from sms_pipeline.db.models import Verification

    now = utcnow()

    def verification(n: int, age: int) -> dict[str, Any]:
        return {
            "id": uuid.uuid4(),
            "phone_number": f"+3809312{n:05d}",
            "check_digit": 0,
            "code": 123456,
            "status": "new",
            "active": True,
            "attempts_count": 0,
            "code_expired_at": now + dt.timedelta(minutes=10),
            "inserted_at": now - dt.timedelta(seconds=age),
        }

    poison = verification(1, age=60)  # the oldest: first in every batch
    good = [verification(n, age=30 - n) for n in range(2, 5)]
    with session_scope() as session:
        session.execute(insert(Verification), [poison, *good])
        # An operator's rule the poison's message breaks (any database error would do).
        session.execute(
            text(
                "CREATE FUNCTION verification.refuse_poison() RETURNS trigger AS $$ BEGIN "
                f"IF NEW.verification_id = '{poison['id']}' AND NEW.body <> '' THEN "
                "RAISE EXCEPTION 'refused by a trigger'; END IF; RETURN NEW; END $$ "
                "LANGUAGE plpgsql"
            )
        )
        session.execute(
            text(
                "CREATE TRIGGER refuse_poison BEFORE INSERT ON verification.sms_log "
                "FOR EACH ROW EXECUTE FUNCTION verification.refuse_poison()"
            )
        )
    try:
        before = failures("replication")
        result = replication.replicate_verifications()
        assert result.inserted == 4 and result.dispatched == 3 and result.invalid == 1
        assert failures("replication") - before == 2  # the batch, then the row alone
        with session_scope() as session:
            rows = {r.verification_id: r for r in session.scalars(select(SmsLog))}
        assert {rows[v["id"]].send_status for v in good} == {SendStatus.QUEUED.value}
        aside = rows[poison["id"]]
        assert aside.send_status == SendStatus.DATA1_INVALID.value
        reason = aside.last_error or ""
        assert reason.startswith("the verification row could not be replicated (")
        assert aside.final_at is not None and aside.phone_number == "" and aside.body == ""
        # Replicated once, by that fact: the next pass has nothing to do.
        assert replication.replicate_verifications().inserted == 0
    finally:
        with session_scope() as session:
            session.execute(text("DROP TRIGGER refuse_poison ON verification.sms_log"))
            session.execute(text("DROP FUNCTION verification.refuse_poison()"))

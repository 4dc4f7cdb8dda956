"""Replication of verification SMS into sms_log: exactly once, whatever the commit order.

Real PostgreSQL; sends are captured at the outbox (publish) so the test can count them,
except in the worker test, which runs the beat task through Redis and a real worker.
"""

from __future__ import annotations

import datetime as dt
import itertools
import threading
import uuid
from typing import Any

import pytest
from sqlalchemy import Connection, func, insert, select, update

from sms_pipeline.db import session_scope
from sms_pipeline.db.models import SendStatus, SmsLog, Verification, utcnow
from sms_pipeline.services.intake import replication
from tests.helpers import Published, capture_publishes, repeating
from tests.support import wait_until

_numbers = itertools.count(1000000)


def verification(**values: Any) -> dict[str, Any]:
    now = utcnow()
    # The verification service's row (its real table: integer code, no updated_at).
    row = {
        "id": uuid.uuid4(),
        "phone_number": f"+38093{next(_numbers):07d}",
        "check_digit": 0,
        "code": 100000 + next(_numbers) % 900000,
        "status": "new",
        "active": True,
        "attempts_count": 0,
        "code_expired_at": now + dt.timedelta(minutes=10),
        "inserted_at": now,
    }
    row.update(values)
    return row


def add(conn: Connection, rows: list[dict[str, Any]]) -> None:
    conn.execute(insert(Verification), rows)


def log_rows() -> list[SmsLog]:
    with session_scope() as session:
        return list(session.scalars(select(SmsLog)))


def log_count() -> int:
    with session_scope() as session:
        return int(session.scalar(select(func.count()).select_from(SmsLog)) or 0)


@pytest.fixture
def sent(db: Any, monkeypatch: pytest.MonkeyPatch) -> Published:
    return capture_publishes(monkeypatch)


def test_out_of_order_commits_and_two_replicators_give_exactly_one_row_each(
    pg_engine: Any, sent: Published
) -> None:
    def writer(rows: list[dict[str, Any]]) -> None:
        try:
            for start in range(0, len(rows), 50):
                with pg_engine.begin() as conn:
                    add(conn, [verification(**r) for r in rows[start : start + 50]])
        except BaseException as exc:
            errors.append(exc)

    # The long transaction inserts first (earliest inserted_at) and commits last.
    long_conn = pg_engine.connect()
    long_tx = long_conn.begin()
    try:
        # Earlier inserted_at values than any row the writers add.
        early = [verification(inserted_at=utcnow() - dt.timedelta(seconds=1)) for _ in range(100)]
        add(long_conn, early)

        with repeating(replication.replicate_verifications, threads=2) as errors:
            writers = [threading.Thread(target=writer, args=([{}] * 300,)) for _ in range(3)]
            for t in writers:
                t.start()
            for t in writers:
                t.join(120)
            wait_until(lambda: log_count() >= 900 or errors, 60, "900 rows replicated")
            assert not errors
            replicated_before = log_rows()
            assert len(replicated_before) == 900  # the long transaction's rows are not visible

            long_tx.commit()
            wait_until(lambda: log_count() >= 1000 or errors, 60, "1000 rows replicated")
    finally:
        # A failure above must not leave a transaction holding locks (teardown truncates).
        if long_tx.is_active:
            long_tx.rollback()
        long_conn.close()
    # Two last passes at once, after everything committed: nothing new, nothing twice.
    finals = [threading.Thread(target=replication.replicate_verifications) for _ in range(2)]
    for t in finals:
        t.start()
    for t in finals:
        t.join(60)
    assert not errors

    rows = log_rows()
    assert len(rows) == 1000
    assert len({r.verification_id for r in rows}) == 1000
    with session_scope() as session:
        all_ids = set(session.scalars(select(Verification.id)))
    assert {r.verification_id for r in rows} == all_ids
    # Each row was sent once: one dispatch per inserted row, none for the losers' attempts.
    assert sorted(sent.ids) == sorted(r.id for r in rows)
    assert all(r.type == "verification" and r.send_status == "QUEUED" for r in rows)
    # The late rows really were behind the ones already replicated (a mark would skip them).
    with session_scope() as session:
        first_done = session.scalar(
            select(func.min(Verification.inserted_at)).where(
                Verification.id.in_([r.verification_id for r in replicated_before])
            )
        )
    assert first_done is not None
    early_inserted = max(r["inserted_at"] for r in early)
    assert early_inserted < first_done


def test_attempts_count_updates_never_create_another_row(pg_engine: Any, sent: Published) -> None:
    rows = [verification() for _ in range(5)]
    with pg_engine.begin() as conn:
        add(conn, rows)
    assert replication.replicate_verifications().inserted == 5
    before = {r.id: (r.verification_id, r.body) for r in log_rows()}
    for attempt in range(1, 4):
        with pg_engine.begin() as conn:
            conn.execute(update(Verification).values(attempts_count=attempt, status="unverified"))
        assert replication.replicate_verifications().inserted == 0
    after = {r.id: (r.verification_id, r.body) for r in log_rows()}
    assert after == before
    assert len(sent.ids) == 5


def test_replicated_row_carries_the_code_in_the_configured_template(
    pg_engine: Any, sent: Published, settings_env: Any
) -> None:
    settings_env(SMS_VERIFICATION_TEMPLATE="Kod: {code}. Nikomu ne povidomliaite.")
    row = verification(code=493817, phone_number="380931112233")
    with pg_engine.begin() as conn:
        add(conn, [row])
    result = replication.replicate_verifications()
    assert (result.inserted, result.dispatched) == (1, 1)
    (message,) = log_rows()
    assert message.verification_id == row["id"]
    assert message.body == "Kod: 493817. Nikomu ne povidomliaite."
    assert message.phone_number == "+380931112233"
    assert (message.type, message.send_status) == ("verification", "QUEUED")
    assert message.uniq_key == message.id.hex
    with session_scope() as session:
        from sms_pipeline.db.models import Account

        account = session.get(Account, message.account_id)
        assert account is not None and account.name == "default"
    assert sent.ids == [message.id]


@pytest.mark.parametrize(("code", "digits", "shown"), [(4817, 6, "004817"), (4817, 0, "4817")])
def test_integer_code_is_shown_with_the_configured_digits(
    pg_engine: Any, sent: Published, settings_env: Any, code: int, digits: int, shown: str
) -> None:
    settings_env(SMS_VERIFICATION_TEMPLATE="Kod {code}", SMS_VERIFICATION_CODE_DIGITS=digits)
    with pg_engine.begin() as conn:
        add(conn, [verification(code=code)])
    replication.replicate_verifications()
    (message,) = log_rows()
    assert message.body == f"Kod {shown}"


@pytest.mark.parametrize(
    ("values", "reason"),
    [
        ({"status": "canceled", "active": False}, "verification canceled before it was sent"),
        ({"status": "expired", "active": False}, "verification expired before it was sent"),
        (
            {"code_expired_at": utcnow() - dt.timedelta(seconds=1)},
            "code expired before it was sent",
        ),
    ],
)
def test_verification_ended_before_we_saw_it_is_logged_expired_and_not_sent(
    pg_engine: Any, sent: Published, values: dict[str, Any], reason: str
) -> None:
    with pg_engine.begin() as conn:
        add(conn, [verification(**values)])
    result = replication.replicate_verifications()
    assert (result.inserted, result.ended, result.dispatched) == (1, 1, 0)
    (message,) = log_rows()
    assert (message.send_status, message.last_error) == (SendStatus.EXPIRED.value, reason)
    assert message.final_at is not None and message.uniq_key is None
    assert sent.ids == []
    assert replication.replicate_verifications().inserted == 0


def test_bad_phone_number_is_logged_number_invalid(pg_engine: Any, sent: Published) -> None:
    row = verification(phone_number="12")
    with pg_engine.begin() as conn:
        add(conn, [row])
    result = replication.replicate_verifications()
    assert (result.inserted, result.invalid, result.dispatched) == (1, 1, 0)
    (message,) = log_rows()
    assert message.send_status == SendStatus.NUMBER_INVALID.value
    assert message.final_at is not None and message.last_error
    assert sent.ids == []
    assert replication.replicate_verifications().inserted == 0


def test_a_verification_older_than_the_old_look_back_window_is_replicated_once(
    pg_engine: Any, sent: Published
) -> None:
    # Inserted while the pipeline was down for 20 minutes (the old window was 10): replicated
    # because no sms_log row holds its id, whatever its age; waiting and its age are shown.
    from sms_pipeline.metrics import queries

    old = verification(inserted_at=utcnow() - dt.timedelta(minutes=20))
    with pg_engine.begin() as conn:
        add(conn, [old])
    with pg_engine.connect() as conn:
        stat = queries.replication_waiting(conn)
    assert stat.depth == 1 and stat.oldest_due is not None
    assert utcnow() - stat.oldest_due >= dt.timedelta(minutes=20)
    result = replication.replicate_verifications()
    assert (result.inserted, result.dispatched) == (1, 1)
    (message,) = log_rows()
    assert (message.verification_id, message.send_status) == (old["id"], "QUEUED")
    assert sent.ids == [message.id]
    assert replication.replicate_verifications().inserted == 0
    with pg_engine.connect() as conn:
        assert queries.replication_waiting(conn) == queries.QueueStat(0, None)


def test_a_pass_larger_than_one_batch_replicates_everything(
    pg_engine: Any, sent: Published
) -> None:
    with pg_engine.begin() as conn:
        add(conn, [verification() for _ in range(25)])
    result = replication.replicate_verifications(batch_size=10)
    assert result.inserted == 25
    assert log_count() == 25


def test_replicate_task_through_the_worker_logs_and_sends(worker: Any, simulator: Any) -> None:
    from sms_pipeline.broker.app import REPLICATE_TASK, app
    from sms_pipeline.db import get_engine

    row = verification(phone_number="+380931234567")
    with get_engine().begin() as conn:
        add(conn, [row])
    app.send_task(REPLICATE_TASK)
    seen: list[SmsLog | None] = [None]

    def replicated_and_sent() -> bool:
        with session_scope() as session:
            seen[0] = session.scalar(select(SmsLog).where(SmsLog.verification_id == row["id"]))
        return seen[0] is not None and seen[0].send_status == SendStatus.SUBMITTED.value

    wait_until(replicated_and_sent, 30, lambda: f"replicated and sent: {seen[0]!r}", 0.1)
    message = seen[0]
    assert (
        message is not None and message.gateway_id and simulator.submissions(message.uniq_key) == 1
    )


def test_cli_replicate_once(
    pg_engine: Any, sent: Published, capsys: pytest.CaptureFixture[str]
) -> None:
    from sms_pipeline.cli import main

    with pg_engine.begin() as conn:
        add(conn, [verification(), verification(phone_number="nope")])
    assert main(["replicate", "--once"]) == 0
    assert "inserted 2 (to send 1, tracked 0, refused 1)" in capsys.readouterr().out
    assert main(["replicate", "--once"]) == 0
    assert "inserted 0" in capsys.readouterr().out
    assert log_count() == 2

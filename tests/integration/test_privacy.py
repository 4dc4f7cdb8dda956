"""Data protection on real PostgreSQL: expiry, supersede, redaction, retention, erasure.

Clocks are passed in (`now=`) or moved by moving the data; nothing sleeps.
"""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import threading
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import String, Text, func, select, text, update
from sqlalchemy.orm import Session

from sms_pipeline import OptedOut, enqueue_sms
from sms_pipeline.api.app import create_app
from sms_pipeline.db import session_scope
from sms_pipeline.db.models import (
    Account,
    AuditEvent,
    Base,
    CallbackEvent,
    DailyRollup,
    IdempotencyRecord,
    OptOut,
    OptOutHash,
    SendStatus,
    SmsLog,
    SmsQueue,
    SmsReply,
    SmsShortcode,
    utcnow,
)
from sms_pipeline.gateway import GatewayConnectionError, GatewayError, GatewayStatus
from sms_pipeline.gateway.client import SendResult
from sms_pipeline.metrics.report import build_report
from sms_pipeline.metrics.store import get_store
from sms_pipeline.services import privacy
from sms_pipeline.services.accounts.api_keys import create_api_key
from tests.factories import make_account, message
from tests.factories import message_row as row
from tests.helpers import AnswersAtOnce, attempt_send, run_cli
from tests.support import wait_until

NUMBER = "+380931234567"
DIGITS = NUMBER[1:]
OTHER = "+380671112233"


class RecordingClient(AnswersAtOnce):
    """A gateway client that records each send and answers as told."""

    def __init__(self, answer: Any = None, during: Any = None) -> None:
        self.calls: list[dict[str, Any]] = []
        self.answer = answer
        self.during = during

    def send(self, phone_number: str, body: str, **kw: Any) -> SendResult:
        self.calls.append({"phone_number": phone_number, "body": body, **kw})
        if self.during is not None:
            self.during()
        if isinstance(self.answer, Exception):
            raise self.answer
        return SendResult(
            gateway_id=f"g-{len(self.calls)}",
            status=GatewayStatus.ACCEPTED,
            date=None,
            date_raw=None,
            error=None,
            ext_id=kw.get("ext_id"),
            raw=b"",
        )

    def send_many(self, batch: list[Any]) -> list[Any]:
        """The batch interface the send path uses: one `send` per request, in order."""
        answers: list[Any] = []
        for r in batch:
            try:
                answers.append(
                    self.send(
                        r.phone_number, r.body, ext_id=r.ext_id, uniq_key=r.uniq_key,
                        source=r.source, validity=r.validity,
                    )
                )  # fmt: skip
            except GatewayError as exc:
                answers.append(exc)
        return answers


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return run_cli(args)


# --- expiry -----------------------------------------------------------------------------------


def test_code_behind_paused_account_ends_expired_after_its_validity_and_is_never_submitted(
    db: Any, simulator: Any, no_dispatch: list[Any]
) -> None:
    now = utcnow()
    account_id = make_account(paused_until=now + dt.timedelta(hours=1), pause_reason="test")
    message_id = enqueue_sms(
        NUMBER, "Code 123456", "verification", account=account_id, valid_for=120
    )
    assert row(message_id).expires_at == row(message_id).due_at + dt.timedelta(seconds=120)
    assert attempt_send(message_id).outcome == "deferred"  # the account is paused

    assert privacy.privacy_sweep(now=now + dt.timedelta(seconds=119))["ended"] == 0
    assert row(message_id).send_status == SendStatus.QUEUED.value
    assert privacy.privacy_sweep(now=now + dt.timedelta(seconds=121))["ended"] == 1

    ended = row(message_id)
    assert ended.send_status == SendStatus.EXPIRED.value
    assert ended.final_at is not None and "expired" in (ended.last_error or "")
    assert ended.body == privacy.REDACTED  # redacted at expiry, in the same sweep
    with session_scope() as session:  # the pause ends; the message still never goes
        session.execute(update(Account).values(paused_until=None))
    assert attempt_send(message_id).outcome == "skipped"
    assert simulator.submissions(ended.uniq_key) == 0


def test_claim_refuses_an_expired_code_and_ends_it_expired(
    db: Any, simulator: Any, no_dispatch: list[Any]
) -> None:
    message_id = enqueue_sms(NUMBER, "Code 654321", "2FA")
    with session_scope() as session:  # its validity ran out while it waited
        session.execute(update(SmsLog).values(expires_at=utcnow() - dt.timedelta(seconds=1)))
    assert attempt_send(message_id).outcome == "expired"
    ended = row(message_id)
    assert ended.send_status == SendStatus.EXPIRED.value and ended.attempts == 0
    assert simulator.submissions(ended.uniq_key) == 0


def test_message_older_than_its_types_max_queue_age_ends_expired(
    db: Any, settings_env: Any, no_dispatch: list[Any]
) -> None:
    settings_env(SMS_MAX_QUEUE_AGE_SECONDS_TEXT="3600")
    account_id = make_account(postpaid=False, credits=0)  # out of credit: it waits
    message_id = enqueue_sms(NUMBER, "Your appointment is at 10:00", account=account_id)
    code_id = enqueue_sms(OTHER, "Code 111111", "verification", account=account_id)
    text_row, code_row = row(message_id), row(code_id)
    assert text_row.expires_at == text_row.due_at + dt.timedelta(hours=1)
    assert code_row.expires_at == code_row.due_at + dt.timedelta(minutes=10)  # the defaults
    assert attempt_send(message_id).outcome == "deferred"

    start = text_row.due_at
    privacy.expire_waiting(now=start + dt.timedelta(seconds=3599))
    assert row(message_id).send_status == SendStatus.QUEUED.value
    assert row(code_id).send_status == SendStatus.EXPIRED.value  # 10 minutes passed
    privacy.expire_waiting(now=start + dt.timedelta(seconds=3601))
    ended = row(message_id)
    assert ended.send_status == SendStatus.EXPIRED.value
    assert "maximum queue age" in (ended.last_error or "")
    assert ended.body == "Your appointment is at 10:00"  # text is not a redacted type


def test_gateway_request_carries_the_time_the_code_has_left(
    db: Any, no_dispatch: list[Any]
) -> None:
    code_id = enqueue_sms(NUMBER, "Code 222222", "verification", valid_for=dt.timedelta(minutes=5))
    text_id = enqueue_sms(OTHER, "hello")
    client = RecordingClient()
    assert attempt_send(code_id, client=client).outcome == "submitted"  # type: ignore[arg-type]
    assert attempt_send(text_id, client=client).outcome == "submitted"  # type: ignore[arg-type]
    assert client.calls[0]["validity"] == "+4 minute"  # under 5 whole minutes left
    assert client.calls[1]["validity"] == "+2 hour"  # IP2SMS_VALIDITY for other types


def test_valid_for_that_is_not_a_positive_duration_is_refused(db: Any) -> None:
    from sms_pipeline import InvalidMessage

    for bad in (0, -5, "10", dt.timedelta(0)):
        with pytest.raises(InvalidMessage, match="valid_for"):
            enqueue_sms(NUMBER, "Code 1", "verification", valid_for=bad)  # type: ignore[arg-type]


# --- supersede -------------------------------------------------------------------------------


def test_two_codes_to_one_number_leave_one_live(db: Any, no_dispatch: list[Any]) -> None:
    first = enqueue_sms(NUMBER, "Code 111111", "verification")
    other_type = enqueue_sms(NUMBER, "2FA 999999", "2FA")
    second = enqueue_sms(NUMBER, "Code 222222", "verification")
    old = row(first)
    assert old.send_status == SendStatus.SUPERSEDED.value
    assert old.superseded_by == second and str(second) in (old.last_error or "")
    assert row(second).send_status == SendStatus.QUEUED.value
    assert row(other_type).send_status == SendStatus.QUEUED.value  # another type stays
    assert attempt_send(first).outcome == "skipped"


def test_concurrent_codes_to_one_number_leave_exactly_one_live(
    db: Any, no_dispatch: list[Any]
) -> None:
    barrier = threading.Barrier(6)
    ids: list[uuid.UUID] = []

    def enqueue(n: int) -> None:
        barrier.wait()
        ids.append(enqueue_sms(NUMBER, f"Code {n:06d}", "verification"))

    threads = [threading.Thread(target=enqueue, args=(n,)) for n in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    with session_scope() as session:
        statuses = session.execute(
            select(SmsLog.send_status, func.count()).group_by(SmsLog.send_status)
        ).all()
    assert dict(statuses) == {"QUEUED": 1, "SUPERSEDED": 5}


def test_a_code_waiting_for_the_numbers_lock_ends_the_code_committed_meanwhile(
    db: Any, no_dispatch: list[Any]
) -> None:
    """The lock comes before the statement that looks for older codes, which therefore sees
    a code committed while it waited (one statement taking both would not: its snapshot
    predates the other commit)."""
    account_id = int(row(enqueue_sms(OTHER, "warm up", "text")).account_id)
    lock = text("SELECT pg_advisory_xact_lock(hashtextextended(:k, 18))")
    waiters = text(
        "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted"
        " AND database = (SELECT oid FROM pg_database WHERE datname = current_database())"
    )
    newer: list[uuid.UUID] = []
    with db.connect() as holder:
        held = holder.begin()
        holder.execute(lock, {"k": privacy.number_lock_key(account_id, NUMBER)})
        waiting = threading.Thread(
            target=lambda: newer.append(enqueue_sms(NUMBER, "Code 222222", "verification"))
        )
        waiting.start()
        with db.connect() as watcher:
            wait_until(
                lambda: watcher.execute(waiters).scalar(), 30, "the code waiting for the lock"
            )
        with Session(bind=holder) as session:
            older = message(account_id, type="verification", phone_number=NUMBER)
            session.add(older)
            session.flush()
            older_id = older.id
        held.commit()  # the older code commits as the lock is released
    waiting.join(timeout=30)
    assert newer
    assert row(older_id).send_status == SendStatus.SUPERSEDED.value
    assert row(older_id).superseded_by == newer[0]
    assert row(newer[0]).send_status == SendStatus.QUEUED.value


def test_codes_racing_through_every_door_leave_exactly_one_live_per_type(
    db: Any, no_dispatch: list[Any]
) -> None:
    """The one-statement code (enqueue_sms in its own transaction), a caller's session and
    enqueue_many race to one number: one live code per type, every other one SUPERSEDED."""
    from sms_pipeline import enqueue_many

    doors = 3
    rounds = 4
    barrier = threading.Barrier(doors * 2)
    failures: list[BaseException] = []

    def enqueue(door: int, message_type: str) -> None:
        barrier.wait()
        try:
            for n in range(rounds):
                body = f"Code {door}{n:05d}"
                if door == 0:
                    enqueue_sms(NUMBER, body, message_type)
                elif door == 1:
                    with session_scope() as session:
                        enqueue_sms(NUMBER, body, message_type, session=session)
                else:
                    enqueue_many([{"phone_number": NUMBER, "body": body, "type": message_type}])
        except BaseException as exc:  # pragma: no cover - reported below
            failures.append(exc)

    threads = [
        threading.Thread(target=enqueue, args=(door, message_type))
        for door in range(doors)
        for message_type in ("verification", "2FA")
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert failures == []
    with session_scope() as session:
        statuses = session.execute(
            select(SmsLog.type, SmsLog.send_status, func.count()).group_by(
                SmsLog.type, SmsLog.send_status
            )
        ).all()
    superseded = doors * rounds - 1
    assert {(t, s): n for t, s, n in statuses} == {
        ("verification", "QUEUED"): 1,
        ("verification", "SUPERSEDED"): superseded,
        ("2FA", "QUEUED"): 1,
        ("2FA", "SUPERSEDED"): superseded,
    }


def test_a_code_refused_for_an_inactive_account_ends_no_older_code(
    db: Any, no_dispatch: list[Any]
) -> None:
    from sms_pipeline import InvalidMessage

    account_id = make_account()
    with session_scope() as session:
        name = session.get(Account, account_id).name  # type: ignore[union-attr]
    first = enqueue_sms(NUMBER, "Code 111111", "verification", account=name)
    with session_scope() as session:
        session.execute(update(Account).where(Account.id == account_id).values(active=False))
    with pytest.raises(InvalidMessage, match="not active"):
        enqueue_sms(NUMBER, "Code 222222", "verification", account=name)
    kept = row(first)
    assert kept.send_status == SendStatus.QUEUED.value and kept.superseded_by is None


def test_a_code_marks_an_attempt_in_flight_and_ends_a_waiting_one_in_plain_sql(
    db: Any, no_dispatch: list[Any]
) -> None:
    """What the one statement leaves, read by plain SQL: the waiting code SUPERSEDED with
    its reason, the one in flight still SENDING but marked, the newest QUEUED."""
    waiting = enqueue_sms(NUMBER, "Code 111111", "2FA")
    in_flight = enqueue_sms(OTHER, "Code 222222", "2FA")
    with session_scope() as session:  # a worker claimed it (its attempt is at the gateway)
        session.execute(
            text("UPDATE verification.sms_log SET send_status = 'SENDING', phone_number = :n"
                 " WHERE id = :id"),
            {"n": NUMBER, "id": in_flight},
        )  # fmt: skip
    newest = enqueue_sms(NUMBER, "Code 333333", "2FA")
    with session_scope() as session:
        rows = {
            r.id: r
            for r in session.execute(
                text(
                    "SELECT id, send_status, superseded_by, final_at, last_error"
                    " FROM verification.sms_log"
                )
            )
        }
    assert rows[waiting].send_status == "SUPERSEDED" and rows[waiting].superseded_by == newest
    assert rows[waiting].final_at is not None and str(newest) in rows[waiting].last_error
    assert rows[in_flight].send_status == "SENDING" and rows[in_flight].superseded_by == newest
    assert rows[in_flight].final_at is None
    assert rows[newest].send_status == "QUEUED" and rows[newest].superseded_by is None


def test_superseded_in_flight_attempt_is_recorded_truthfully_and_never_retried(
    db: Any, no_dispatch: list[Any]
) -> None:
    first = enqueue_sms(NUMBER, "Code 111111", "verification")
    newer: list[uuid.UUID] = []
    # The newer code arrives while the first one's attempt is at the gateway, which fails.
    failing = RecordingClient(
        answer=GatewayConnectionError("connection refused"),
        during=lambda: newer.append(enqueue_sms(NUMBER, "Code 222222", "verification")),
    )
    assert attempt_send(first, client=failing).outcome == "retry"  # type: ignore[arg-type]
    marked = row(first)
    assert marked.send_status == SendStatus.QUEUED.value and marked.superseded_by == newer[0]
    assert attempt_send(first, client=failing).outcome == "superseded"  # type: ignore[arg-type]
    assert row(first).send_status == SendStatus.SUPERSEDED.value
    assert len(failing.calls) == 1  # never attempted again

    # An attempt in flight that the gateway accepts is recorded as it happened.
    third: list[uuid.UUID] = []
    accepting = RecordingClient(
        during=lambda: third.append(enqueue_sms(NUMBER, "Code 333333", "verification"))
    )
    assert attempt_send(newer[0], client=accepting).outcome == "submitted"  # type: ignore[arg-type]
    submitted = row(newer[0])
    assert submitted.send_status == SendStatus.SUBMITTED.value and submitted.gateway_id == "g-1"
    assert row(third[0]).send_status == SendStatus.QUEUED.value


# --- redaction -------------------------------------------------------------------------------


def test_delivered_verification_body_is_redacted_within_one_sweep_after_final(
    db: Any, no_dispatch: list[Any]
) -> None:
    code_id = enqueue_sms(NUMBER, "Your code: 123456", "verification")
    text_id = enqueue_sms(OTHER, "Clinic opens at 9")
    client = RecordingClient()
    for message_id in (code_id, text_id):
        assert attempt_send(message_id, client=client).outcome == "submitted"  # type: ignore[arg-type]
    assert privacy.privacy_sweep()["redacted"] == 0  # still moving: not final yet
    with session_scope() as session:  # the status check finds both delivered
        session.execute(
            update(SmsLog).values(gateway_status="Delivered", final_at=utcnow(), next_check_at=None)
        )
    assert privacy.privacy_sweep()["redacted"] == 1
    redacted = row(code_id)
    assert redacted.body == "[redacted]" and redacted.body_chars == len("Your code: 123456")
    assert (redacted.segments, redacted.encoding) == (1, "GSM-7")
    assert redacted.redacted_at is not None
    assert row(text_id).body == "Clinic opens at 9"
    assert privacy.privacy_sweep()["redacted"] == 0  # once


# --- retention -------------------------------------------------------------------------------


def test_retention_removes_old_rows_in_batches_and_the_report_still_counts_them(
    db: Any, settings_env: Any, no_dispatch: list[Any]
) -> None:
    settings_env(SMS_RETENTION_DAYS="90", SMS_RETENTION_DAYS_VERIFICATION="7")
    now = utcnow()
    old = now - dt.timedelta(days=120)
    old_ids = [enqueue_sms(NUMBER, f"old {n}") for n in range(7)]
    code_ten_days = enqueue_sms(OTHER, "Code 1", "verification")
    text_ten_days = enqueue_sms(OTHER, "recent text")
    with session_scope() as session:
        session.execute(
            update(SmsLog)
            .where(SmsLog.id.in_(old_ids))
            .values(
                inserted_at=old, final_at=old, send_status="SUBMITTED", gateway_status="Delivered"
            )
        )
        ten_days = now - dt.timedelta(days=10)
        session.execute(
            update(SmsLog)
            .where(SmsLog.id.in_([code_ten_days, text_ten_days]))
            .values(inserted_at=ten_days, final_at=ten_days, send_status="EXPIRED")
        )
        session.add(
            SmsReply(account_id=row(old_ids[0]).account_id, message_id=old_ids[0],
                     phone_number=NUMBER, received_data="thanks", received_at=old)
        )  # fmt: skip
        session.add(CallbackEvent(message_id=old_ids[1], status="Delivered", payload="{}"))

    result = privacy.purge_expired_rows(now=now, batch_size=3)
    assert (result.messages, result.batches) == (8, 4)  # 3 + 3 + 1 texts, then the code
    assert result.replies == 1 and result.callback_events == 1
    with session_scope() as session:
        left = set(session.scalars(select(SmsLog.id)))
        rollup = session.scalar(select(func.sum(DailyRollup.messages)))
    assert left == {text_ten_days}  # the 10-day-old code is past its 7-day retention
    assert rollup == 8

    get_store().flush()
    report = build_report(since=dt.timedelta(days=365), until=now + dt.timedelta(hours=1))
    by_type = {t.type: t for t in report.types}
    assert by_type["text"].total == 8 and by_type["text"].by_status["Delivered"] == 7
    assert by_type["verification"].by_status == {"EXPIRED": 1}
    assert report.privacy["purged"] >= 8
    assert privacy.purge_expired_rows(now=now).messages == 0  # nothing twice


# --- one person: erasure, export, audit --------------------------------------------------------


def _seed_person(account_id: int) -> dict[str, Any]:
    """Rows holding NUMBER in every table that can hold it, plus one for another person."""
    with session_scope() as session:
        key = create_api_key(session, f"k-{uuid.uuid4().hex[:6]}")
    message_id = enqueue_sms(NUMBER, "Code 123456", "verification", account=account_id)
    text_id = enqueue_sms(NUMBER, "Your prescription is ready", account=account_id)
    keep_id = enqueue_sms(OTHER, "Not this person", account=account_id)
    with session_scope() as session:
        key_id = session.scalar(text("SELECT id FROM verification.api_keys LIMIT 1"))
        session.add_all(
            [
                SmsReply(account_id=account_id, message_id=text_id, phone_number=DIGITS,
                         received_data="STOP"),
                SmsShortcode(account_id=account_id, shortcode="7000", num_from=NUMBER,
                             data="STOP"),
                SmsQueue(account_id=account_id, num_to=DIGITS, data1="queued for me"),
                OptOut(phone_number=NUMBER, source="reply", keyword="STOP"),
                CallbackEvent(message_id=message_id, status="Delivered", payload="{}"),
                IdempotencyRecord(api_key_id=key_id, key="idem-1", request_hash="h",
                                  message_id=message_id),
            ]
        )  # fmt: skip
    return {"key": key, "message_id": message_id, "text_id": text_id, "keep_id": keep_id}


def _text_holding(needle: str) -> list[str]:
    """Every table.column whose text holds `needle`, across the pipeline's tables."""
    found = []
    with session_scope() as session:
        for table in Base.metadata.sorted_tables:
            if table.name == "verifications":
                continue  # the verification service's table: never written by us
            for column in table.columns:
                if isinstance(column.type, String | Text):
                    hits = session.scalar(
                        select(func.count()).select_from(table).where(column.contains(needle))
                    )
                    if hits:
                        found.append(f"{table.name}.{column.name}")
    return found


def test_erase_leaves_no_trace_of_the_number_outside_the_opt_out_hash(
    db: Any, no_dispatch: list[Any]
) -> None:
    account_id = make_account()
    seeded = _seed_person(account_id)
    assert set(_text_holding(DIGITS[-9:])) >= {"sms_log.phone_number", "opt_outs.phone_number"}

    result = cli("erase", "--phone", NUMBER, "--yes")
    assert result.returncode == 0, result.stderr
    for line in ("sms_log            2", "sms_replies        1", "sms_shortcodes     1",
                 "sms_queue          1", "opt_outs           1", "callback_events    1",
                 "api_idempotency    1"):  # fmt: skip
        assert line in result.stdout, result.stdout
    assert NUMBER not in result.stdout + result.stderr

    assert _text_holding(DIGITS[-9:]) == []
    with session_scope() as session:
        assert session.scalar(select(func.count()).select_from(OptOutHash)) == 1
        assert session.get(SmsLog, seeded["keep_id"]) is not None  # the other person stays
        audit = session.scalars(select(AuditEvent)).all()
    assert [a.action for a in audit] == ["erase"]
    assert audit[0].subject_hash == privacy.subject_hash(NUMBER)
    assert audit[0].actor.startswith("os:")

    # STOP still holds: a text to the erased number is not sent; a code still is.
    with pytest.raises(OptedOut):
        enqueue_sms(NUMBER, "A newsletter", account=account_id)
    enqueue_sms(NUMBER, "Code 777777", "verification", account=account_id)


def test_opt_in_after_erasure_lifts_the_hashed_opt_out(db: Any, no_dispatch: list[Any]) -> None:
    account_id = make_account()
    with session_scope() as session:
        session.add(OptOut(phone_number=NUMBER, source="reply"))
    with session_scope() as session:
        privacy.erase_subject(session, NUMBER, "test")
    with session_scope() as session:
        assert privacy.erased_opt_out(session, NUMBER)
        privacy.forget_erased_opt_out(session, NUMBER)
    enqueue_sms(NUMBER, "A newsletter", account=account_id)  # no OptedOut


def test_export_returns_every_row_about_the_number(db: Any, no_dispatch: list[Any]) -> None:
    account_id = make_account()
    _seed_person(account_id)
    result = cli("export", "--phone", DIGITS)  # any spelling of the number
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    tables = data["tables"]
    counts = {name: len(rows) for name, rows in tables.items()}
    assert counts == {
        "sms_log": 2,
        "sms_replies": 1,
        "sms_shortcodes": 1,
        "sms_queue": 1,
        "callback_events": 1,
        "api_idempotency": 1,
        "opt_outs": 1,
        "opt_out_hashes": 0,
        "verifications (owned by the verification service)": 0,
    }
    assert {m["body"] for m in tables["sms_log"]} == {"Code 123456", "Your prescription is ready"}
    with session_scope() as session:
        audit = session.scalars(select(AuditEvent)).all()
    assert [a.action for a in audit] == ["export"]
    assert DIGITS[-9:] not in (audit[0].detail or "") + (audit[0].subject_hash or "")


def test_show_body_is_audited_and_audit_list_never_shows_a_number(
    db: Any, no_dispatch: list[Any]
) -> None:
    message_id = enqueue_sms(NUMBER, "Your code: 424242", "verification")
    shown = cli("show", str(message_id), "--body")
    assert shown.returncode == 0, shown.stderr
    assert "Your code: 424242" in shown.stdout
    assert cli("show", str(message_id)).returncode == 0  # without the body: no audit row
    listed = cli("audit", "list")
    assert listed.returncode == 0, listed.stderr
    assert "read_body" in listed.stdout and str(message_id) in listed.stdout
    assert privacy.subject_hash(NUMBER)[:16] in listed.stdout
    assert DIGITS[-9:] not in listed.stdout
    with session_scope() as session:
        assert session.scalar(select(func.count()).select_from(AuditEvent)) == 1


@pytest.fixture
def api(db: Any, redis_url: str) -> Iterator[TestClient]:
    with TestClient(create_app()) as test_client:
        yield test_client


def test_subjects_api_needs_an_admin_key_and_exports_and_erases(
    api: TestClient, no_dispatch: list[Any]
) -> None:
    account_id = make_account()
    seeded = _seed_person(account_id)
    with session_scope() as session:
        admin = create_api_key(session, "dpo", platform_admin=True)
    plain = {"Authorization": f"Bearer {seeded['key'].key}"}
    admin_auth = {"Authorization": f"Bearer {admin.key}"}
    person = {"phone_number": NUMBER}
    assert api.post("/v1/subjects/export", json=person).status_code == 401
    assert api.post("/v1/subjects/export", json=person, headers=plain).status_code == 403
    assert api.post("/v1/subjects/erase", json=person, headers=plain).status_code == 403
    bad = api.post("/v1/subjects/export", json={"phone_number": "nope"}, headers=admin_auth)
    assert bad.status_code == 422

    exported = api.post("/v1/subjects/export", json=person, headers=admin_auth)
    assert exported.status_code == 200, exported.text
    assert len(exported.json()["tables"]["sms_log"]) == 2
    erased = api.post("/v1/subjects/erase", json=person, headers=admin_auth)
    assert erased.status_code == 200, erased.text
    assert erased.json()["removed"]["sms_log"] == 2
    with session_scope() as session:
        audit = session.scalars(select(AuditEvent).order_by(AuditEvent.id)).all()
    assert [(a.actor, a.action) for a in audit] == [("api:dpo", "export"), ("api:dpo", "erase")]
    assert _text_holding(DIGITS[-9:]) == []


def test_sql_route_codes_get_their_expiry_and_the_newer_one_supersedes(
    db: Any, no_dispatch: list[Any]
) -> None:
    from sms_pipeline.services.intake import sql_route

    account_id = make_account()
    with session_scope() as session:  # another application writes plain SQL
        for code in ("111111", "222222"):
            session.execute(
                text(
                    "INSERT INTO verification.sms_queue "
                    "(account_id, message_type, num_to, data1, inserted_at) "
                    "VALUES (:a, 'verification', :n, :d, now())"
                ),
                {"a": account_id, "n": DIGITS, "d": f"Code {code}"},
            )
    assert sql_route.ingest_account_queue(account_id) == 2
    with session_scope() as session:
        rows = session.scalars(select(SmsLog).order_by(SmsLog.queue_id)).all()
    assert [r.send_status for r in rows] == ["SUPERSEDED", "QUEUED"]
    assert all(r.expires_at == r.due_at + dt.timedelta(minutes=10) for r in rows)


def test_replicated_codes_expire_with_the_verification_and_the_newer_supersedes(
    db: Any, no_dispatch: list[Any]
) -> None:
    from sms_pipeline.db.models import Verification
    from sms_pipeline.services.intake import replication

    now = utcnow()
    first, second = uuid.uuid4(), uuid.uuid4()
    with session_scope() as session:
        session.add(
            Verification(
                id=first, phone_number=NUMBER, code=111111, check_digit=0, status="new",
                active=True, attempts_count=0, inserted_at=now,
                code_expired_at=now + dt.timedelta(minutes=20),
            )
        )  # fmt: skip
    assert replication.replicate_verifications().inserted == 1
    # The verification service issues a new code: the old one is canceled first.
    with session_scope() as session:
        session.execute(
            update(Verification)
            .where(Verification.id == first)
            .values(active=False, status="canceled")
        )
        session.flush()
        session.add(
            Verification(
                id=second, phone_number=NUMBER, code=222222, check_digit=0, status="new",
                active=True, attempts_count=0, inserted_at=now + dt.timedelta(milliseconds=1),
                code_expired_at=now + dt.timedelta(minutes=3),
            )
        )  # fmt: skip
    assert replication.replicate_verifications().inserted == 1
    with session_scope() as session:
        rows = session.scalars(select(SmsLog).order_by(SmsLog.inserted_at, SmsLog.body)).all()
    by_body = {r.body[-6:]: r for r in rows}
    assert by_body["111111"].send_status == SendStatus.SUPERSEDED.value
    assert by_body["222222"].send_status == SendStatus.QUEUED.value
    # Ten minutes of queue age, or sooner when the verification's own code ends sooner.
    assert by_body["111111"].expires_at == by_body["111111"].due_at + dt.timedelta(minutes=10)
    assert by_body["222222"].expires_at == now + dt.timedelta(minutes=3)

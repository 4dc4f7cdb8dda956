"""Stored counters: they add up across workers, survive restarts and follow the pipeline."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine

from sms_pipeline.db.engine import make_engine
from sms_pipeline.metrics import catalogue as c
from sms_pipeline.metrics.store import MetricsStore
from tests.support import wait_until

PER_WORKER = 500
FLUSH_EVERY = 50
LABELS = {"operation": "send", "outcome": "ok"}


def _worker(store: MetricsStore, start: threading.Barrier) -> None:
    start.wait()
    for i in range(1, PER_WORKER + 1):
        store.inc(c.GATEWAY_REQUESTS_TOTAL, LABELS)
        store.observe(c.GATEWAY_DURATION, {"operation": "send"}, 0.2, c.GATEWAY_LATENCY_BUCKETS)
        if i % FLUSH_EVERY == 0:
            store.flush()
    store.flush()


def _two_workers(engine: Engine) -> None:
    stores = [MetricsStore(engine), MetricsStore(engine)]
    start = threading.Barrier(2)
    threads = [threading.Thread(target=_worker, args=(s, start)) for s in stores]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert all(not t.is_alive() for t in threads)


def test_two_workers_flushing_the_same_series_add_up(db: Engine) -> None:
    _two_workers(db)
    reader = MetricsStore(db)
    assert reader.value(c.GATEWAY_REQUESTS_TOTAL, LABELS) == 2 * PER_WORKER
    assert reader.value(f"{c.GATEWAY_DURATION}_count", {"operation": "send"}) == 2 * PER_WORKER
    assert reader.value(f"{c.GATEWAY_DURATION}_sum", {"operation": "send"}) == pytest.approx(
        0.2 * 2 * PER_WORKER
    )
    below = reader.value(f"{c.GATEWAY_DURATION}_bucket", {"operation": "send", "le": "0.1"})
    above = reader.value(f"{c.GATEWAY_DURATION}_bucket", {"operation": "send", "le": "0.25"})
    assert (below, above) == (0, 2 * PER_WORKER)


def test_two_workers_add_up_on_sqlite_too(tmp_path: Path) -> None:
    from sms_pipeline.db import migrate

    engine = make_engine(f"sqlite:///{tmp_path}/metrics.db")
    migrate.upgrade(engine)
    try:
        _two_workers(engine)
        assert MetricsStore(engine).value(c.GATEWAY_REQUESTS_TOTAL, LABELS) == 2 * PER_WORKER
    finally:
        engine.dispose()


def test_totals_survive_a_restart_and_keep_adding(db: Engine) -> None:
    first = MetricsStore(db)
    first.start()
    for _ in range(3):
        first.inc(c.MESSAGES_TOTAL, {"type": "text", "account": "default", "status": "enqueued"})
    first.stop()  # a worker shutting down flushes what it buffered

    again = MetricsStore(db)  # a new process reads the same totals
    labels = {"type": "text", "account": "default", "status": "enqueued"}
    assert again.value(c.MESSAGES_TOTAL, labels) == 3
    again.inc(c.MESSAGES_TOTAL, labels, 2)
    again.flush()
    assert MetricsStore(db).value(c.MESSAGES_TOTAL, labels) == 5


def test_background_flusher_writes_without_an_explicit_flush(db: Engine) -> None:
    store = MetricsStore(db, flush_interval=0.05)
    store.start()
    try:
        store.inc("sms_test_total", {"k": "v"})
        wait_until(
            lambda: store.value("sms_test_total", {"k": "v"}) == 1,
            10,
            "the flusher to write the increment",
        )
    finally:
        store.stop()


def test_a_failed_flush_keeps_the_increments_for_the_next_one(db: Engine) -> None:
    unreachable = make_engine("postgresql+psycopg://postgres@127.0.0.1:5432/no_such_db_here")
    store = MetricsStore(unreachable)
    store.inc("sms_test_total", {"k": "v"}, 4)
    with pytest.raises(Exception, match="no_such_db_here"):
        store.flush()
    unreachable.dispose()
    assert store.pending() == {("sms_test_total", "k=v"): 4.0}
    store._engine = db  # the database is back
    store.flush()
    assert MetricsStore(db).value("sms_test_total", {"k": "v"}) == 4


# --- the hooks in the pipeline -----------------------------------------------------------------


def _stored(name: str, labels: dict[str, str]) -> float:
    from sms_pipeline.metrics.store import get_store

    store = get_store()
    store.flush()
    return store.value(name, labels)


def test_enqueue_counts_the_message_when_its_row_commits(db: Engine) -> None:
    from sms_pipeline import enqueue_sms
    from sms_pipeline.db import session_scope

    labels = {"type": "text", "account": "default", "status": "enqueued"}
    before = _stored(c.MESSAGES_TOTAL, labels)
    enqueue_sms("+380931234567", "hello", "text")
    assert _stored(c.MESSAGES_TOTAL, labels) == before + 1

    def enqueue_then_fail() -> None:
        with session_scope() as session:
            enqueue_sms("+380931234567", "hello", "text", session=session)
            raise RuntimeError("the caller's transaction rolls back")

    with pytest.raises(RuntimeError):
        enqueue_then_fail()
    assert _stored(c.MESSAGES_TOTAL, labels) == before + 1


def test_a_send_records_gateway_request_outcome_latency_and_attempts(
    db: Engine, simulator: Any
) -> None:
    from sms_pipeline import enqueue_sms
    from tests.helpers import attempt_send

    send_ok = {"operation": "send", "outcome": "ok"}
    submitted = {"type": "verification", "account": "default", "status": "submitted"}
    attempts_le_1 = {"type": "verification", "le": "1.0"}
    counted = [
        (c.GATEWAY_REQUESTS_TOTAL, send_ok),
        (c.MESSAGES_TOTAL, submitted),
        (f"{c.MESSAGE_ATTEMPTS}_bucket", attempts_le_1),
        (f"{c.ENQUEUE_TO_SUBMIT}_count", {"type": "verification"}),
        (f"{c.GATEWAY_DURATION}_count", {"operation": "send"}),
        (c.STATUS_TRANSITIONS_TOTAL, {"type": "verification", "status": "Accepted"}),
    ]
    before = [_stored(name, labels) for name, labels in counted]
    message_id = enqueue_sms("+380931234567", "Your code is 123456", "verification")
    assert attempt_send(message_id).outcome == "submitted"
    after = [_stored(name, labels) for name, labels in counted]
    assert [a - b for a, b in zip(after, before, strict=True)] == [1, 1, 1, 1, 1, 1]


def test_a_rejected_send_counts_the_gateway_outcome_and_the_message(
    db: Engine, simulator: Any
) -> None:
    from sms_pipeline import enqueue_sms
    from tests.helpers import attempt_send

    rejected_request = {"operation": "send", "outcome": "rejected"}
    rejected_message = {"type": "text", "account": "default", "status": "rejected"}
    before = (
        _stored(c.GATEWAY_REQUESTS_TOTAL, rejected_request),
        _stored(c.MESSAGES_TOTAL, rejected_message),
    )
    message_id = enqueue_sms("+380931234504", "hello", "text")  # ...04: the simulator rejects
    assert attempt_send(message_id).outcome == "rejected"
    assert _stored(c.GATEWAY_REQUESTS_TOTAL, rejected_request) == before[0] + 1
    assert _stored(c.MESSAGES_TOTAL, rejected_message) == before[1] + 1


def _moving_message(engine: Engine, submitted_ago: float, checked_ago: float | None = None) -> Any:
    import datetime as dt
    import uuid

    from sqlalchemy.orm import Session

    from sms_pipeline.db.models import Account, SmsLog, utcnow

    now = utcnow()
    message_id = uuid.uuid4()
    with Session(engine) as session, session.begin():
        account = Account(name=f"acct-{message_id.hex[:6]}", username="u")
        session.add(account)
        session.flush()
        session.add(
            SmsLog(
                id=message_id,
                phone_number="+380931234567",
                type="2FA",
                body="code",
                account_id=account.id,
                send_status="SUBMITTED",
                gateway_id=f"gw-{message_id.hex[:8]}",
                gateway_status="Enroute",
                submitted_at=now - dt.timedelta(seconds=submitted_ago),
                next_check_at=now,
                uniq_key=message_id.hex,
                last_checked_at=None
                if checked_ago is None
                else now - dt.timedelta(seconds=checked_ago),
            )
        )
    return message_id


def test_status_checks_and_terminated_record_transitions(db: Engine) -> None:
    from sms_pipeline.db import session_scope
    from sms_pipeline.db.models import utcnow
    from sms_pipeline.gateway import GatewayStatus, StatusResult
    from sms_pipeline.services import status
    from sms_pipeline.settings import get_settings

    delivered = {"type": "2FA", "status": "Delivered"}
    terminated = {"type": "2FA", "status": "Terminated"}
    before = (
        _stored(c.STATUS_TRANSITIONS_TOTAL, delivered),
        _stored(c.STATUS_TRANSITIONS_TOTAL, terminated),
        _stored(f"{c.SUBMIT_TO_DELIVERED}_count", {"type": "2FA"}),
    )

    class DeliveredNow:
        def status(self, gateway_id: str) -> StatusResult:
            now = utcnow()
            return StatusResult(gateway_id, GatewayStatus.DELIVERED, now, None, None, None, b"")

    fresh = _moving_message(db, submitted_ago=10)
    assert status.check_status(fresh, client=DeliveredNow()).outcome == "changed"
    # Long overdue and asked after its deadline: Terminated by the sweep.
    _moving_message(db, submitted_ago=7200, checked_ago=60)
    with session_scope() as session:
        assert status.terminate_overdue(session, utcnow(), get_settings()) == 1

    assert _stored(c.STATUS_TRANSITIONS_TOTAL, delivered) == before[0] + 1
    assert _stored(c.STATUS_TRANSITIONS_TOTAL, terminated) == before[1] + 1
    assert _stored(f"{c.SUBMIT_TO_DELIVERED}_count", {"type": "2FA"}) == before[2] + 1

"""The gauges behind the alerting rules (config/alerts.yml), scraped over HTTP from rows
written with plain ORM inserts, on PostgreSQL and on the embedded SQLite database."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import Engine
from sqlalchemy.orm import Session

from sms_pipeline.db.engine import make_engine
from sms_pipeline.db.migrate import upgrade
from sms_pipeline.db.models import Account, SmsLog, SmsQueue, Verification
from sms_pipeline.metrics import catalogue as c
from sms_pipeline.metrics import heartbeat
from sms_pipeline.metrics.collector import SmsCollector, build_registry, serve
from sms_pipeline.metrics.hooks import StatusChange, statuses_changed
from sms_pipeline.metrics.store import MetricsStore
from sms_pipeline.settings import load_settings
from tests import factories
from tests.support import wait_until

NOW = dt.datetime.now(dt.UTC).replace(microsecond=0)


def _message(account_id: int, **values: Any) -> SmsLog:
    fields = {"type": "verification", "body": "code", "send_status": "SUBMITTED", **values}
    return factories.message(account_id, NOW, **fields)


def _fill(engine: Engine) -> None:
    with Session(engine) as session, session.begin():
        throttled = Account(
            name="throttled",
            username="u",
            paused_until=NOW + dt.timedelta(minutes=1),
            pause_reason="gateway throttled (429)",
        )
        broke = Account(
            name="broke",
            username="u",
            paused_until=NOW + dt.timedelta(minutes=5),
            pause_reason="Prepaid messages limit exceed",
        )
        empty = Account(name="empty", username="u", postpaid=False, credits=0)
        fine = Account(
            name="fine", username="u", postpaid=True, paused_until=NOW - dt.timedelta(hours=1)
        )
        session.add_all([throttled, broke, empty, fine])
        session.flush()
        session.add_all(
            [
                # a status check due 2 minutes ago, one due in the future, one final
                _message(
                    fine.id, gateway_status="Accepted", next_check_at=NOW - dt.timedelta(minutes=2)
                ),
                _message(
                    fine.id, gateway_status="Enroute", next_check_at=NOW + dt.timedelta(minutes=5)
                ),
                _message(
                    fine.id, gateway_status="Delivered", next_check_at=NOW - dt.timedelta(hours=1)
                ),
                # SQL route: a row waiting 3 minutes for the account "fine"
                SmsQueue(
                    account_id=fine.id,
                    num_to="+380931234567",
                    data1="hi",
                    inserted_at=NOW - dt.timedelta(minutes=3),
                ),
            ]
        )
        # replication: one verification 4 minutes old without its sms_log row, one replicated,
        # one 5 hours old without its row (waiting too: replicated by fact, whatever its age)
        missing = Verification(
            phone_number="+380931234567",
            code=1234,
            code_expired_at=NOW + dt.timedelta(minutes=5),
            inserted_at=NOW - dt.timedelta(minutes=4),
        )
        done = Verification(
            phone_number="+380931234568",
            code=1234,
            code_expired_at=NOW + dt.timedelta(minutes=5),
            inserted_at=NOW - dt.timedelta(minutes=8),
        )
        ancient = Verification(
            phone_number="+380931234569",
            active=False,
            code=1234,
            code_expired_at=NOW,
            inserted_at=NOW - dt.timedelta(hours=5),
        )
        session.add_all([missing, done, ancient])
        session.flush()
        session.add(_message(fine.id, verification_id=done.id, gateway_status="Delivered"))
    heartbeat.beat("worker", engine, now=1000.0)
    heartbeat.beat("worker", engine, now=2000.0)
    heartbeat.beat("worker", engine, now=1500.0)  # a slower process's older beat
    heartbeat.beat("beat", engine, now=1700.0)


def _scrape(engine: Engine) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    settings = load_settings(sms_otp_valid_seconds=300)
    collector = SmsCollector(engine, clock=lambda: NOW, settings=settings)
    server, thread = serve("127.0.0.1", 0, build_registry(collector))
    try:
        answer = requests.get(f"http://127.0.0.1:{server.server_address[1]}/metrics", timeout=10)
        answer.raise_for_status()
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for f in text_string_to_metric_families(answer.text)
        for s in f.samples
    }


@pytest.fixture(params=["postgresql", "sqlite"])
def engine(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Engine]:
    if request.param == "postgresql":
        yield request.getfixturevalue("db")
        return
    sqlite = make_engine(f"sqlite:///{tmp_path / 'embedded.db'}")
    upgrade(sqlite)
    try:
        yield sqlite
    finally:
        sqlite.dispose()


def test_alert_gauges_come_from_the_database(engine: Engine) -> None:
    _fill(engine)
    samples = _scrape(engine)
    paused = {k[1]: v for k, v in samples.items() if k[0] == c.ACCOUNT_PAUSED}
    assert paused == {
        (("account", "throttled"), ("reason", "429")): 1.0,
        (("account", "broke"), ("reason", "credits")): 1.0,
    }
    assert samples[(c.STATUS_CHECK_LAG, ())] == 120
    assert samples[(c.REPLICATION_LAG, ())] == 5 * 3600
    assert samples[(c.REPLICATION_WAITING, ())] == 2
    assert samples[(c.SQL_QUEUE_OLDEST_AGE, (("account", "fine"),))] == 180
    assert samples[(c.SQL_QUEUE_DEPTH, (("account", "fine"),))] == 1
    assert samples[(c.OTP_VALID_SECONDS, ())] == 300
    assert samples[(c.HEARTBEAT, (("role", "worker"),))] == 2000
    assert samples[(c.HEARTBEAT, (("role", "beat"),))] == 1700


def test_nothing_late_is_zero_not_missing(db: Engine) -> None:
    samples = _scrape(db)
    for name in (c.STATUS_CHECK_LAG, c.REPLICATION_LAG):
        assert samples[(name, ())] == 0
    assert not any(k[0] in (c.ACCOUNT_PAUSED, c.SQL_QUEUE_OLDEST_AGE) for k in samples)


def test_enqueue_to_delivered_is_observed_when_delivered(
    db: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    from sms_pipeline.metrics import hooks

    store = MetricsStore(db)
    monkeypatch.setattr(hooks, "get_store", lambda: store)
    enqueued = NOW - dt.timedelta(seconds=700)
    submitted = NOW - dt.timedelta(seconds=30)
    statuses_changed(
        [
            StatusChange("verification", "Delivered", submitted, NOW, enqueued),
            StatusChange("verification", "Enroute", submitted, NOW, enqueued),
        ]
    )
    store.flush()
    samples = _scrape(db)
    bucket = f"{c.ENQUEUE_TO_DELIVERED}_bucket"
    assert samples.get((bucket, (("le", "600.0"), ("type", "verification"))), 0) == 0
    assert samples[(bucket, (("le", "900.0"), ("type", "verification")))] == 1
    assert samples[(f"{c.ENQUEUE_TO_DELIVERED}_count", (("type", "verification"),))] == 1


def test_a_heartbeat_thread_beats_until_stopped(db: Engine) -> None:
    beating = heartbeat.Heartbeat("beat", interval=0.05, engine=lambda: db).start()
    try:
        wait_until(lambda: _scrape(db).get((c.HEARTBEAT, (("role", "beat"),))), 10, "a beat")
        first = _scrape(db).get((c.HEARTBEAT, (("role", "beat"),)))
        assert first is not None and first > 0
    finally:
        beating.stop()
    assert not beating._thread.is_alive()


def test_worker_and_beat_start_a_heartbeat_from_their_celery_signals(
    db: Engine, settings_env: Any
) -> None:
    from celery import signals
    from sqlalchemy import select

    import sms_pipeline.broker.app  # noqa: F401  (connects the signal handlers)
    from sms_pipeline.db.models import MetricCounter

    # A worker outside embedded mode refuses to start on the simulator's defaults.
    settings_env(
        IP2SMS_SEND_URL="http://127.0.0.1:9/ip2sms/",
        IP2SMS_STATUS_URL="http://127.0.0.1:9/ip2sms-request/",
        IP2SMS_LOGIN="test",
        IP2SMS_PASSWORD="test",
    )
    try:
        # What `sms-pipeline worker` and `sms-pipeline beat` fire once they start.
        signals.celeryd_init.send(sender="celery@test", instance=None, conf=None, options={})
        signals.beat_init.send(sender=None)

        def roles() -> set[str]:
            with Session(db) as session:
                query = select(MetricCounter.labels).where(MetricCounter.name == c.HEARTBEAT)
                return set(session.scalars(query))

        wait_until(lambda: roles() == {"role=worker", "role=beat"}, 10, "both heartbeats")
    finally:
        signals.worker_shutdown.send(sender=None)
    assert heartbeat._running == {}


def test_an_unreadable_verifications_table_leaves_out_its_gauge_only(tmp_path: Path) -> None:
    from sqlalchemy import text

    sqlite = make_engine(f"sqlite:///{tmp_path / 'embedded.db'}")
    try:
        upgrade(sqlite)
        _fill(sqlite)
        with sqlite.begin() as conn:
            conn.execute(text("DROP TABLE verifications"))
        samples = _scrape(sqlite)
    finally:
        sqlite.dispose()
    assert samples[(c.DATABASE_UP, ())] == 1
    assert (c.REPLICATION_LAG, ()) not in samples
    assert samples[(c.STATUS_CHECK_LAG, ())] == 120
    assert samples[(c.SQL_QUEUE_OLDEST_AGE, (("account", "fine"),))] == 180

"""`/metrics`: the catalogue's names, values from the database, bounded labels."""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterator
from typing import Any

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import Engine
from sqlalchemy.orm import Session

from sms_pipeline.db.engine import make_engine
from sms_pipeline.db.models import Account, SmsLog
from sms_pipeline.metrics import catalogue as c
from sms_pipeline.metrics.collector import SmsCollector, build_registry, serve
from sms_pipeline.metrics.store import MetricsStore
from tests import factories
from tests.helpers import sample_names

PHONE = re.compile(r"\+?\d{7,}")
UUID_LIKE = re.compile(r"[0-9a-f]{8}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{12}", re.I)
NOW = dt.datetime(2024, 5, 1, 12, 0, tzinfo=dt.UTC)


def _row(account_id: int, **values: Any) -> SmsLog:
    return factories.message(account_id, NOW, **values)


def _fill(engine: Engine) -> None:
    with Session(engine) as session, session.begin():
        account = Account(name="clinic-lviv", username="u")
        session.add(account)
        session.flush()
        a = account.id
        session.add_all(
            [
                # waiting: 2 urgent at priority 5 (enqueued 10 and 5 min ago; a retry moved
                # the older one's next attempt to a minute from now), 1 bulk asked to go
                # in an hour (send_at)
                _row(a, type="verification", priority=5, due_at=NOW + dt.timedelta(minutes=1)),
                _row(
                    a,
                    type="2FA",
                    priority=5,
                    inserted_at=NOW - dt.timedelta(minutes=5),
                    due_at=NOW - dt.timedelta(minutes=5),
                ),
                _row(
                    a,
                    type="text",
                    priority=0,
                    send_after=NOW + dt.timedelta(hours=1),
                    due_at=NOW + dt.timedelta(hours=1),
                ),
                # with the gateway, still moving
                _row(a, send_status="SUBMITTED", gateway_status="Accepted"),
                _row(a, send_status="SUBMITTED", gateway_status="Enroute"),
                # finished
                _row(a, type="verification", send_status="SUBMITTED", gateway_status="Delivered"),
                _row(a, type="verification", send_status="SUBMITTED", gateway_status="Delivered"),
                _row(a, type="verification", send_status="SUBMITTED", gateway_status="Terminated"),
                _row(a, type="verification", send_status="RETRYCOUNT EXCEEDED"),
                _row(a, type="text", send_status="OPTED OUT"),  # not in the rates
                # enqueued before the window: not in the window gauges
                _row(
                    a,
                    send_status="SUBMITTED",
                    gateway_status="Undeliverable",
                    inserted_at=NOW - dt.timedelta(hours=3),
                ),
            ]
        )
    store = MetricsStore(engine)
    store.inc(c.GATEWAY_REQUESTS_TOTAL, {"operation": "send", "outcome": "ok"}, 7)
    store.inc(c.GATEWAY_REQUESTS_TOTAL, {"operation": "status", "outcome": "timeout"}, 2)
    store.observe(c.GATEWAY_DURATION, {"operation": "send"}, 0.07, c.GATEWAY_LATENCY_BUCKETS)
    store.observe(c.GATEWAY_DURATION, {"operation": "send"}, 3.0, c.GATEWAY_LATENCY_BUCKETS)
    store.inc(c.MESSAGES_TOTAL, {"type": "text", "account": "clinic-lviv", "status": "enqueued"}, 3)
    store.flush()


@pytest.fixture
def scraped(db: Engine) -> Iterator[dict[str, Any]]:
    _fill(db)
    registry = build_registry(SmsCollector(db, window=dt.timedelta(hours=1), clock=lambda: NOW))
    server, thread = serve("127.0.0.1", 0, registry)
    try:
        port = server.server_address[1]
        answer = requests.get(f"http://127.0.0.1:{port}/metrics", timeout=10)
        answer.raise_for_status()
        yield {"text": answer.text, "families": list(text_string_to_metric_families(answer.text))}
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def _samples(families: list[Any]) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value for f in families for s in f.samples}


def test_metrics_parse_and_carry_every_catalogue_name(scraped: dict[str, Any]) -> None:
    text = scraped["text"]
    for spec in c.CATALOGUE:
        assert f"# TYPE {spec.name} {spec.kind.value}" in text, spec.name
    names = {s.name for f in scraped["families"] for s in f.samples}
    for spec in c.CATALOGUE:
        if spec.name in (
            c.SUBMIT_TO_DELIVERED,
            c.ENQUEUE_TO_SUBMIT,
            c.MESSAGE_ATTEMPTS,
            c.INBOUND_SKIPPED_TOTAL,
            c.INTAKE_ERRORS_TOTAL,
            c.SQL_QUEUE_DEPTH,  # no sms_queue row in this fixture
            c.PRIVACY_ACTIONS_TOTAL,
            c.LIMIT_REFUSALS_TOTAL,
            c.STATUS_BACKWARDS_TOTAL,
            # the alerts' gauges and histogram: tests/integration/test_metrics_health.py
            c.ENQUEUE_TO_DELIVERED,
            c.ACCOUNT_PAUSED,
            c.SQL_QUEUE_OLDEST_AGE,
            c.HEARTBEAT,
            c.POLLER_FAILURES_TOTAL,
            # the gateways' own: tests/faults/test_gateway_failover.py
            c.GATEWAY_ROUTE_REQUESTS_TOTAL,
            c.GATEWAY_ROUTE_DURATION,
            c.GATEWAY_SWITCHES_TOTAL,
            # tests/integration/test_gateway_latency.py and test_otp_fallback.py
            c.GATEWAY_SLOW_DEMOTIONS_TOTAL,
            c.OTP_FALLBACKS_TOTAL,
        ):
            continue  # nothing observed in this fixture
        if spec.name == c.STATUS_TRANSITIONS_TOTAL:
            continue
        assert set(sample_names(spec)) <= names, spec.name


def test_gauges_come_from_the_log(scraped: dict[str, Any]) -> None:
    samples = _samples(scraped["families"])
    assert samples[("sms_queue_depth", (("priority", "5"), ("queue", "urgent")))] == 2
    assert samples[("sms_queue_depth", (("priority", "0"), ("queue", "bulk")))] == 1
    # since enqueue, not since a due_at that a retry (or a pause, a window) moved
    assert samples[("sms_queue_oldest_age_seconds", (("priority", "5"), ("queue", "urgent")))] == (
        600
    )
    # the bulk message asked to go in an hour: nothing has waited
    assert samples[("sms_queue_oldest_age_seconds", (("priority", "0"), ("queue", "bulk")))] == 0
    assert samples[("sms_messages_moving", ())] == 2
    # verification in the window: 2 Delivered, 1 Terminated, 1 RETRYCOUNT EXCEEDED (+2 waiting)
    assert samples[("sms_delivery_ratio", (("type", "verification"),))] == 0.5
    assert samples[("sms_terminated_ratio", ())] == 0.25
    assert samples[("sms_retrycount_exceeded_ratio", ())] == 0.25
    assert samples[("sms_messages_window", (("status", "OPTED OUT"), ("type", "text")))] == 1
    assert ("sms_messages_window", (("status", "Undeliverable"), ("type", "text"))) not in samples
    assert samples[("sms_metrics_database_up", ())] == 1


def test_stored_counters_and_histograms_are_exposed(scraped: dict[str, Any]) -> None:
    samples = _samples(scraped["families"])
    key = ("sms_gateway_requests_total", (("operation", "send"), ("outcome", "ok")))
    assert samples[key] == 7
    bucket = "sms_gateway_request_duration_seconds_bucket"
    assert samples[(bucket, (("le", "0.1"), ("operation", "send")))] == 1
    assert samples[(bucket, (("le", "5.0"), ("operation", "send")))] == 2
    assert samples[(bucket, (("le", "+Inf"), ("operation", "send")))] == 2
    count = ("sms_gateway_request_duration_seconds_count", (("operation", "send"),))
    assert samples[count] == 2
    enqueued = (
        "sms_messages_total",
        (("account", "clinic-lviv"), ("status", "enqueued"), ("type", "text")),
    )
    assert samples[enqueued] == 3


def test_no_label_value_looks_like_a_phone_number_or_an_id(scraped: dict[str, Any]) -> None:
    values = {v for f in scraped["families"] for s in f.samples for v in s.labels.values()}
    assert values, "the fixture produced labelled samples"
    for value in values:
        assert not PHONE.search(value), value
        assert not UUID_LIKE.search(value), value


def test_an_unreachable_database_gives_up_0_not_a_failed_scrape() -> None:
    engine = make_engine("postgresql+psycopg://postgres@127.0.0.1:5432/no_such_db_here")
    try:
        registry = build_registry(SmsCollector(engine))
        from prometheus_client import generate_latest

        text = generate_latest(registry).decode()
    finally:
        engine.dispose()
    samples = _samples(list(text_string_to_metric_families(text)))
    assert samples[("sms_metrics_database_up", ())] == 0
    assert "# TYPE sms_queue_depth gauge" in text

"""Abuse limits: per-key rate and daily cap on the API (429 + Retry-After), per-account
daily cap on every route (API, SQL route, Python), metrics for both; defaults let bursts by."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select, text

from sms_pipeline import enqueue_sms
from sms_pipeline.api.app import create_app
from sms_pipeline.db import session_scope
from sms_pipeline.db.models import SendStatus, SmsLog, utcnow
from sms_pipeline.metrics import catalogue as c
from sms_pipeline.metrics.store import get_store
from sms_pipeline.services.accounts import quotas
from sms_pipeline.services.accounts.api_keys import NewApiKey, create_api_key
from sms_pipeline.services.intake import sql_route
from tests.factories import make_account
from tests.helpers import attempt_send

NUMBER = "+380931234567"


@pytest.fixture
def fresh_counters(db: Any, redis_url: str, settings_env: Any) -> Iterator[None]:
    """Limit counters of earlier tests (same Redis db, recycled account ids) forgotten."""
    settings = settings_env()
    for limiter in quotas._limiters_for(settings):
        limiter.storage.reset()
    yield
    for limiter in quotas._limiters_for(settings):
        limiter.storage.reset()


def new_key(name: str) -> NewApiKey:
    with session_scope() as session:
        return create_api_key(session, name)


def post(client: TestClient, key: NewApiKey) -> Any:
    return client.post(
        "/v1/messages",
        json={"phone_number": NUMBER, "body": "hello"},
        headers={"Authorization": f"Bearer {key.key}"},
    )


def refusals(limit: str, subject: str) -> float:
    store = get_store()
    store.flush()
    return store.value(c.LIMIT_REFUSALS_TOTAL, {"limit": limit, "subject": subject})


def test_a_key_over_its_rate_gets_429_with_retry_after_and_other_keys_do_not(
    fresh_counters: None, no_dispatch: list[Any], settings_env: Any
) -> None:
    settings_env(SMS_API_KEY_RATE_PER_MINUTE="3")
    leaked, other = new_key("leaked"), new_key("other")
    with TestClient(create_app()) as client:
        codes = [post(client, leaked).status_code for _ in range(3)]
        refused = post(client, leaked)
        assert post(client, other).status_code == 201
    assert codes == [201, 201, 201]
    assert refused.status_code == 429
    assert refused.json()["error"] == "rate_limited"
    assert 1 <= int(refused.headers["Retry-After"]) <= 60
    with session_scope() as session:
        assert len(session.scalars(select(SmsLog.id)).all()) == 4  # the refused one not stored
    assert refusals(quotas.KEY_RATE, "leaked") == 1


def test_a_key_over_its_daily_cap_gets_429_until_the_window_passes(
    fresh_counters: None, no_dispatch: list[Any], settings_env: Any
) -> None:
    settings_env(SMS_API_KEY_DAILY_CAP="2")
    key = new_key("capped")
    with TestClient(create_app()) as client:
        codes = [post(client, key).status_code for _ in range(3)]
        refused = post(client, key)
    assert codes == [201, 201, 429]
    assert refused.status_code == 429
    assert 3600 < int(refused.headers["Retry-After"]) <= 86400
    assert refusals(quotas.KEY_DAILY, "capped") == 2


def test_the_defaults_let_a_legitimate_burst_through(
    fresh_counters: None, no_dispatch: list[Any]
) -> None:
    key = new_key("burst")
    with TestClient(create_app()) as client:
        codes = {post(client, key).status_code for _ in range(100)}
    assert codes == {201}


def test_an_account_over_its_daily_cap_waits_whatever_the_route(
    fresh_counters: None, simulator: Any, no_dispatch: list[Any], settings_env: Any
) -> None:
    settings_env(SMS_ACCOUNT_DAILY_CAP="2")
    name = f"capped-{uuid.uuid4().hex[:6]}"
    account_id = make_account(name)
    # Python producer: two messages; SQL route: a third row inserted with plain SQL.
    first = [enqueue_sms(NUMBER, f"python {i}", account=name) for i in range(2)]
    with session_scope() as session:
        session.execute(
            text(
                "INSERT INTO verification.sms_queue (account_id, num_to, data1, inserted_at) "
                "VALUES (:a, :n, 'from sql', now())"
            ),
            {"a": account_id, "n": NUMBER},
        )
        session.execute(
            text("UPDATE verification.accounts SET process_queue_interval = 1 WHERE id = :a"),
            {"a": account_id},
        )
    assert sql_route.poll_queues() == 1
    with session_scope() as session:
        (third,) = session.scalars(
            select(SmsLog.id).where(SmsLog.id.not_in(first), SmsLog.account_id == account_id)
        ).all()
    outcomes = [attempt_send(m).outcome for m in [*first, third]]
    assert outcomes == ["submitted", "submitted", "deferred"]
    with session_scope() as session:
        held = session.get(SmsLog, third)
        assert held is not None
        assert held.send_status == SendStatus.QUEUED.value
        assert held.last_error == "daily cap reached"
        assert held.due_at > utcnow()  # waits for the window, not lost
    assert refusals(quotas.ACCOUNT_DAILY, name) == 1


def test_without_a_cap_the_account_is_never_held_back(
    fresh_counters: None, simulator: Any, no_dispatch: list[Any]
) -> None:
    name = f"open-{uuid.uuid4().hex[:6]}"
    make_account(name)
    ids = [enqueue_sms(NUMBER, f"m {i}", account=name) for i in range(5)]
    assert [attempt_send(m).outcome for m in ids] == ["submitted"] * 5

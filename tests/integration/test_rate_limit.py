"""The per-account rate limit holds across workers because it lives in Redis."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from limits import storage, strategies

from sms_pipeline.db.models import Account
from sms_pipeline.services.accounts import rules as accounts


def test_rate_limit_is_shared_by_every_worker(
    redis_url: str, settings_env: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = settings_env(SMS_REDIS_URL=redis_url)
    account = Account(id=900_000 + uuid.uuid4().int % 1000, rate_limit_per_second=3)
    first = [accounts.take_rate_token(account, settings) for _ in range(2)]
    # A second worker process has its own limiter object but the same Redis.
    other_worker = strategies.MovingWindowRateLimiter(storage.storage_from_string(redis_url))
    # Put back after the test: later tests must not inherit this process's stand-in.
    monkeypatch.setitem(accounts._limiters, redis_url, other_worker)
    second = [accounts.take_rate_token(account, settings) for _ in range(2)]
    assert first == [True, True]
    assert second == [True, False]


def test_account_without_limit_is_never_held_back(settings_env: Any) -> None:
    settings = settings_env()
    account = Account(id=1, rate_limit_per_second=None)
    assert all(accounts.take_rate_token(account, settings) for _ in range(100))

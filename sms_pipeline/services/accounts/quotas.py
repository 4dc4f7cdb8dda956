"""Abuse limits: a leaked API key or a runaway producer cannot send without bound.

- Per API key (the HTTP API): a rate (SMS_API_KEY_RATE_PER_MINUTE, generous by default)
  and a daily cap (SMS_API_KEY_DAILY_CAP, off by default). A refused request is answered
  429 with Retry-After.
- Per account, whatever the route (API, SQL route, Python producers): a daily cap
  (SMS_ACCOUNT_DAILY_CAP, off by default), checked where a send is claimed and counted
  where a submission is recorded. A capped account's messages wait (deferred, not lost)
  until its window has room again.

Counters live in the `limits` library's storage: Redis when configured (every worker and
API process share them), memory otherwise (embedded mode: one process each). A "day" is a
fixed 24-hour window from the first message counted in it. Two sends claimed at once may
both pass the check, so a cap can be overshot by the worker's concurrency at most.
"""

from __future__ import annotations

import datetime as dt
import math
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass

from limits import RateLimitItem, RateLimitItemPerDay, RateLimitItemPerMinute, strategies

from sms_pipeline.broker import redis_store
from sms_pipeline.db.models import Account
from sms_pipeline.metrics import hooks as metrics
from sms_pipeline.settings import Settings, get_settings

NAMESPACE = "sms-pipeline-quota"
KEY_RATE, KEY_DAILY, ACCOUNT_DAILY = "api_key_rate", "api_key_daily", "account_daily"

_lock = threading.Lock()
_limiters: dict[str, tuple[strategies.RateLimiter, strategies.RateLimiter]] = {}


def _limiters_for(settings: Settings) -> tuple[strategies.RateLimiter, strategies.RateLimiter]:
    """(moving window for rates, fixed window for daily counts) on the configured storage."""
    key = redis_store.limits_key(settings)
    with _lock:
        pair = _limiters.get(key)
        if pair is None:
            store = redis_store.limits_storage(settings)
            pair = (
                strategies.MovingWindowRateLimiter(store),
                strategies.FixedWindowRateLimiter(store),
            )
            _limiters[key] = pair
        return pair


@dataclass(frozen=True)
class Refusal:
    limit: str  # api_key_rate | api_key_daily | account_daily
    retry_after: int  # whole seconds until there is room again


def _retry_after(limiter: strategies.RateLimiter, item: RateLimitItem, *ids: str) -> int:
    stats = limiter.get_window_stats(item, *ids)
    return max(1, math.ceil(stats.reset_time - time.time()))


def check_api_key(key: str, key_name: str, settings: Settings | None = None) -> Refusal | None:
    """Count one message for API key `key` (its prefix); a Refusal when a limit is used up."""
    settings = settings or get_settings()
    moving, fixed = _limiters_for(settings)
    ids = (NAMESPACE, "key", key)
    checks: list[tuple[str, strategies.RateLimiter, RateLimitItem]] = []
    if settings.sms_api_key_rate_per_minute:
        checks.append(
            (KEY_RATE, moving, RateLimitItemPerMinute(settings.sms_api_key_rate_per_minute))
        )
    if settings.sms_api_key_daily_cap:
        checks.append((KEY_DAILY, fixed, RateLimitItemPerDay(settings.sms_api_key_daily_cap)))
    for limit, limiter, item in checks:
        # test first: a request refused by one limit does not use up another.
        if not limiter.test(item, *ids):
            metrics.limit_refused(limit, key_name)
            return Refusal(limit, _retry_after(limiter, item, *ids))
    for _limit, limiter, item in checks:
        limiter.hit(item, *ids)
    return None


def _account_item(settings: Settings) -> RateLimitItemPerDay | None:
    cap = settings.sms_account_daily_cap
    return RateLimitItemPerDay(cap) if cap else None


def account_cap_reached(
    account: Account, now: dt.datetime, settings: Settings | None = None
) -> dt.datetime | None:
    """None while the account may send today; else when its daily window has room again."""
    settings = settings or get_settings()
    item = _account_item(settings)
    if item is None:
        return None
    _moving, fixed = _limiters_for(settings)
    ids = (NAMESPACE, "account", str(account.id))
    if fixed.test(item, *ids):
        return None
    metrics.limit_refused(ACCOUNT_DAILY, account.name)
    return now + dt.timedelta(seconds=_retry_after(fixed, item, *ids))


def count_account_sends(submitted: Mapping[int, int], settings: Settings | None = None) -> None:
    """Messages were submitted (account id → how many): count them against daily caps,
    one counter update per account."""
    settings = settings or get_settings()
    item = _account_item(settings)
    if item is None:
        return
    fixed = _limiters_for(settings)[1]
    for account_id, count in submitted.items():
        fixed.hit(item, NAMESPACE, "account", str(account_id), cost=count)


def account_caps_on(settings: Settings | None = None) -> bool:
    return bool((settings or get_settings()).sms_account_daily_cap)

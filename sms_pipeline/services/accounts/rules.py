"""Accounts: the default account, send windows, credits, pauses and the rate limit."""

from __future__ import annotations

import datetime as dt
import logging
import threading
import zoneinfo
from dataclasses import dataclass
from typing import Any

from limits import RateLimitItemPerSecond, strategies
from sqlalchemy import case, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from sms_pipeline.broker import redis_store
from sms_pipeline.db.models import POSTPAID_CREDITS, Account
from sms_pipeline.settings import Settings, get_settings

log = logging.getLogger(__name__)


def get_or_create_default_account(session: Session, settings: Settings | None = None) -> Account:
    """The account used when a caller names none: post-paid, sending around the clock."""
    settings = settings or get_settings()
    name = settings.sms_default_account
    account = session.scalar(select(Account).where(Account.name == name))
    if account is not None:
        return account
    # Two first-time callers may race; the loser reads the winner's row.
    try:
        with session.begin_nested():
            account = Account(
                name=name,
                username=settings.ip2sms_login,
                password_ref="IP2SMS_PASSWORD",  # noqa: S106  (the name of the variable)
                postpaid=True,
                credits=POSTPAID_CREDITS,
                send_start_hour=0,
                send_end_hour=23,
            )
            session.add(account)
    except IntegrityError:
        account = session.scalars(select(Account).where(Account.name == name)).one()
    return account


def find_account(session: Session, account: str | int | None) -> Account | None:
    if account is None:
        return get_or_create_default_account(session)
    if isinstance(account, int):
        return session.get(Account, account)
    return session.scalar(select(Account).where(Account.name == account))


# --- send windows -----------------------------------------------------------------------


def _zone(account: Account) -> zoneinfo.ZoneInfo:
    try:
        return zoneinfo.ZoneInfo(account.timezone)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        log.warning("account %s has unknown timezone %r; using UTC", account.id, account.timezone)
        return zoneinfo.ZoneInfo("UTC")


def _hour_in_window(hour: int, start: int, end: int) -> bool:
    # `5..17` means 05:00-17:59; a start after the end crosses midnight (22..5).
    if start <= end:
        return start <= hour <= end
    return hour >= start or hour <= end


def in_send_window(account: Account, now: dt.datetime) -> bool:
    local = now.astimezone(_zone(account))
    return _hour_in_window(local.hour, account.send_start_hour, account.send_end_hour)


def next_window_open(account: Account, now: dt.datetime) -> dt.datetime:
    """The first moment at or after `now` inside the account's send window (UTC)."""
    if in_send_window(account, now):
        return now
    zone = _zone(account)
    local = now.astimezone(zone).replace(minute=0, second=0, microsecond=0)
    for _ in range(48):  # a window opens within a day, even across a DST change
        local = (local + dt.timedelta(hours=1)).astimezone(zone)
        if _hour_in_window(local.hour, account.send_start_hour, account.send_end_hour):
            return local.astimezone(dt.UTC)
    return now  # unreachable with hours in 0..23; send rather than wait forever


# --- whether an account may send now ----------------------------------------------------


@dataclass(frozen=True)
class SendPermission:
    allowed: bool
    wait_until: dt.datetime | None = None
    reason: str | None = None


def account_permission(account: Account, now: dt.datetime) -> SendPermission:
    """Whether the account may send now: active, not paused, inside its send window.

    The send claim asks this once per account per batch and claims only the messages of
    allowed accounts; per-message rules (credits, rate limit, opt-out) follow the claim.
    """
    if not account.active:
        # An inactive account's messages wait for it to come back; checked again later.
        return SendPermission(False, now + dt.timedelta(minutes=5), "account inactive")
    if account.paused_until is not None and account.paused_until > now:
        return SendPermission(False, account.paused_until, account.pause_reason or "paused")
    if not in_send_window(account, now):
        return SendPermission(False, next_window_open(account, now), "outside send window")
    return SendPermission(True)


def has_credits(postpaid: bool, credits: int, segments: int) -> bool:
    """A prepaid balance covers `segments` more parts (post-paid accounts always send)."""
    return postpaid or credits >= segments


def charge_credits(session: Session, account_id: int, segments: Any) -> None:
    """Take `segments` credits from a prepaid account (post-paid never changes)."""
    session.execute(
        update(Account)
        .where(Account.id == account_id, Account.postpaid.is_(False))
        .values(
            credits=case(
                (Account.credits >= segments, Account.credits - segments),
                else_=0,
            )
        )
    )


def pause_account(
    session: Session,
    account_id: int,
    until: dt.datetime,
    reason: str,
    now: dt.datetime | None = None,
) -> str | None:
    """Stop an account sending until `until` (a 429 storm, an exhausted balance, an operator).

    Returns the account's name when this starts a pause (it was not paused at `now`), None
    when it only extends one or changes nothing: the caller warns once per pause. Two
    workers pausing at once: the row lock orders them and only the first starts it."""
    now = now or dt.datetime.now(dt.UTC)
    started = session.execute(
        update(Account)
        .where(Account.id == account_id)
        .where((Account.paused_until.is_(None)) | (Account.paused_until <= now))
        .values(paused_until=until, pause_reason=reason[:200])
        .returning(Account.name)
    ).scalar_one_or_none()
    if started is not None:
        return str(started)
    session.execute(
        update(Account)
        .where(Account.id == account_id)
        .where((Account.paused_until.is_(None)) | (Account.paused_until < until))
        .values(paused_until=until, pause_reason=reason[:200])
    )
    return None


def pause_warning(name: str, until: dt.datetime, reason: str) -> str:
    """The one WARNING a pause gets when it starts."""
    from sms_pipeline.db.pauses import pause_text

    return (
        f"account {name} paused ({pause_text(reason)}) until "
        f"{until.astimezone(dt.UTC):%Y-%m-%dT%H:%M:%SZ}: its messages wait until then "
        "(sms-pipeline up shows the pause, sms_account_paused counts it)"
    )


# --- the cross-worker rate limit --------------------------------------------------------

_limiter_lock = threading.Lock()
_limiters: dict[str, strategies.RateLimiter] = {}


def _limiter(settings: Settings) -> strategies.RateLimiter:
    # Redis makes the limit hold across every worker; without it (embedded mode, one
    # worker) the process's memory is the whole world.
    key = redis_store.limits_key(settings)
    with _limiter_lock:
        limiter = _limiters.get(key)
        if limiter is None:
            limiter = strategies.MovingWindowRateLimiter(redis_store.limits_storage(settings))
            _limiters[key] = limiter
        return limiter


def take_rate_token(account: Account, settings: Settings | None = None) -> bool:
    """False when the account has used its messages for this second."""
    if not account.rate_limit_per_second:
        return True
    settings = settings or get_settings()
    per_second = max(1, int(account.rate_limit_per_second))
    item = RateLimitItemPerSecond(per_second)
    return bool(_limiter(settings).hit(item, "sms-pipeline", "account", str(account.id)))


def take_gateway_token(gateway: str, per_second: float | None, settings: Settings) -> bool:
    """False when a gateway (verification.gateways.max_per_second) has taken its requests
    for this second, across every worker."""
    if not per_second:
        return True
    item = RateLimitItemPerSecond(max(1, int(per_second)))
    return bool(_limiter(settings).hit(item, "sms-pipeline", "gateway", gateway))

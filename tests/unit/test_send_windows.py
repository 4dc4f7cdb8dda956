"""Send windows, pauses and credits: pure rules over an Account, with a fixed clock."""

from __future__ import annotations

import datetime as dt

import pytest

from sms_pipeline.db.models import Account
from sms_pipeline.services.accounts import (
    account_permission,
    has_credits,
    in_send_window,
    next_window_open,
)

UTC = dt.UTC


def account(start: int, end: int, tz: str = "UTC", **kw: object) -> Account:
    values: dict[str, object] = {
        "active": True,
        "postpaid": True,
        "credits": 1_000_000,
        "paused_until": None,
    }
    values.update(kw)
    return Account(
        name="a", username="u", send_start_hour=start, send_end_hour=end, timezone=tz, **values
    )


@pytest.mark.parametrize(
    ("hour", "minute", "inside"),
    [(4, 59, False), (5, 0, True), (17, 59, True), (18, 0, False), (12, 0, True)],
)
def test_window_5_to_17_means_0500_to_1759(hour: int, minute: int, inside: bool) -> None:
    now = dt.datetime(2030, 3, 1, hour, minute, tzinfo=UTC)
    assert in_send_window(account(5, 17), now) is inside


@pytest.mark.parametrize(
    ("hour", "inside"), [(21, False), (22, True), (0, True), (5, True), (6, False)]
)
def test_window_crossing_midnight(hour: int, inside: bool) -> None:
    now = dt.datetime(2030, 3, 1, hour, 30, tzinfo=UTC)
    assert in_send_window(account(22, 5), now) is inside


def test_window_is_read_in_the_accounts_time_zone() -> None:
    # 06:30 UTC is 08:30 in Kyiv (winter, +02:00): inside 8..17 there, outside in UTC.
    now = dt.datetime(2030, 1, 15, 6, 30, tzinfo=UTC)
    assert in_send_window(account(8, 17, "Europe/Kyiv"), now)
    assert not in_send_window(account(8, 17, "UTC"), now)


def test_message_outside_window_waits_for_the_opening() -> None:
    now = dt.datetime(2030, 3, 1, 20, 15, tzinfo=UTC)
    permission = account_permission(account(8, 17), now)
    assert not permission.allowed
    assert permission.wait_until == dt.datetime(2030, 3, 2, 8, 0, tzinfo=UTC)
    assert next_window_open(account(8, 17), dt.datetime(2030, 3, 2, 9, 0, tzinfo=UTC)).hour == 9


def test_prepaid_account_without_credits_stops_and_postpaid_never_does() -> None:
    now = dt.datetime(2030, 3, 1, 12, 0, tzinfo=UTC)

    def may_send(a: Account, segments: int) -> bool:
        # As the send path asks: the account's permission, then the message's credits.
        allowed = account_permission(a, now).allowed
        return allowed and has_credits(a.postpaid, a.credits, segments)

    assert not may_send(account(0, 23, postpaid=False, credits=1), 2)
    assert may_send(account(0, 23, postpaid=False, credits=2), 2)
    assert may_send(account(0, 23, postpaid=True, credits=0), 2)


def test_inactive_or_paused_account_does_not_send() -> None:
    now = dt.datetime(2030, 3, 1, 12, 0, tzinfo=UTC)
    assert not account_permission(account(0, 23, active=False), now).allowed
    paused = account(0, 23, paused_until=now + dt.timedelta(seconds=30), pause_reason="429")
    permission = account_permission(paused, now)
    assert not permission.allowed and permission.wait_until == now + dt.timedelta(seconds=30)

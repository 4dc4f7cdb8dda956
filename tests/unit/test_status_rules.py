"""Pure status-polling rules: backoff schedule, transitions, dates, verification bodies."""

from __future__ import annotations

import datetime as dt
import logging

import pytest

from sms_pipeline.gateway import GatewayStatus, StatusResult
from sms_pipeline.services.intake.replication import render_body
from sms_pipeline.services.status import (
    Transition,
    check_delay_seconds,
    checked_after_deadline,
    classify_transition,
    first_check_at,
    next_check_time,
    status_date,
)
from sms_pipeline.settings import Settings, load_settings

S = GatewayStatus
BACKOFF = [30, 60, 120, 300, 600]


@pytest.mark.parametrize(
    ("checks", "delay"), [(0, 30), (1, 60), (2, 120), (3, 300), (4, 600), (5, 600), (99, 600)]
)
def test_young_messages_are_checked_often_and_old_ones_rarely(checks: int, delay: int) -> None:
    assert check_delay_seconds(checks, BACKOFF) == delay


def test_backoff_with_one_step_repeats_it() -> None:
    assert [check_delay_seconds(n, [45]) for n in range(3)] == [45, 45, 45]


def test_empty_backoff_is_refused() -> None:
    with pytest.raises(ValueError, match="at least one"):
        check_delay_seconds(0, [])


@pytest.mark.parametrize(
    ("old", "new"),
    [
        (S.ACCEPTED, S.ENROUTE),
        (S.ACCEPTED, S.DELIVERED),
        (S.ENROUTE, S.DELIVERED),
        (S.ENROUTE, S.UNDELIVERABLE),
        (S.PENDING, S.EXPIRED),
        (S.UNKNOWN, S.ENROUTE),
        (S.ACCEPTED, S.UNKNOWN),  # same rank, the gateway's newer word wins
    ],
)
def test_forward_changes_are_written(old: GatewayStatus, new: GatewayStatus) -> None:
    assert classify_transition(old, new) is Transition.FORWARD


@pytest.mark.parametrize(
    ("old", "new"),
    [
        (S.ENROUTE, S.ACCEPTED),
        (S.PENDING, S.ACCEPTED),
        (S.ENROUTE, S.UNKNOWN),
        (S.DELIVERED, S.ENROUTE),
        (S.TERMINATED, S.ACCEPTED),
    ],
)
def test_backwards_changes_are_ignored(old: GatewayStatus, new: GatewayStatus) -> None:
    assert classify_transition(old, new) is Transition.BACKWARDS


@pytest.mark.parametrize(
    ("old", "new"), [(S.DELIVERED, S.UNDELIVERABLE), (S.TERMINATED, S.DELIVERED)]
)
def test_a_final_status_is_never_overwritten(old: GatewayStatus, new: GatewayStatus) -> None:
    assert classify_transition(old, new) is Transition.LOCKED


def test_same_status_is_unchanged() -> None:
    assert all(classify_transition(s, s) is Transition.UNCHANGED for s in GatewayStatus)


def _answer(date: dt.datetime | None, raw: str | None) -> StatusResult:
    return StatusResult("1", S.ENROUTE, date, raw, None, None, b"")


def test_gateway_date_is_converted_to_utc() -> None:
    kyiv = dt.timezone(dt.timedelta(hours=3))
    when = dt.datetime(2013, 9, 6, 19, 11, 16, tzinfo=kyiv)
    got = status_date(_answer(when, "Fri, 06 Sep 2013 19:11:16 +0300"), dt.datetime.now(dt.UTC), 1)
    assert got == when and got.utcoffset() == dt.timedelta(0) and got.hour == 16


def test_unreadable_gateway_date_is_logged_and_the_check_time_used(
    caplog: pytest.LogCaptureFixture,
) -> None:
    checked = dt.datetime(2024, 1, 2, 3, 4, 5, tzinfo=dt.UTC)
    with caplog.at_level(logging.WARNING, logger="sms_pipeline.services.status"):
        got = status_date(_answer(None, "not a date"), checked, "msg-42")
    assert got == checked
    assert "msg-42" in caplog.text and "not a date" in caplog.text


def test_verification_body_renders_the_code_only() -> None:
    assert render_body("123456", "Your verification code: {code}") == (
        "Your verification code: 123456"
    )
    # Other braces are text, not format fields.
    assert render_body("77", "{code} {0} {x!r}") == "77 {0} {x!r}"


# --- the schedule -------------------------------------------------------------------------

T0 = dt.datetime(2026, 12, 1, 12, 0, tzinfo=dt.UTC)


def _settings(**values: object) -> Settings:
    return load_settings(**values)


@pytest.mark.parametrize(
    ("first", "backoff", "timeout", "expected"),
    [
        (10, [30, 60], 1800, 10),  # the configured first step
        (45, [30, 60], 1800, 30),  # never later than the first backoff step
        (10, [30, 60], 5, 5),  # never after the deadline
        (10, [30, 60], 20, 10),
    ],
)
def test_first_check_comes_at_the_first_step_but_never_after_the_deadline(
    first: int, backoff: list[int], timeout: int, expected: int
) -> None:
    settings = _settings(
        sms_status_first_check_seconds=first,
        sms_status_check_backoff=backoff,
        sms_terminate_after_seconds=timeout,
    )
    assert first_check_at(T0, settings) == T0 + dt.timedelta(seconds=expected)


def test_next_check_is_clamped_to_a_deadline_still_ahead() -> None:
    deadline = T0 + dt.timedelta(seconds=20)
    assert next_check_time(T0, 0, deadline, [30]) == deadline
    assert next_check_time(T0, 0, deadline, [5]) == T0 + dt.timedelta(seconds=5)
    # At or after the deadline the check has happened (or is happening): no clamp.
    assert next_check_time(deadline, 1, deadline, [30]) == deadline + dt.timedelta(seconds=30)


def test_terminated_needs_an_answer_to_a_check_sent_at_or_after_the_deadline() -> None:
    deadline = T0 + dt.timedelta(seconds=20)
    assert not checked_after_deadline(None, deadline)
    assert not checked_after_deadline(deadline - dt.timedelta(microseconds=1), deadline)
    assert checked_after_deadline(deadline, deadline)

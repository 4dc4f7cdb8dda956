"""The small rules behind pauses and the give-up bound (issue 27)."""

from __future__ import annotations

import datetime as dt

import pytest

from sms_pipeline.db.pauses import Pause, pause_kind, pause_text
from sms_pipeline.services.status.terminate import give_up_reason
from sms_pipeline.settings import FALLBACK_GIVE_UP_SECONDS, load_settings, validity_seconds


@pytest.mark.parametrize(
    ("reason", "kind"),
    [
        ("Prepaid messages limit exceed", "credits"),
        ("rejected: Prepaid messages limit exceed", "credits"),
        ("out of credits", "credits"),
        ("gateway throttled (429)", "429"),
        ("manual: maintenance", "manual"),
        (None, "manual"),
    ],
)
def test_pause_kind(reason: str | None, kind: str) -> None:
    assert pause_kind(reason) == kind


def test_a_manual_pause_is_described_once_as_manual() -> None:
    assert pause_text("manual: maintenance") == "manual: maintenance"
    until = dt.datetime(2026, 12, 7, 12, 0, tzinfo=dt.UTC)
    pause = Pause(1, "clinic", "gateway throttled (429)", until, 3)
    assert pause.describe() == (
        "account clinic paused (429: gateway throttled (429)) until 2026-12-07T12:00:00Z"
    )


@pytest.mark.parametrize(
    ("validity", "seconds"),
    [
        ("+2 hour", 7200),
        ("+30 minutes", 1800),
        ("+1 day", 86400),
        ("+1 week", 604800),
        ("tomorrow", None),
        (None, None),
    ],
)
def test_validity_seconds(validity: str | None, seconds: int | None) -> None:
    assert validity_seconds(validity) == seconds


def test_give_up_defaults_to_the_validity_then_to_a_day() -> None:
    assert load_settings(ip2sms_validity="+2 hour").status_give_up_seconds == 7200
    assert load_settings(ip2sms_validity="").status_give_up_seconds == FALLBACK_GIVE_UP_SECONDS
    assert load_settings(sms_status_give_up_seconds=60).status_give_up_seconds == 60


def test_give_up_reason_says_how_many_since_when_and_how() -> None:
    since = dt.datetime(2026, 12, 7, 12, 0, tzinfo=dt.UTC)
    text = give_up_reason(12, since, "HTTP 502", since + dt.timedelta(seconds=7260))
    assert text == (
        "Terminated: no usable status answer: 12 status checks failed over 7260 s since "
        "2026-12-07T12:00:00Z, the last: HTTP 502"
    )

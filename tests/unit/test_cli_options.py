"""CLI argument types and the what-to-do-next sentences (no servers)."""

from __future__ import annotations

import argparse
import datetime as dt

import pytest

from sms_pipeline import hints
from sms_pipeline.cli import _split_debug
from sms_pipeline.cli.options import parse_time
from sms_pipeline.settings import load_settings

NOW = dt.datetime(2030, 1, 1, 8, 0, tzinfo=dt.UTC)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("+90s", NOW + dt.timedelta(seconds=90)),
        ("+10m", NOW + dt.timedelta(minutes=10)),
        ("+2h", NOW + dt.timedelta(hours=2)),
        ("+1d", NOW + dt.timedelta(days=1)),
        ("2030-01-02T08:00+02:00", dt.datetime(2030, 1, 2, 6, 0, tzinfo=dt.UTC)),
        ("2030-01-02T08:00Z", dt.datetime(2030, 1, 2, 8, 0, tzinfo=dt.UTC)),
    ],
)
def test_times_are_iso_8601_with_a_zone_or_relative(text: str, expected: dt.datetime) -> None:
    assert parse_time(text, now=NOW) == expected


@pytest.mark.parametrize("text", ["tomorrow", "10m", "2030-01-02T08:00", "", "+-5m"])
def test_other_times_are_refused_with_a_sentence(text: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError):
        parse_time(text, now=NOW)


def test_debug_is_accepted_anywhere_before_double_dash() -> None:
    assert _split_debug(["send", "--debug", "--to", "x"]) == (["send", "--to", "x"], True)
    assert _split_debug(["send", "--", "--debug"]) == (["send", "--", "--debug"], False)


def test_gateway_unreachable_names_the_masked_url_and_the_embedded_hint() -> None:
    embedded = load_settings(sms_database_url="")
    text = hints.gateway_unreachable("http://user:pw@127.0.0.1:8080/ip2sms/", embedded)
    assert text.startswith("gateway unreachable at http://user:***@127.0.0.1:8080/ip2sms/")
    assert "sms-pipeline up" in text and "pw@" not in text
    assert "with no real gateway configured" in text
    # A URL the user set is named as such, not as "no gateway configured" (issue 33).
    given = load_settings(sms_database_url="", ip2sms_send_url="http://127.0.0.1:9/ip2sms/")
    text = hints.gateway_unreachable(None, given)
    assert "IP2SMS_SEND_URL points at this machine" in text and "no real gateway" not in text
    assert "sms-pipeline up" in text
    production = load_settings(sms_database_url="postgresql+psycopg://u@db/sms")
    text = hints.gateway_unreachable("https://gw.example.invalid/ip2sms/", production)
    assert "sms-pipeline up" not in text and "IP2SMS_SEND_URL" in text


def test_a_down_gateway_is_one_warning_per_interval() -> None:
    key = "test-key"
    assert hints.should_warn(key, now=1000.0)
    assert not hints.should_warn(key, now=1000.0 + hints.WARN_EVERY_SECONDS - 1)
    assert hints.should_warn(key, now=1000.0 + hints.WARN_EVERY_SECONDS)


def test_data_dir_is_absolute_whatever_was_given() -> None:
    assert load_settings(sms_data_dir="relative/folder").sms_data_dir.is_absolute()

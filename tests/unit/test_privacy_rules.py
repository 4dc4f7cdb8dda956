"""Data-protection rules without servers: expiry, validity, settings, the keyed hash."""

from __future__ import annotations

import datetime as dt
import stat
from pathlib import Path

import pytest

from sms_pipeline.errors import InvalidMessage
from sms_pipeline.services import privacy
from sms_pipeline.settings import SettingsError, load_settings

T0 = dt.datetime(2026, 12, 1, 12, 0, tzinfo=dt.UTC)


def test_max_queue_age_defaults_ten_minutes_for_codes_and_a_day_for_others() -> None:
    settings = load_settings()
    assert settings.max_queue_age("verification") == 600
    assert settings.max_queue_age("2FA") == 600
    assert settings.max_queue_age("text") == 86400
    assert settings.max_queue_age("medication_request") == 86400


def test_max_queue_age_and_retention_have_per_type_overrides(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("SMS_MAX_QUEUE_AGE_SECONDS_2FA", "120")
    monkeypatch.setenv("SMS_MAX_QUEUE_AGE_SECONDS_VERIFICATION", "")  # empty = the general
    monkeypatch.setenv("SMS_MAX_QUEUE_AGE_SECONDS", "3600")
    monkeypatch.setenv("SMS_RETENTION_DAYS_VERIFICATION", "7")
    settings = load_settings()
    assert settings.max_queue_age("2FA") == 120
    assert settings.max_queue_age("verification") == 3600
    assert settings.max_queue_age("text") == 3600
    assert settings.retention_days("verification") == 7
    assert settings.retention_days("text") == 90


def test_redact_types_are_checked_against_the_known_types(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("SMS_REDACT_TYPES", "verification, 2FA, medication_request")
    assert load_settings().sms_redact_types == ["verification", "2FA", "medication_request"]
    monkeypatch.setenv("SMS_REDACT_TYPES", "verification,otp")
    with pytest.raises(SettingsError, match="SMS_REDACT_TYPES"):
        load_settings()


def test_a_codes_expiry_is_the_earlier_of_its_validity_and_its_max_queue_age() -> None:
    settings = load_settings()
    assert privacy.expiry_for("verification", T0, settings) == T0 + dt.timedelta(minutes=10)
    shorter = privacy.expiry_for("2FA", T0, settings, dt.timedelta(minutes=3))
    assert shorter == T0 + dt.timedelta(minutes=3)
    longer = privacy.expiry_for("2FA", T0, settings, dt.timedelta(hours=2))
    assert longer == T0 + dt.timedelta(minutes=10)  # the queue age still bounds it
    assert privacy.expiry_for("text", T0, settings) == T0 + dt.timedelta(hours=24)
    code_end = T0 + dt.timedelta(minutes=4)  # a replicated verification's code_expired_at
    assert privacy.expiry_for("verification", T0, settings, code_expires_at=code_end) == code_end


def test_gateway_validity_is_the_codes_whole_minutes_left_and_never_zero() -> None:
    expires = T0 + dt.timedelta(minutes=10)
    assert privacy.gateway_validity("verification", expires, T0, "+2 hour") == "+10 minute"
    late = T0 + dt.timedelta(minutes=9, seconds=1)
    assert privacy.gateway_validity("2FA", expires, late, "+2 hour") == "+1 minute"
    last = expires - dt.timedelta(seconds=5)
    assert privacy.gateway_validity("2FA", expires, last, "+2 hour") == "+1 minute"
    assert privacy.gateway_validity("text", expires, T0, "+2 hour") == "+2 hour"
    assert privacy.gateway_validity("verification", None, T0, None) is None


def test_valid_for_takes_seconds_or_a_timedelta_and_refuses_the_rest() -> None:
    assert privacy.parse_valid_for(None) is None
    assert privacy.parse_valid_for(90) == dt.timedelta(seconds=90)
    assert privacy.parse_valid_for(dt.timedelta(minutes=2)) == dt.timedelta(minutes=2)
    for bad in (0, -1, True, "60", dt.timedelta(days=400)):
        with pytest.raises(InvalidMessage, match="valid_for"):
            privacy.parse_valid_for(bad)


def test_subject_hash_is_keyed_and_never_holds_the_number() -> None:
    one = load_settings(sms_privacy_key="k" * 32)
    two = load_settings(sms_privacy_key="j" * 32)
    number = "+380931234567"
    first = privacy.subject_hash(number, one)
    assert first == privacy.subject_hash(number, one)
    assert first != privacy.subject_hash(number, two)
    assert number[1:] not in first and len(first) == 64
    assert "k" * 32 not in repr(one)  # the key is a secret: never in a repr


def test_embedded_install_generates_its_key_once_in_the_data_folder(tmp_path: Path) -> None:
    settings = load_settings(
        sms_data_dir=tmp_path, sms_database_url=f"sqlite:///{tmp_path}/db.sqlite"
    ).model_copy(update={"sms_privacy_key": None})
    assert privacy.privacy_key(settings, create=False) is None
    first = privacy.subject_hash("+380931234567", settings)
    key_file = tmp_path / privacy.KEY_FILE
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert privacy.subject_hash("+380931234567", settings) == first


def test_server_database_without_a_privacy_key_fails_loudly(tmp_path: Path) -> None:
    settings = load_settings(
        sms_data_dir=tmp_path, sms_database_url="postgresql+psycopg://u@127.0.0.1/db"
    ).model_copy(update={"sms_privacy_key": None})
    with pytest.raises(SettingsError, match="SMS_PRIVACY_KEY"):
        privacy.subject_hash("+380931234567", settings)
    too_short = load_settings(sms_privacy_key="short")
    with pytest.raises(SettingsError, match="at least 16"):
        privacy.subject_hash("+380931234567", too_short)

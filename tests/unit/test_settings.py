from __future__ import annotations

import pytest

from sms_pipeline.settings import SettingsError, load_settings, mask_url


def test_defaults_run_embedded_without_any_server(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SMS_DATABASE_URL", raising=False)
    monkeypatch.delenv("SMS_BROKER_URL", raising=False)
    settings = load_settings()
    assert settings.database_url.startswith("sqlite:///")
    assert settings.is_embedded_broker
    assert settings.redis_url is None


def test_bad_value_fails_naming_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("IP2SMS_READ_TIMEOUT", "soon")
    with pytest.raises(SettingsError, match="IP2SMS_READ_TIMEOUT"):
        load_settings()


def test_bad_backoff_list_fails_naming_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SMS_STATUS_CHECK_BACKOFF", "30,x")
    with pytest.raises(SettingsError, match="SMS_STATUS_CHECK_BACKOFF"):
        load_settings()


def test_comma_separated_lists_are_read(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SMS_STATUS_CHECK_BACKOFF", "5, 10,20")
    monkeypatch.setenv("SMS_OPT_OUT_KEYWORDS", "STOP,СТОП")
    settings = load_settings()
    assert settings.sms_status_check_backoff == [5, 10, 20]
    assert settings.sms_opt_out_keywords == ["STOP", "СТОП"]


def test_secrets_never_appear_in_repr_or_errors(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("IP2SMS_PASSWORD", "hunter2-secret")
    monkeypatch.setenv("SMS_DATABASE_URL", "postgresql+psycopg://app:db-secret@db/sms")
    settings = load_settings()
    text = repr(settings) + str(settings)
    assert "hunter2-secret" not in text
    assert "db-secret" not in text
    assert settings.ip2sms_password.get_secret_value() == "hunter2-secret"
    monkeypatch.setenv("SMS_FLOWER_BASIC_AUTH", "admin:flower-secret")
    monkeypatch.setenv("SMS_MAX_SEGMENTS", "0")
    with pytest.raises(SettingsError) as info:
        load_settings()
    assert "flower-secret" not in str(info.value)
    assert "hunter2-secret" not in str(info.value)


def test_mask_url_hides_only_the_password() -> None:
    assert mask_url("redis://:pw@host:6379/0") == "redis://:***@host:6379/0"
    assert mask_url("postgresql://u:pw@h/db") == "postgresql://u:***@h/db"
    assert mask_url("sqlite:///x.db") == "sqlite:///x.db"

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys
from pathlib import Path

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


@pytest.mark.parametrize("value", ["0", "-1"])
def test_callback_sweep_period_must_be_positive(
    monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    monkeypatch.setenv("SMS_CALLBACK_SWEEP_SECONDS", value)
    with pytest.raises(SettingsError, match="SMS_CALLBACK_SWEEP_SECONDS"):
        load_settings()


def test_callback_sweep_period_takes_any_positive_value(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SMS_CALLBACK_SWEEP_SECONDS", "0.001")
    assert load_settings().sms_callback_sweep_seconds == 0.001


def test_the_callbacks_sweep_runs_on_its_own_period_not_the_outbox_sweeps() -> None:
    from celery import Celery

    from sms_pipeline.broker.app import configure

    app = Celery("settings-test")
    configure(app, load_settings(sms_callback_sweep_seconds=45, sms_outbox_sweep_seconds=3))
    schedule = app.conf.beat_schedule
    assert schedule["callbacks-sweep"]["schedule"] == dt.timedelta(seconds=45)
    assert schedule["callbacks-sweep"]["options"]["expires"] == 45
    assert schedule["outbox-sweep"]["schedule"] == dt.timedelta(seconds=3)


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


def test_mask_url_hides_query_passwords_too() -> None:
    assert (
        mask_url("postgresql://u@h/db?password=s3cret&sslmode=require")
        == "postgresql://u@h/db?password=***&sslmode=require"
    )
    assert (
        mask_url("redis://h/0?PassWord=x&api_key=y&db=1")
        == "redis://h/0?PassWord=***&api_key=***&db=1"
    )
    assert mask_url("http://a:b@[::1:/x") == "***"  # unparseable: nothing shown


def test_every_url_setting_is_masked_in_repr_and_str(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SMS_DATABASE_URL", "postgresql://u@db/x?password=dbpw1")
    monkeypatch.setenv("SMS_BROKER_URL", "redis://:brokerpw2@r:6379/0")
    monkeypatch.setenv("SMS_REDIS_URL", "redis://r/1?password=redispw3")
    monkeypatch.setenv("IP2SMS_SEND_URL", "https://gw:sendpw4@gw.example/ip2sms/")
    monkeypatch.setenv("IP2SMS_STATUS_URL", "https://gw.example/r/?token=statuspw5")
    monkeypatch.setenv("IP2SMS_INBOUND_URL", "https://x:inboundpw6@gw.example/in/")
    settings = load_settings()
    shown = repr(settings) + str(settings)
    for secret in ("dbpw1", "brokerpw2", "redispw3", "sendpw4", "statuspw5", "inboundpw6"):
        assert secret not in shown


def test_db_upgrade_prints_the_database_url_masked(tmp_path: Path) -> None:
    env = {
        "PATH": os.environ["PATH"],
        "HOME": str(tmp_path),
        "SMS_DATA_DIR": str(tmp_path),
        "SMS_DATABASE_URL": f"sqlite:///{tmp_path}/x.db?password=sqlitepw7",
    }
    done = subprocess.run(
        [sys.executable, "-m", "sms_pipeline.cli", "db", "upgrade"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
    )
    assert "password=***" in done.stdout, done.stdout + done.stderr
    assert "sqlitepw7" not in done.stdout + done.stderr


@pytest.mark.parametrize("program", ["worker", "beat"])
def test_a_production_worker_or_beat_refuses_to_start_on_the_simulator_defaults(
    tmp_path: Path, program: str
) -> None:
    env = {
        "PATH": os.environ["PATH"],
        "HOME": str(tmp_path),
        "SMS_DATA_DIR": str(tmp_path),
        "SMS_BROKER_URL": "redis://127.0.0.1:1/0",  # a real broker: not embedded mode
        "IP2SMS_LOGIN": "clinic",
    }
    argv = [sys.executable, "-m", "celery", "-A", "sms_pipeline.celery_app", program]
    if program == "beat":
        argv.append(f"--schedule={tmp_path}/schedule")
    done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert done.returncode != 0
    message = done.stderr + done.stdout
    assert "IP2SMS_SEND_URL, IP2SMS_STATUS_URL, IP2SMS_PASSWORD" in message


def test_explicit_gateway_settings_or_embedded_mode_pass_the_production_check() -> None:
    from sms_pipeline.settings import require_production_gateway

    # Embedded (the demo): nothing required.
    require_production_gateway(
        load_settings(sms_broker_url="", sms_database_url="", sms_allow_simulator=False)
    )
    require_production_gateway(
        load_settings(
            sms_broker_url="redis://r/0",
            sms_allow_simulator=False,
            ip2sms_send_url="https://gw/s",
            ip2sms_status_url="https://gw/r",
            ip2sms_login="clinic",
            ip2sms_password="pw",
        )
    )
    with pytest.raises(SettingsError, match="IP2SMS_PASSWORD"):
        require_production_gateway(
            load_settings(
                sms_broker_url="redis://r/0",
                sms_allow_simulator=False,
                ip2sms_send_url="https://gw/s",
                ip2sms_status_url="https://gw/r",
                ip2sms_login="clinic",
            )
        )


def test_settings_read_before_a_reset_are_not_kept_after_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Another thread (the metrics flusher) reads the environment; meanwhile a test changes
    # it and resets the cache. functools.cache then kept the stale read, and the next send
    # went to the default gateway URL (a flaky CI failure).
    from sms_pipeline import settings as module

    first = "http://127.0.0.1:1111/ip2sms/"
    second = "http://127.0.0.1:2222/ip2sms/"
    monkeypatch.setenv("IP2SMS_SEND_URL", first)
    module.reset_settings_cache()
    real_load = module.load_settings

    def load_while_the_environment_changes() -> module.Settings:
        stale = real_load()  # read the old environment...
        monkeypatch.setenv("IP2SMS_SEND_URL", second)  # ...a test changes it meanwhile
        module.reset_settings_cache()
        return stale

    monkeypatch.setattr(module, "load_settings", load_while_the_environment_changes)
    assert module.get_settings().ip2sms_send_url == first  # the in-flight reader's answer
    monkeypatch.setattr(module, "load_settings", real_load)
    assert module.get_settings().ip2sms_send_url == second
    module.reset_settings_cache()

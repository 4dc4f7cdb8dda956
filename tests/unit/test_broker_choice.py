"""SMS_BROKER_URL as Redis, Redis Sentinel or RabbitMQ: settings, masking, the app's config."""

from __future__ import annotations

import datetime as dt
import uuid

import pytest

from sms_pipeline.settings import SettingsError, load_settings, mask_url

SENTINELS = "sentinel://:masterpw1@127.0.0.1:26379;sentinel://:masterpw1@127.0.0.1:26380"


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for name in ("SMS_BROKER_URL", "SMS_REDIS_URL", "SMS_BROKER_MASTER_NAME"):
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


def test_a_sentinel_broker_needs_its_master_name(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("SMS_BROKER_URL", SENTINELS)
    with pytest.raises(SettingsError, match="SMS_BROKER_MASTER_NAME") as info:
        load_settings()
    assert "masterpw1" not in str(info.value)
    clean_env.setenv("SMS_BROKER_MASTER_NAME", "sms")
    settings = load_settings()
    assert settings.broker_kind == "sentinel"
    # Rate limits and kick flags follow the broker's Redis, through the same Sentinels.
    assert settings.redis_url == SENTINELS
    assert settings.redis_master_name == "sms"


def test_a_bad_entry_in_a_sentinel_list_is_named_by_position_not_echoed(
    clean_env: pytest.MonkeyPatch,
) -> None:
    clean_env.setenv("SMS_BROKER_MASTER_NAME", "sms")
    clean_env.setenv("SMS_BROKER_URL", "sentinel://:pw-x9@h:26379;redis://:pw-x9@h:6379")
    with pytest.raises(SettingsError, match=r"SMS_BROKER_URL.*#2") as info:
        load_settings()
    assert "pw-x9" not in str(info.value)
    clean_env.setenv("SMS_BROKER_URL", "redis://h:6379;redis://h2:6379")
    with pytest.raises(SettingsError, match="SMS_BROKER_URL"):
        load_settings()
    # RabbitMQ nodes of one cluster, tried in turn (kombu's failover list): each masked.
    clean_env.setenv("SMS_BROKER_URL", "amqp://u:rpw1@r1:5672//;amqp://u:rpw1@r2:5672//")
    settings = load_settings()
    assert settings.broker_kind == "amqp"
    assert "rpw1" not in repr(settings)


def test_a_sentinel_redis_url_takes_its_own_master_name_or_the_brokers(
    clean_env: pytest.MonkeyPatch,
) -> None:
    clean_env.setenv("SMS_BROKER_URL", "amqp://u:pw@rabbit:5672//")
    clean_env.setenv("SMS_REDIS_URL", "sentinel://s1:26379;sentinel://s2:26379")
    with pytest.raises(SettingsError, match="SMS_REDIS_MASTER_NAME"):
        load_settings()
    clean_env.setenv("SMS_BROKER_MASTER_NAME", "from-broker")
    assert load_settings().redis_master_name == "from-broker"
    clean_env.setenv("SMS_REDIS_MASTER_NAME", "limits")
    settings = load_settings()
    assert settings.broker_kind == "amqp"
    assert settings.redis_master_name == "limits"
    assert not settings.broker_holds_countdowns


def test_mask_url_masks_every_password_of_a_sentinel_list() -> None:
    masked = mask_url("sentinel://:pw1@h1:26379;sentinel://u:pw2@h2:26380/0")
    assert masked == "sentinel://:***@h1:26379;sentinel://u:***@h2:26380/0"


def test_sentinel_passwords_are_masked_in_repr(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("SMS_BROKER_URL", SENTINELS)
    clean_env.setenv("SMS_BROKER_MASTER_NAME", "sms")
    clean_env.setenv("SMS_SENTINEL_PASSWORD", "sentinelpw2")
    settings = load_settings()
    shown = repr(settings) + str(settings)
    assert "masterpw1" not in shown and "sentinelpw2" not in shown
    assert "127.0.0.1:26380" in shown


def test_rabbitmq_gets_durable_quorum_queues_and_publisher_confirms(
    clean_env: pytest.MonkeyPatch,
) -> None:
    from sms_pipeline.broker.app import ALL_QUEUES, create_app

    clean_env.setenv("SMS_BROKER_URL", "amqp://u:pw@127.0.0.1:5672//")
    conf = create_app(load_settings()).conf
    assert [q.name for q in conf.task_queues] == list(ALL_QUEUES)
    for queue in conf.task_queues:
        assert queue.durable
        assert queue.queue_arguments == {"x-queue-type": "quorum"}
    assert conf.broker_transport_options == {"confirm_publish": True}
    assert conf.task_default_queue_type == "quorum"
    assert conf.worker_detect_quorum_queues
    assert conf.worker_prefetch_multiplier == 1 and conf.task_acks_late
    # No countdowns are published there, so no delayed-delivery exchanges are declared.
    from celery.utils.imports import symbol_by_name

    steps = symbol_by_name(conf.worker_consumer).Blueprint.default_steps
    assert "celery.worker.consumer.tasks:Tasks" in steps
    assert not [s for s in steps if "delayed_delivery" in s]


def test_redis_queues_stay_classic_and_sentinel_names_its_master(
    clean_env: pytest.MonkeyPatch,
) -> None:
    from sms_pipeline.broker.app import create_app

    clean_env.setenv("SMS_BROKER_URL", "redis://127.0.0.1:6379/0")
    conf = create_app(load_settings()).conf
    assert all(not q.queue_arguments for q in conf.task_queues)
    assert "master_name" not in conf.broker_transport_options
    clean_env.setenv("SMS_BROKER_URL", SENTINELS)
    clean_env.setenv("SMS_BROKER_MASTER_NAME", "sms")
    clean_env.setenv("SMS_SENTINEL_PASSWORD", "sentinelpw2")
    options = create_app(load_settings()).conf.broker_transport_options
    assert options["master_name"] == "sms"
    assert options["sentinel_kwargs"] == {"password": "sentinelpw2"}
    assert options["visibility_timeout"] >= 600


def test_without_broker_countdowns_a_wait_is_left_to_the_sweeper(
    settings_env: object, monkeypatch: pytest.MonkeyPatch
) -> None:
    from sms_pipeline.broker import dispatch
    from sms_pipeline.services import outbox

    now = dt.datetime(2026, 12, 7, 12, 0, tzinfo=dt.UTC)
    later = now + dt.timedelta(seconds=5)
    message = uuid.uuid4()
    settings_env(SMS_BROKER_URL="redis://127.0.0.1:6379/0")  # type: ignore[operator]
    assert outbox.dispatch_for(message, "text", 0, later, now) is not None
    settings = settings_env(SMS_BROKER_URL="amqp://u:pw@127.0.0.1:1//")  # type: ignore[operator]
    assert outbox.max_countdown() == 0
    assert outbox.dispatch_for(message, "text", 0, later, now) is None
    assert outbox.dispatch_for(message, "text", 0, now, now) is not None
    # A countdown kick reaches no broker (none is listening on port 1 either).
    monkeypatch.setattr(dispatch, "_app", lambda: pytest.fail("published a countdown"))
    assert dispatch.kick([dispatch.QueueClass.BULK], countdown=5.0, settings=settings) == 0

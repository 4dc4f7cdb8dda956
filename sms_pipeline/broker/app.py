"""The Celery app (`celery -A sms_pipeline.celery_app worker`), its queues, routes and beat.

Configured for no loss: late acks, re-queue when a worker dies, prefetch 1, JSON only, no
result backend. The database outbox is the source of truth; the broker only carries ids,
so a lost broker message is re-dispatched by the outbox sweeper.
"""

from __future__ import annotations

import datetime as dt
import sys
from typing import Any

from celery import Celery, signals
from kombu.entity import Queue

from sms_pipeline.broker import (
    embedded,  # noqa: F401  (atomic filesystem:// transport)
    redis_transport,  # noqa: F401  (redis:// surviving a lost broker)
)
from sms_pipeline.db.files import private_folder
from sms_pipeline.heap import freeze_startup_objects
from sms_pipeline.settings import (
    Settings,
    SettingsError,
    get_settings,
    require_production_gateway,
)

URGENT_QUEUE = "urgent"  # verification and 2FA: never wait behind bulk
BULK_QUEUE = "bulk"  # text, medication_request
STATUS_QUEUE = "status"  # status checks
MAINTENANCE_QUEUE = "maintenance"  # beat's periodic jobs
CALLBACKS_QUEUE = "callbacks"  # producers' callback POSTs: give them a worker of their own
ALL_QUEUES = (URGENT_QUEUE, BULK_QUEUE, STATUS_QUEUE, MAINTENANCE_QUEUE, CALLBACKS_QUEUE)
# What `sms-pipeline worker` consumes by default: everything but the callbacks, which get a
# worker process of their own (a bulkhead: slow receivers hold only its threads).
WORK_QUEUES = tuple(q for q in ALL_QUEUES if q != CALLBACKS_QUEUE)

# Every module that defines tasks; the worker imports them all at start.
TASK_MODULES = (
    "sms_pipeline.tasks.send",
    "sms_pipeline.tasks.callbacks",
    "sms_pipeline.tasks.status",
    "sms_pipeline.tasks.replication",
    "sms_pipeline.tasks.inbound",
    "sms_pipeline.tasks.privacy",
)

# Task names: services dispatch by name so they never import the tasks package.
SEND_DUE_TASK = "sms_pipeline.send_due"  # drain every due message of one queue class
OUTBOX_SWEEP_TASK = "sms_pipeline.outbox_sweep"
QUEUE_POLL_TASK = "sms_pipeline.queue_poll"
STATUS_SWEEP_TASK = "sms_pipeline.status_sweep"
CHECK_STATUS_TASK = "sms_pipeline.check_status"
CHECK_STATUSES_TASK = "sms_pipeline.check_statuses"  # a chunk of ids, checked concurrently
REPLICATE_TASK = "sms_pipeline.replicate"
INBOUND_POLL_TASK = "sms_pipeline.inbound_poll"
CALLBACKS_SWEEP_TASK = "sms_pipeline.callbacks_sweep"
DELIVER_CALLBACK_TASK = "sms_pipeline.deliver_callback"
PRIVACY_SWEEP_TASK = "sms_pipeline.privacy_sweep"
RETENTION_TASK = "sms_pipeline.retention_purge"

# Message priority is served by the send claim's ORDER BY (the database), and urgent vs
# bulk by separate queues: the broker needs no priority lists (each one is another BRPOP
# key the consumer polls).
PRIORITY_STEPS = [0]


def _transport_options(settings: Settings) -> dict[str, Any]:
    url = settings.broker_url
    if url.startswith("filesystem:"):
        folder = settings.broker_folder
        private_folder(settings.sms_data_dir)  # 0700: whoever creates the data folder first
        for sub in ("queue", "processed", "control"):
            (folder / sub).mkdir(parents=True, exist_ok=True)
        return {
            "data_folder_in": str(folder / "queue"),
            "data_folder_out": str(folder / "queue"),
            "processed_folder": str(folder / "processed"),
            # kombu's exchange table, else `control/` in the working directory.
            "control_folder": str(folder / "control"),
            "store_processed": False,
        }
    if settings.broker_kind == "amqp":
        # The broker confirms each publish: a publish that returned reached the queue.
        return {"confirm_publish": True}
    sentinel: dict[str, Any] = {}
    if settings.broker_kind == "sentinel":
        sentinel["master_name"] = settings.sms_broker_master_name
        if settings.sms_sentinel_password is not None:
            sentinel["sentinel_kwargs"] = {
                "password": settings.sms_sentinel_password.get_secret_value()
            }
    if url.startswith(("redis://", "rediss://", "sentinel://")):
        return {
            **sentinel,
            # Longer than any countdown we schedule (retry backoff is capped below it),
            # so a waiting retry is never handed to a second worker.
            "visibility_timeout": int(max(600, 2 * settings.sms_retry_backoff_max_seconds)),
            # Restore unacked messages of a dead worker in seconds, not minutes.
            "unacked_restore_throttle": 1,
            "priority_steps": PRIORITY_STEPS,
            "queue_order_strategy": "priority",
            "sep": ":",
        }
    return {}


def _queues(settings: Settings) -> list[Queue]:
    if settings.broker_kind == "amqp":
        # Durable quorum queues: replicated over the cluster's nodes, kept across restarts.
        # No broker priorities (quorum queues have none before RabbitMQ 4): urgent and bulk
        # are separate queues, and priority within one is the send claim's ORDER BY.
        return [
            Queue(name, durable=True, queue_arguments={"x-queue-type": "quorum"})  # type: ignore[no-untyped-call]
            for name in ALL_QUEUES
        ]
    return [Queue(name) for name in ALL_QUEUES]  # type: ignore[no-untyped-call]


def _beat_schedule(settings: Settings) -> dict[str, dict[str, Any]]:
    def every(task: str, seconds: float) -> dict[str, Any]:
        # expires = interval: ticks piled up behind a busy worker (or a second beat started
        # by mistake) are dropped instead of run back to back.
        return {
            "task": task,
            "schedule": dt.timedelta(seconds=seconds),
            "options": {"queue": MAINTENANCE_QUEUE, "expires": seconds},
        }

    return {
        "outbox-sweep": every(OUTBOX_SWEEP_TASK, settings.sms_outbox_sweep_seconds),
        "queue-poll": every(QUEUE_POLL_TASK, settings.sms_queue_poll_seconds),
        "status-sweep": every(STATUS_SWEEP_TASK, settings.sms_status_poll_seconds),
        "replicate": every(REPLICATE_TASK, settings.sms_replication_seconds),
        "inbound-poll": every(INBOUND_POLL_TASK, settings.sms_inbound_poll_seconds),
        "callbacks-sweep": every(CALLBACKS_SWEEP_TASK, settings.sms_callback_sweep_seconds),
        # Expiry and redaction keep pace with the status sweep (docs/privacy.md).
        "privacy-sweep": every(PRIVACY_SWEEP_TASK, settings.sms_status_poll_seconds),
        "retention": every(RETENTION_TASK, settings.sms_retention_seconds),
    }


def celery_config(settings: Settings) -> dict[str, Any]:
    """The Celery configuration our settings give."""
    return {
        "broker_url": settings.broker_url,
        "broker_transport_options": _transport_options(settings),
        "broker_connection_retry_on_startup": True,
        "result_backend": None,
        "task_ignore_result": True,
        "task_serializer": "json",
        "accept_content": ["json"],
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        "worker_prefetch_multiplier": 1,
        "task_queues": _queues(settings),
        "task_default_queue": BULK_QUEUE,
        # RabbitMQ: queues made on the fly are quorum too; no global QoS with them; no
        # countdowns published there, so no delayed-delivery step (broker/amqp.py).
        "task_default_queue_type": "quorum" if settings.broker_kind == "amqp" else "classic",
        "worker_detect_quorum_queues": True,
        "worker_consumer": (
            "sms_pipeline.broker.amqp:Consumer"
            if settings.broker_kind == "amqp"
            else "celery.worker.consumer:Consumer"
        ),
        "task_routes": {
            CHECK_STATUS_TASK: {"queue": STATUS_QUEUE},
            CHECK_STATUSES_TASK: {"queue": STATUS_QUEUE},
            f"{STATUS_QUEUE}.*": {"queue": STATUS_QUEUE},
            "celery.chunks": {"queue": STATUS_QUEUE},
            "celery.starmap": {"queue": STATUS_QUEUE},
            STATUS_SWEEP_TASK: {"queue": MAINTENANCE_QUEUE},
            OUTBOX_SWEEP_TASK: {"queue": MAINTENANCE_QUEUE},
            QUEUE_POLL_TASK: {"queue": MAINTENANCE_QUEUE},
            REPLICATE_TASK: {"queue": MAINTENANCE_QUEUE},
            INBOUND_POLL_TASK: {"queue": MAINTENANCE_QUEUE},
            CALLBACKS_SWEEP_TASK: {"queue": MAINTENANCE_QUEUE},
            DELIVER_CALLBACK_TASK: {"queue": CALLBACKS_QUEUE},
            PRIVACY_SWEEP_TASK: {"queue": MAINTENANCE_QUEUE},
            RETENTION_TASK: {"queue": MAINTENANCE_QUEUE},
        },
        # Task events cost worker CPU on every task: off unless configured, and switched on
        # at run time by Flower (--enable_events, its default) while it watches. Arguments
        # are ids only, so nothing leaks to Flower.
        "worker_send_task_events": settings.sms_task_events,
        "task_send_sent_event": settings.sms_task_events,
        "worker_hijack_root_logger": False,
        "worker_redirect_stdouts": False,
        "beat_schedule": _beat_schedule(settings),
        "timezone": "UTC",
        "enable_utc": True,
    }


def configure(app: Celery, settings: Settings) -> None:
    """Apply settings to `app` (tests call this again with their own settings)."""
    app.conf.update(celery_config(settings))


def create_app(settings: Settings | None = None) -> Celery:
    """The app; without `settings` it reads them when its configuration is first needed
    (sending a task, starting a worker), not at import: importing this module (the CLI's
    `--help`, `celery -A sms_pipeline.celery_app`) never fails on a bad setting."""
    app = Celery("sms_pipeline", include=list(TASK_MODULES))
    if settings is not None:
        configure(app, settings)
    else:
        app.add_defaults(lambda: celery_config(get_settings()))
    return app


app = create_app()


def _refuse_demo_gateway(**_kwargs: Any) -> None:
    # Fail closed: a production worker or beat never "delivers" to the simulator. Celery
    # logs and swallows a receiver's exception, so leave with SystemExit (not swallowed).
    try:
        require_production_gateway(get_settings())
    except SettingsError as exc:
        print(f"sms-pipeline: {exc}", file=sys.stderr, flush=True)
        raise SystemExit(2) from None


# celeryd_init: the `celery worker` program only (not test workers started in-process).
signals.celeryd_init.connect(_refuse_demo_gateway, weak=False)
signals.beat_init.connect(_refuse_demo_gateway, weak=False)


def _start_heartbeat(role: str) -> Any:
    def start(**_kwargs: Any) -> None:
        # `sms_heartbeat_timestamp_seconds{role}`: the worker-gone and beat-gone alerts.
        from sms_pipeline.metrics.heartbeat import start_heartbeat

        start_heartbeat(role)

    return start


def _stop_heartbeats(**_kwargs: Any) -> None:
    from sms_pipeline.metrics.heartbeat import stop_heartbeats

    stop_heartbeats()


signals.celeryd_init.connect(_start_heartbeat("worker"), weak=False)
signals.beat_init.connect(_start_heartbeat("beat"), weak=False)
signals.worker_shutdown.connect(_stop_heartbeats, weak=False)


def _freeze_startup_objects(**_kwargs: Any) -> None:
    # Status checks went 1,567-2,017 -> 1,936-2,577/s with it, in A/B pairs.
    freeze_startup_objects()


signals.worker_ready.connect(_freeze_startup_objects, weak=False)  # the worker (threads pool)
signals.worker_process_init.connect(_freeze_startup_objects, weak=False)  # a prefork child

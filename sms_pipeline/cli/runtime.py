"""`sms-pipeline worker` and `sms-pipeline beat`: the Celery processes with our defaults."""

from __future__ import annotations

import argparse
from typing import Any

from sms_pipeline.settings import get_settings


def worker_argv(args: argparse.Namespace) -> list[str]:
    """The celery worker command line: a threads pool sized for I/O-bound gateway calls."""
    from sms_pipeline.celery_app import CALLBACKS_QUEUE

    settings = get_settings()
    callbacks_only = args.queues == CALLBACKS_QUEUE
    default_threads = (
        settings.sms_callback_concurrency if callbacks_only else settings.sms_worker_concurrency
    )
    argv = [
        "worker",
        f"--pool={args.pool}",
        f"--concurrency={args.concurrency or default_threads}",
        f"--queues={args.queues}",
        f"--loglevel={args.loglevel or settings.sms_log_level}",
    ]
    if args.hostname:
        argv.append(f"--hostname={args.hostname}")
    if settings.is_embedded_broker:
        # One machine: nobody to gossip or mingle with. Remote control and the heartbeat
        # (its event dispatcher) stay on: Flower inspects the worker and switches task
        # events on while it watches (embedded_broker.py says how its queue is cleaned).
        argv += ["--without-gossip", "--without-mingle"]
    return argv


def _worker(args: argparse.Namespace) -> int:
    from sms_pipeline.celery_app import app

    app.worker_main(worker_argv(args))
    return 0


def _beat(args: argparse.Namespace) -> int:
    from sms_pipeline.celery_app import app
    from sms_pipeline.settings import require_production_gateway

    settings = get_settings()
    require_production_gateway(settings)  # before beat's banner: one line, exit 2
    settings.sms_data_dir.mkdir(parents=True, exist_ok=True)
    schedule = args.schedule or str(settings.sms_data_dir / "celerybeat-schedule")
    app.start(["beat", f"--schedule={schedule}", f"--loglevel={args.loglevel or 'INFO'}"])
    return 0


def register(subparsers: Any) -> None:
    from sms_pipeline.celery_app import CALLBACKS_QUEUE, WORK_QUEUES

    worker = subparsers.add_parser(
        "worker",
        help="run a Celery worker (every queue but callbacks by default; run a second one "
        f"with --queues {CALLBACKS_QUEUE} for the callbacks)",
    )
    worker.add_argument(
        "--concurrency",
        type=int,
        default=None,
        help="threads (default: SMS_WORKER_CONCURRENCY; SMS_CALLBACK_CONCURRENCY for "
        f"--queues {CALLBACKS_QUEUE})",
    )
    worker.add_argument(
        "--pool",
        default="threads",
        choices=["threads", "prefork", "solo"],
        help="Celery pool; threads suit the I/O-bound gateway calls (default %(default)s)",
    )
    worker.add_argument(
        "--queues",
        default=",".join(WORK_QUEUES),
        help="comma-separated queues to consume (default %(default)s; the callbacks queue "
        "has a worker of its own, so slow receivers never hold a send's thread)",
    )
    worker.add_argument(
        "--hostname", default=None, help="node name, e.g. urgent@%%h (default: celery@host)"
    )
    worker.add_argument("--loglevel", default=None, help="log level (default SMS_LOG_LEVEL)")
    worker.set_defaults(func=_worker)

    beat = subparsers.add_parser("beat", help="run celery beat (run exactly one)")
    beat.add_argument("--schedule", default=None, help="schedule file (default: data dir)")
    beat.add_argument("--loglevel", default=None, help="log level (default INFO)")
    beat.set_defaults(func=_beat)

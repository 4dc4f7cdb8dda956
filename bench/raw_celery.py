"""The baseline: raw Celery with its defaults, nothing of ours.

A separate minimal app on the same Redis (SMS_BROKER_URL): `task_ignore_result`, no task
events, no broker priorities, no late acks, default prefetch and queue. The bench runs its
worker with the same pool and concurrency as ours and publishes `noop.delay(i)` from one
producer in a loop, as a new user would measure Celery itself.

    python -m celery -A bench.raw_celery worker --pool threads --concurrency 16
"""

from __future__ import annotations

import os

from celery import Celery

app = Celery("raw_baseline", broker=os.environ.get("SMS_BROKER_URL", "redis://127.0.0.1:6379/0"))
app.conf.task_ignore_result = True


@app.task(name="raw.noop")  # type: ignore[untyped-decorator]
def noop(i: int) -> None:
    """Nothing: Celery's own cost per task."""

"""Send task and the outbox / SQL-route periodic jobs."""

from __future__ import annotations

import uuid
from typing import Any

from sms_pipeline.celery_app import OUTBOX_SWEEP_TASK, QUEUE_POLL_TASK, SEND_TASK, app
from sms_pipeline.services import outbox, sending, sql_route


@app.task(name=SEND_TASK, bind=True, max_retries=None, acks_late=True)
def send_sms(self: Any, message_id: str) -> str:
    """One attempt; the attempt count lives in the row, so Celery's own count is unused."""
    result = sending.attempt_send(uuid.UUID(message_id))
    if result.retry_in is not None:
        raise self.retry(countdown=result.retry_in)
    return result.outcome


@app.task(name=OUTBOX_SWEEP_TASK)
def outbox_sweep() -> dict[str, int]:
    result = outbox.sweep_outbox()
    return {"released": result.released, "dispatched": result.dispatched}


@app.task(name=QUEUE_POLL_TASK)
def queue_poll() -> int:
    return sql_route.poll_queues()

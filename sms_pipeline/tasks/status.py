"""Status sweep (beat) and the per-message status check (fanned out in chunks)."""

from __future__ import annotations

import logging
import uuid

from sms_pipeline.broker.app import CHECK_STATUS_TASK, CHECK_STATUSES_TASK, STATUS_SWEEP_TASK, app
from sms_pipeline.services import status
from sms_pipeline.services.gateways import fallback

log = logging.getLogger(__name__)


@app.task(name=STATUS_SWEEP_TASK)
def status_sweep() -> dict[str, int]:
    result = status.sweep_statuses()
    # Late codes sent once more via another gateway (off unless SMS_OTP_FALLBACK_SECONDS):
    # the sweep that looks at moving messages anyway.
    try:
        copied = fallback.sweep_fallbacks().copied
    except Exception:
        log.exception("OTP fallback sweep failed; the next sweep tries again")
        copied = 0
    return {
        "terminated": result.terminated,
        "claimed": result.claimed,
        "dispatched": result.dispatched,
        "broker_messages": result.broker_messages,
        "fallbacks": copied,
    }


@app.task(name=CHECK_STATUS_TASK, acks_late=True)
def check_status(message_id: str) -> str:
    # Runs inside a chunk (celery.starmap): an exception would skip the rest of the chunk.
    # A failed check needs nothing: the sweep's lease already scheduled the next one.
    try:
        return status.check_status(uuid.UUID(message_id)).outcome.value
    except Exception:
        log.exception("status check of %s failed; the next sweep retries it", message_id)
        return "error"


@app.task(name=CHECK_STATUSES_TASK, acks_late=True)
def check_statuses(message_ids: list[str]) -> dict[str, int]:
    """A chunk of status checks, run concurrently; returns the outcome counts."""
    counts: dict[str, int] = {}
    for result in status.check_many([uuid.UUID(i) for i in message_ids]):
        counts[result.outcome.value] = counts.get(result.outcome.value, 0) + 1
    return counts

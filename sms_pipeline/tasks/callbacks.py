"""Delivery-status callbacks: the periodic sweep and one delivery attempt per task."""

from __future__ import annotations

from sms_pipeline.broker.app import CALLBACKS_SWEEP_TASK, DELIVER_CALLBACK_TASK, app
from sms_pipeline.services import callbacks


@app.task(name=CALLBACKS_SWEEP_TASK)
def callbacks_sweep() -> dict[str, int]:
    result = callbacks.sweep_callbacks()
    return {"created": result.created, "dispatched": result.dispatched}


@app.task(name=DELIVER_CALLBACK_TASK, acks_late=True)
def deliver_callback(event_id: int) -> str:
    # Retries live in the event row (next_attempt_at), not in the broker: a failed POST
    # reschedules the event and the sweep dispatches it again when it is due.
    return callbacks.deliver_event(int(event_id)).value

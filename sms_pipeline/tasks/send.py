"""Send tasks (a queue class's drain) and the outbox / SQL-route jobs."""

from __future__ import annotations

import logging
from typing import Any

from celery import signals

from sms_pipeline.broker.app import (
    OUTBOX_SWEEP_TASK,
    QUEUE_POLL_TASK,
    SEND_DUE_TASK,
    app,
)
from sms_pipeline.broker.dispatch import QueueClass
from sms_pipeline.services import outbox, sending
from sms_pipeline.services.intake import sql_route
from sms_pipeline.settings import get_settings

log = logging.getLogger(__name__)


# Acked when it starts, unlike every other task: a kick carries no work of its own (the
# rows and their leases are the work), and a drain can run for seconds, so a late ack
# would keep it in Redis' unacked hash all that time, to be redelivered as a duplicate
# drain after the visibility timeout or restored when the broker connection drops. A kick
# lost with a killed worker is replaced: its flag expires (SMS_KICK_TTL_SECONDS) and the
# outbox sweeper releases the dead claims and kicks again.
@app.task(name=SEND_DUE_TASK, acks_late=False)
def send_due(queue_class: str) -> dict[str, int]:
    """Drain every due message of one queue class; returns the outcome counts."""
    result = sending.drain(QueueClass(queue_class))
    return {"batches": result.batches, "claimed": result.claimed, **result.outcomes}


@app.task(name=OUTBOX_SWEEP_TASK)
def outbox_sweep() -> dict[str, int]:
    result = outbox.sweep_outbox()
    return {"released": result.released, "dispatched": result.dispatched}


@app.task(name=QUEUE_POLL_TASK)
def queue_poll() -> int:
    return sql_route.poll_queues()


def _name_refused_credentials(**_kwargs: Any) -> None:
    # One ERROR line per account or gateway whose password cannot be found: those messages
    # wait (never sent with another login); the worker serves everyone else.
    try:
        from sms_pipeline.db import get_engine
        from sms_pipeline.services.gateways import credential_problems

        with get_engine(get_settings()).connect() as conn:
            problems = credential_problems(conn, get_settings())
    except Exception:
        log.warning("could not check the gateways' credentials", exc_info=True)
        return
    for problem in problems:
        logging.getLogger("sms_pipeline.gateways").error("REFUSED %s", problem)


# The worker imports this module at start (TASK_MODULES), before it is ready.
signals.worker_ready.connect(_name_refused_credentials, weak=False)

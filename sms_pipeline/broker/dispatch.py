"""The dispatch port: the only code that publishes to Celery.

Services call these functions after their rows commit; they never import the Celery app.
Every function publishes its whole batch through one producer (one pooled broker
connection) and carries ids only (or a queue class name), never a number or a body.

Sends are *kicks*: a `send_due` task for a queue class (urgent or bulk) drains every due
message of that class from the database, in priority order, in batches. A producer
publishes a kick only when none is pending for the class: a Redis flag set with
`SET NX PX` says one is. The drain deletes the flag when it finds nothing left, waits
`RELEASE_WAIT_SECONDS` and claims once more, so a row committed by a producer whose
`SET NX` failed is always seen (it committed before the flag was deleted).

A producer that found the flag set trusts it for `FLAG_TRUST_SECONDS` without asking Redis
again (a round trip on every enqueue saved): its row commits within that
time of a moment the flag certainly existed, and the drain's last claim comes at least
`RELEASE_WAIT_SECONDS` (more than the trust) after the deletion, so it still sees the
row. Both are durations on each process's own monotonic clock. The flag's TTL and the
outbox sweeper cover a lost kick. The flag lives in the shared Redis (`SMS_REDIS_URL`, or
the broker's Redis, Sentinel included); without one (the embedded broker, RabbitMQ without
`SMS_REDIS_URL`) every producer publishes its kick.

On a broker that holds no countdowns (RabbitMQ: `Settings.broker_holds_countdowns`) a
delayed kick is not published: the row's `due_at` is the delay and the sweeper kicks it.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from sms_pipeline.db.models import URGENT_TYPES, QueueClass, queue_class_of, types_of
from sms_pipeline.settings import Settings, get_settings

log = logging.getLogger(__name__)


def _app() -> Any:
    from sms_pipeline.broker.app import app

    return app


# --- the pending-kick flag -------------------------------------------------------------

# Long enough that a steady producer asks Redis on few calls: at 0.01 s a producer calling
# every 2-5 ms per class asked on every second to fifth call, and half of a single API
# client's requests paid the round trip (their p50 fell between the two). The cost: a
# drain that empties its queue waits RELEASE_WAIT_SECONDS before its last claim, and a row
# committed in that wait is claimed at its end.
FLAG_TRUST_SECONDS = 0.05
# More than the trust: the margin covers the time between a producer's commit returning
# and its reading the clock (reading it later only shortens what the producer trusts).
RELEASE_WAIT_SECONDS = 0.065
_clock: Callable[[], float] = time.monotonic
# Per queue class: when this process last found the flag set (its clock, read before asking).
_flag_seen: dict[QueueClass, float] = {}


def _flag_client(settings: Settings) -> Any | None:
    """A Redis client on the shared Redis (SMS_REDIS_URL or the broker's, Sentinel-aware),
    or None (no Redis: every producer publishes its kick)."""
    from sms_pipeline.broker import redis_store

    return redis_store.client(settings)


def flag_key(queue_class: QueueClass) -> str:
    return f"sms_pipeline:kick:{queue_class.value}"


def _take_flag(queue_class: QueueClass, settings: Settings) -> bool:
    """True when this caller must publish the kick (no kick pending, or no flag at all)."""
    client = _flag_client(settings)
    if client is None:
        return True
    asked_at = _clock()
    seen = _flag_seen.get(queue_class)
    if seen is not None and asked_at - seen < FLAG_TRUST_SECONDS:
        return False  # set a moment ago: the drain's last claim will see this row
    try:
        ttl = int(settings.sms_kick_ttl_seconds * 1000)
        taken = bool(client.set(flag_key(queue_class), b"1", nx=True, px=ttl))
    except Exception:
        log.warning("kick flag unavailable; publishing the kick anyway")
        return True
    # Set by us or by another: either way it existed from `asked_at` on until a deletion.
    _flag_seen[queue_class] = asked_at
    return taken


def release_kick(
    queue_class: QueueClass,
    settings: Settings | None = None,
    *,
    sleep: Callable[[float], None] = time.sleep,
) -> None:
    """The drain found its queue empty: clear the flag, then wait until no producer still
    trusts having seen it. The caller's next claim sees every row a producer committed
    without publishing a kick of its own."""
    clear_kick(queue_class, settings)
    sleep(RELEASE_WAIT_SECONDS)


def clear_kick(queue_class: QueueClass, settings: Settings | None = None) -> None:
    """No drain is running for the class any more: the next producer publishes a fresh kick
    (after a failed publish or drain; a drain that emptied its queue uses release_kick)."""
    _flag_seen.pop(queue_class, None)  # this process no longer relies on it either
    client = _flag_client(settings or get_settings())
    if client is None:
        return
    try:
        client.delete(flag_key(queue_class))
    except Exception:
        log.warning("kick flag not cleared; it expires on its own")


# --- publishing ------------------------------------------------------------------------


def kick(
    queue_classes: Iterable[QueueClass],
    *,
    countdown: float | None = None,
    force: bool = False,
    settings: Settings | None = None,
) -> int:
    """Publish a `send_due` kick for each class unless one is pending; returns how many.

    `force` (the sweeper, a retry's countdown) publishes regardless of the flag: a second
    drain running at the same time is harmless (claims skip locked rows). A publish that
    fails is logged: the rows are committed and the outbox sweeper kicks again.
    """
    from sms_pipeline.broker.app import SEND_DUE_TASK

    settings = settings or get_settings()
    if countdown and countdown > 0 and not settings.broker_holds_countdowns:
        return 0  # the delay lives in the row's due_at: the outbox sweeper kicks it
    wanted = [
        q for q in dict.fromkeys(queue_classes) if force or countdown or _take_flag(q, settings)
    ]
    if not wanted:
        return 0
    app = _app()
    sent = 0
    try:
        with app.producer_or_acquire() as producer:
            for q in wanted:
                app.send_task(
                    SEND_DUE_TASK,
                    args=[q.value],
                    queue=q.value,
                    countdown=countdown if countdown and countdown > 0 else None,
                    producer=producer,
                )
                sent += 1
    except Exception:  # no broker: the committed rows wait for the outbox sweeper
        log.warning("send kick failed (broker unavailable); the outbox sweeper will retry")
        for q in wanted[sent:]:
            clear_kick(q, settings)
    return sent


def status_checks(ids: Sequence[uuid.UUID], chunk_size: int, expires: float) -> int:
    """Publish status checks for `ids`, `chunk_size` ids per broker message; returns how many.

    Each message is one `check_statuses` task whose checks run concurrently in the worker.
    A chunk still queued after `expires` seconds is dropped (its rows are due again).
    """
    from sms_pipeline.broker.app import CHECK_STATUSES_TASK, STATUS_QUEUE

    if not ids:
        return 0
    app = _app()
    messages = 0
    with app.producer_or_acquire() as producer:
        for start in range(0, len(ids), chunk_size):
            chunk = [str(i) for i in ids[start : start + chunk_size]]
            app.send_task(
                CHECK_STATUSES_TASK,
                args=[chunk],
                queue=STATUS_QUEUE,
                expires=expires,
                producer=producer,
            )
            messages += 1
    return messages


def callback_deliveries(event_ids: Sequence[int], expires: float) -> int:
    """Publish one delivery task per callback event id; returns how many were published."""
    from sms_pipeline.broker.app import CALLBACKS_QUEUE, DELIVER_CALLBACK_TASK

    if not event_ids:
        return 0
    app = _app()
    sent = 0
    try:
        with app.producer_or_acquire() as producer:
            for event_id in event_ids:
                try:
                    app.send_task(
                        DELIVER_CALLBACK_TASK,
                        args=[event_id],
                        queue=CALLBACKS_QUEUE,
                        expires=expires,
                        producer=producer,
                    )
                    sent += 1
                except Exception:  # the broker is down: the next sweep dispatches again
                    log.warning("callbacks: dispatch of event %s failed", event_id)
    except Exception:
        log.warning("callbacks: no broker connection; the next sweep dispatches again")
    return sent


__all__ = [
    "URGENT_TYPES",
    "QueueClass",
    "callback_deliveries",
    "clear_kick",
    "kick",
    "queue_class_of",
    "release_kick",
    "status_checks",
    "types_of",
]

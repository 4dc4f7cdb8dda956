"""Draining a queue class: batch after batch until none is left, then the kick released."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

from sms_pipeline.broker import dispatch
from sms_pipeline.gateway import (
    IP2SMSClient,
)
from sms_pipeline.services.sending.batch import send_batch
from sms_pipeline.services.sending.results import BatchResult
from sms_pipeline.services.sending.scope import _database
from sms_pipeline.settings import Settings, get_settings


@dataclass
class DrainResult:
    batches: int = 0
    claimed: int = 0
    outcomes: dict[str, int] = field(default_factory=dict)

    def add(self, batch: BatchResult) -> None:
        self.batches += 1
        self.claimed += batch.claimed
        for key, n in batch.counts().items():
            self.outcomes[key] = self.outcomes.get(key, 0) + n


def drain(
    queue_class: dispatch.QueueClass,
    *,
    settings: Settings | None = None,
    client: IP2SMSClient | None = None,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> DrainResult:
    """Send every due message of `queue_class`, batch after batch, until none is left.

    When a claim finds nothing, the pending-kick flag is released and the queue is claimed
    once more: a producer that relied on the flag committed its row before the release
    ended (`dispatch.release_kick`), so that last claim sees it. After
    SMS_DRAIN_MAX_SECONDS the drain hands over to a fresh kick (published regardless of
    the flag) and returns.
    """
    settings = settings or get_settings()
    result = DrainResult()
    started = clock()
    cleared = False
    linger = settings.sms_drain_linger_ms / 1000.0
    try:
        with _database(settings) as db:
            while True:
                batch = send_batch(queue_class=queue_class, settings=settings, client=client, db=db)
                result.add(batch)
                if batch.claimed:
                    if clock() - started > settings.sms_drain_max_seconds:
                        dispatch.kick([queue_class], force=True, settings=settings)
                        break
                    if batch.claimed < settings.sms_send_batch_size and linger:
                        # A part-full batch: let a trickle of new messages gather into
                        # the next one instead of paying a batch per message.
                        sleep(linger)
                    continue
                if cleared:
                    break
                dispatch.release_kick(queue_class, settings, sleep=sleep)
                cleared = True
    except BaseException:
        # The next producer publishes a fresh kick (the sweeper covers a lost one too).
        dispatch.clear_kick(queue_class, settings)
        raise
    return result

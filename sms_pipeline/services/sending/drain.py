"""Draining a queue class through the send window until none is left, then the kick released."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from sms_pipeline.broker import dispatch
from sms_pipeline.gateway import (
    IP2SMSClient,
)
from sms_pipeline.services.sending.results import BatchResult
from sms_pipeline.services.sending.scope import _database, _Scope
from sms_pipeline.services.sending.window import Window
from sms_pipeline.settings import Settings, get_settings

log = logging.getLogger(__name__)

# A trickle's claims wait at most this for a gateway round trip (a slow gateway does not
# slow a trickle's claims further; the healthy codes' target is 2 s end to end).
MAX_PACE = 0.25


@dataclass
class DrainResult:
    batches: int = 0  # claims that claimed something
    claimed: int = 0
    outcomes: dict[str, int] = field(default_factory=dict)

    def add(
        self, batch: BatchResult, claims: int = 1, counts: dict[str, int] | None = None
    ) -> None:
        self.batches += claims
        self.claimed += batch.claimed
        for key, n in (batch.counts() if counts is None else counts).items():
            self.outcomes[key] = self.outcomes.get(key, 0) + n


def _linger_ms(queue_class: dispatch.QueueClass, settings: Settings) -> float:
    if queue_class is dispatch.QueueClass.BULK:
        return settings.sms_drain_linger_bulk_ms
    return settings.sms_drain_linger_ms


def drain(
    queue_class: dispatch.QueueClass,
    *,
    settings: Settings | None = None,
    client: IP2SMSClient | None = None,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> DrainResult:
    """Send every due message of `queue_class` through a window of SMS_SEND_WINDOW requests
    in flight, until none is left.

    The window claims again once a quarter of it is free (or it is empty); a claim that
    finds fewer than it asked for waits SMS_DRAIN_LINGER_MS (bulk: SMS_DRAIN_LINGER_BULK_MS)
    plus the gateway's recent latency (MAX_PACE at most) before the next, and answers are
    recorded as one group per that pace, so a trickle gathers instead of paying statements
    (and commits) per message. When a claim
    finds nothing and nothing is in flight, the pending-kick flag is released and the queue
    is claimed once more: a producer that relied on the flag committed its row before the
    release ended (`dispatch.release_kick`), so that last claim sees it. After
    SMS_DRAIN_MAX_SECONDS the drain hands over to a fresh kick (published regardless of the
    flag), claims no more, records what is in flight and returns.
    """
    settings = settings or get_settings()
    result = DrainResult()
    started = clock()
    cleared = False
    linger = _linger_ms(queue_class, settings) / 1000.0
    poll = linger or 0.005  # a claim that found nothing is not repeated in a busy loop
    refill = max(1, settings.sms_send_window // 4)
    pace = linger
    backlog = False  # the last claim took every free slot: more is waiting
    window: Window | None = None
    try:
        with _database(settings) as db:
            window = Window(
                _Scope(queue_class, None), settings.sms_send_window, settings, db, client
            )
            handing_over = False
            next_claim = 0.0
            while True:
                now = clock()
                if not handing_over and now - started > settings.sms_drain_max_seconds:
                    dispatch.kick([queue_class], force=True, settings=settings)
                    handing_over = True
                claimed: int | None = None
                free = window.free
                if (
                    not handing_over
                    and now >= next_claim
                    and (free >= refill or (free and not window.flights))
                ):
                    claimed = window.fill(free)
                    pace = linger
                    if claimed < free:
                        # The queue ran dry: a trickle. The next claim (and record) waits a
                        # gateway round trip on top of the linger, as a batch did, so a
                        # trickle pays its statements per round trip, not per message.
                        pace += min(window.latency, MAX_PACE)
                    next_claim = now + pace if claimed < free else 0.0
                    backlog = claimed == free
                if window.flights:
                    # Answers gather into one group per pace at most; with a backlog, a
                    # group of a refill's size is recorded and its slots claimed again.
                    window.collect(
                        None if handing_over else poll,
                        gather=pace,
                        enough=refill if backlog and not handing_over else None,
                    )
                    continue
                window.record()  # what the rules held back, nothing in flight
                if handing_over:
                    break
                if claimed is None:  # lingering after a part-full claim
                    sleep(max(0.0, next_claim - clock()))
                    next_claim = 0.0
                    continue
                if claimed:
                    continue
                if cleared:
                    break
                dispatch.release_kick(queue_class, settings, sleep=sleep)
                cleared = True
                next_claim = 0.0
    except BaseException:
        # The next producer publishes a fresh kick (the sweeper covers a lost one too).
        dispatch.clear_kick(queue_class, settings)
        raise
    finally:
        if window is not None:
            result.add(window.result, window.claims, window.counts)
    if result.claimed:
        log.info(
            "send drain of %s: %d claims, %s",
            queue_class.value,
            result.batches,
            ", ".join(f"{n} {k}" for k, n in sorted(result.outcomes.items())),
        )
    return result

"""What a send attempt and a batch came to; the retry delay and the database retry."""

from __future__ import annotations

import datetime as dt
import enum
import random
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TypeVar

from sqlalchemy.exc import OperationalError

from sms_pipeline.db.models import SendStatus
from sms_pipeline.settings import Settings

T = TypeVar("T")


# A message due this early (a countdown kick racing the clock) is still claimed.
EARLY_TOLERANCE = dt.timedelta(seconds=1)


class Outcome(enum.StrEnum):
    """What one send attempt did to a message."""

    SUBMITTED = "submitted"  # the gateway took it (or had taken it: uniq_key dupe)
    RETRY = "retry"  # a transient failure: queued again after a backoff
    REJECTED = "rejected"  # refused for good
    EXHAUSTED = "exhausted"  # the last attempt failed: RETRYCOUNT EXCEEDED
    DEFERRED = "deferred"  # not sent now (window, pause, credits, rate limit): waits
    SKIPPED = "skipped"  # nothing to do (not waiting, not due, claimed elsewhere)
    OPTED_OUT = "opted_out"  # the number opted out: final, never sent
    EXPIRED = "expired"  # not submitted before its expires_at: final, never sent
    SUPERSEDED = "superseded"  # a newer code to the number replaced it: final, never sent

    @property
    def is_final_failure(self) -> bool:
        return self in (Outcome.REJECTED, Outcome.EXHAUSTED)


# The outcome of a message `privacy.end_unsendable` ended instead of sending it.
_ENDED = {SendStatus.EXPIRED: Outcome.EXPIRED, SendStatus.SUPERSEDED: Outcome.SUPERSEDED}


@dataclass(frozen=True)
class AttemptResult:
    """What a send attempt did to one message; `retry_in` says when it is due again."""

    outcome: Outcome
    retry_in: float | None = None
    detail: str | None = None


@dataclass
class BatchResult:
    """One batch: the messages it claimed and what happened to each message it touched."""

    claimed: int = 0
    results: dict[uuid.UUID, AttemptResult] = field(default_factory=dict)

    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for result in self.results.values():
            out[result.outcome.value] = out.get(result.outcome.value, 0) + 1
        return out


def retry_delay(attempt: int, settings: Settings) -> float:
    """Exponential backoff (base x 2^(attempt-1), capped) with jitter over its upper half."""
    cap = int(settings.sms_retry_backoff_max_seconds)
    delay = max(0.0, min(cap, settings.sms_retry_backoff_seconds * 2 ** (attempt - 1)))
    return float(delay) * random.uniform(0.5, 1.0)


def with_db_retry(fn: Callable[[], T], *, tries: int = 6) -> T:
    """Run a short transaction again while the database is briefly unreachable.

    Recording an outcome after the gateway answered is worth a few seconds of waiting:
    losing it would mean a second submission (refused by uniq_key, but with the
    gateway id lost).
    """
    for attempt in range(tries):
        try:
            return fn()
        except OperationalError:
            if attempt == tries - 1:
                raise
            time.sleep(min(8.0, 0.5 * 2**attempt))
    raise AssertionError("unreachable")

"""The pure rules of status polling: which answers move a message, and when to ask again."""

from __future__ import annotations

import datetime as dt
import enum
import logging
from collections.abc import Sequence

from sms_pipeline.gateway import GatewayStatus, StatusResult
from sms_pipeline.settings import Settings

log = logging.getLogger(__name__)

# How far along its way a status says a message is. Unknown tells nothing, so it ranks
# with Accepted: Enroute -> Unknown would lose information and is treated as backwards.
_RANK: dict[GatewayStatus, int] = {
    GatewayStatus.ACCEPTED: 0,
    GatewayStatus.UNKNOWN: 0,
    GatewayStatus.PENDING: 1,
    GatewayStatus.ENROUTE: 1,
}
_FINAL_RANK = 2


def status_rank(status: GatewayStatus) -> int:
    return _FINAL_RANK if status.is_final else _RANK[status]


class Transition(enum.StrEnum):
    """What a status answer means for a message whose stored status is `old`."""

    UNCHANGED = "unchanged"  # same status: no write at all
    FORWARD = "forward"  # write it
    BACKWARDS = "backwards"  # e.g. Enroute -> Accepted, Delivered -> Enroute: ignored, counted
    LOCKED = "locked"  # the stored status is final: never overwritten


def classify_transition(old: GatewayStatus, new: GatewayStatus) -> Transition:
    if old == new:
        return Transition.UNCHANGED
    if old.is_final:
        return Transition.BACKWARDS if status_rank(new) < _FINAL_RANK else Transition.LOCKED
    if status_rank(new) < status_rank(old):
        return Transition.BACKWARDS
    # Same rank, different word (Accepted <-> Unknown, Enroute <-> Pending): the gateway's
    # newer word wins; it is still moving either way.
    return Transition.FORWARD


def check_delay_seconds(status_checks: int, backoff: Sequence[int]) -> int:
    """Seconds until the next check of a message already checked `status_checks` times."""
    if not backoff:
        raise ValueError("the backoff schedule needs at least one step")
    return backoff[min(max(status_checks, 0), len(backoff) - 1)]


def deadline_of(
    submitted_at: dt.datetime | None, inserted_at: dt.datetime, settings: Settings
) -> dt.datetime:
    """When a message still moving may become Terminated (after one more check)."""
    return (submitted_at or inserted_at) + dt.timedelta(
        seconds=settings.sms_terminate_after_seconds
    )


def first_check_at(submitted_at: dt.datetime, settings: Settings) -> dt.datetime:
    """When a message submitted at `submitted_at` is first asked about.

    SMS_STATUS_FIRST_CHECK_SECONDS after submission, never later than the first backoff
    step, and never after the Terminated deadline (so a timeout shorter than the first
    step still gets its check at the deadline).
    """
    step = min(settings.sms_status_first_check_seconds, settings.sms_status_check_backoff[0])
    return min(
        submitted_at + dt.timedelta(seconds=step),
        deadline_of(submitted_at, submitted_at, settings),
    )


def next_check_time(
    now: dt.datetime, status_checks: int, deadline: dt.datetime, backoff: Sequence[int]
) -> dt.datetime:
    """The next check of a message claimed at `now` after `status_checks` earlier claims:
    one backoff step on, clamped to the deadline while the deadline is still ahead."""
    following = now + dt.timedelta(seconds=check_delay_seconds(status_checks, backoff))
    return deadline if now < deadline < following else following


def checked_after_deadline(last_checked_at: dt.datetime | None, deadline: dt.datetime) -> bool:
    """The Terminated rule's fact: the gateway answered a request sent at/after the deadline."""
    return last_checked_at is not None and last_checked_at >= deadline


def status_date(result: StatusResult, checked_at: dt.datetime, message_id: object) -> dt.datetime:
    """The gateway's date in UTC; the check time (logged) when it is missing or garbage."""
    if result.date is not None:
        return result.date.astimezone(dt.UTC)
    log.warning(
        "message %s: gateway status date %r is unreadable; using the check time",
        message_id,
        (result.date_raw or "")[:64],
    )
    return checked_at

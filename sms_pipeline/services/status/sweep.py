"""The status sweep (beat): Terminated, then claim due checks and fan them out."""

from __future__ import annotations

import concurrent.futures
import datetime as dt
import logging
import uuid
from collections.abc import Sequence
from dataclasses import dataclass

from sms_pipeline.broker import dispatch
from sms_pipeline.db import session_scope
from sms_pipeline.db.models import utcnow
from sms_pipeline.services.status.checks import check_status
from sms_pipeline.services.status.claims import claim_due_checks
from sms_pipeline.services.status.outcomes import CheckResult
from sms_pipeline.services.status.terminate import give_up_failing, terminate_overdue
from sms_pipeline.settings import Settings, get_settings

log = logging.getLogger(__name__)


def fan_out(ids: Sequence[uuid.UUID], settings: Settings) -> int:
    """Publish status checks for `ids`, SMS_STATUS_CHUNK_SIZE per broker message."""
    # A chunk still queued after the longest backoff step is dropped: by then its rows
    # have come due again and a later sweep has claimed them afresh.
    return dispatch.status_checks(
        ids, settings.sms_status_chunk_size, float(max(settings.sms_status_check_backoff))
    )


def check_inline(
    ids: Sequence[uuid.UUID],
    settings: Settings,
    *,
    threads: int = 8,
    now: dt.datetime | None = None,
) -> list[CheckResult]:
    """Run the checks in this process (CLI `sweep --once`, tests) instead of via the broker.

    `now` (tests) is the time the checks are recorded as asked; by default each its own."""
    if not ids:
        return []
    workers = max(1, min(threads, len(ids)))
    with concurrent.futures.ThreadPoolExecutor(workers, thread_name_prefix="status") as pool:
        return list(pool.map(lambda i: check_status(i, settings=settings, now=now), ids))


@dataclass(frozen=True)
class SweepResult:
    terminated: int
    claimed: int
    dispatched: int  # messages whose check was published (or run, inline)
    broker_messages: int
    checks: tuple[CheckResult, ...] = ()  # inline only


def sweep_statuses(
    settings: Settings | None = None,
    *,
    inline: bool = False,
    now: dt.datetime | None = None,
    limit: int | None = None,
) -> SweepResult:
    """One status sweep: Terminated first, then claim due messages and fan out their checks.

    With `inline`, the claimed messages are checked in this process rather than via the
    broker. A failed publish loses nothing: the claimed rows come due again after their
    backoff step.
    """
    settings = settings or get_settings()
    clock_given = now is not None
    now = now or utcnow()
    with session_scope(settings) as session:
        terminated = terminate_overdue(session, now, settings)
    with session_scope(settings) as session:
        given_up = give_up_failing(session, now, settings)
    if given_up:
        log.warning(
            "status sweep: %d messages Terminated after %d s of failed status checks",
            given_up,
            settings.status_give_up_seconds,
        )
    terminated += given_up
    if terminated:
        log.info(
            "status sweep: %d messages Terminated after %d s",
            terminated,
            settings.sms_terminate_after_seconds,
        )
    with session_scope(settings) as session:
        claimed = claim_due_checks(session, now, settings, limit=limit)
    # Without a gateway id there is nothing to ask; the claim still pushed their next look
    # out, and Terminated ends them.
    pollable = [c.id for c in claimed if c.gateway_id]
    if inline:
        checks = check_inline(pollable, settings, now=now if clock_given else None)
        return SweepResult(terminated, len(claimed), len(pollable), 0, tuple(checks))
    try:
        messages = fan_out(pollable, settings)
    except Exception as exc:
        log.warning(
            "status sweep: publishing %d checks failed (%s); they come due again",
            len(pollable),
            type(exc).__name__,
        )
        return SweepResult(terminated, len(claimed), 0, 0)
    if pollable:
        log.info("status sweep: %d checks in %d broker messages", len(pollable), messages)
    return SweepResult(terminated, len(claimed), len(pollable), messages)


__all__ = ["SweepResult", "check_inline", "fan_out", "sweep_statuses"]

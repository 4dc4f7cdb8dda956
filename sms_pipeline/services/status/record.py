"""Recording status answers: what each answer means for its row, written conditionally.

An answer that moves the message forward is a compare-and-set on the status read before
asking, so a late or repeated check can neither overwrite a final status (Terminated
meanwhile) nor undo a newer answer. Any other answer only records when the gateway was
asked (`last_checked_at`, never moved backwards; `updated_at` kept: a look is not a
change). A failed check writes nothing: the sweep's lease already scheduled the next one.

PostgreSQL records a whole chunk in one UPDATE joined to the answers unnested from arrays
(one round trip, one compiled statement whatever the chunk size); SQLite, which has no
arrays, runs the same rules one row at a time inside the caller's transaction.
"""

from __future__ import annotations

import datetime as dt
import functools
import logging
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, cast

from sqlalchemy import (
    Boolean,
    Connection,
    String,
    Table,
    Update,
    Uuid,
    and_,
    bindparam,
    case,
    column,
    func,
    or_,
    update,
)

from sms_pipeline.db import affected, array_param, takes_arrays
from sms_pipeline.db.models import MOVING_STATUS_VALUES, SmsLog, UTCDateTime
from sms_pipeline.gateway import GatewayError, GatewayStatus, StatusResult
from sms_pipeline.metrics import hooks as metrics
from sms_pipeline.services.status.outcomes import CheckOutcome, CheckResult
from sms_pipeline.services.status.rules import Transition, classify_transition, status_date

log = logging.getLogger(__name__)

_LOG = cast(Table, SmsLog.__table__)
Answer = StatusResult | GatewayError


@dataclass(frozen=True, slots=True)
class Asked:
    """One message the gateway was asked about: its row as read before asking, the answer."""

    message_id: uuid.UUID
    row: Any  # gateway_id, gateway_status, type, submitted_at, inserted_at (checks.read_rows)
    answer: Answer


@dataclass(frozen=True, slots=True)
class _Write:
    asked: Asked
    stored: str  # the status read before asking: the compare-and-set's expected value
    status: str | None  # the forward status to write; None: only when we asked
    changed_at: dt.datetime | None
    final: bool
    result: CheckResult  # what the check did once the write lands
    error: str | None = None  # the answer's `state error`, kept as a send answer's is


def _state_error(answer: StatusResult) -> str | None:
    """`<state error="...">` of a status answer as last_error (like a send answer's)."""
    if not answer.error:
        return None
    return f"{answer.status.value}: {answer.error}"[:500]


@dataclass(frozen=True, slots=True)
class _Failed:
    """A check with no usable answer: counted on the row (the give-up rule's facts)."""

    message_id: uuid.UUID
    reason: str
    stored: str | None


def record_answers(
    conn: Connection, answers: Sequence[Asked], asked_at: dt.datetime
) -> list[CheckResult]:
    """Write what each answer means; one CheckResult per answer, in order.

    `asked_at` is when the requests went out: the `last_checked_at` the Terminated rule
    reads. Runs on `conn` (one statement on PostgreSQL, the rows one by one on SQLite).
    A failed check is counted on its row (`status_failures`, `status_failing_since`,
    `status_failure`); a usable answer resets those.
    """
    decided = [_decide(a, asked_at) for a in answers]
    writes = [d for d in decided if isinstance(d, _Write)]
    failed = [d for d in decided if isinstance(d, _Failed)]
    if not writes:
        landed: set[uuid.UUID] = set()
    elif takes_arrays(conn):
        landed = _write_all(conn, writes, asked_at)
    else:
        landed = _write_each(conn, writes, asked_at)
    if failed:
        _count_failures(conn, failed, asked_at)
    results: list[CheckResult] = []
    changes: list[metrics.StatusChange] = []
    for d in decided:
        if isinstance(d, _Write):
            results.append(_settle(d, landed, changes))
        elif isinstance(d, _Failed):
            results.append(CheckResult(d.message_id, CheckOutcome.GATEWAY_ERROR, d.stored))
        else:
            results.append(d)
    metrics.statuses_changed(changes)
    return results


def _count_failures(conn: Connection, failed: Sequence[_Failed], asked_at: dt.datetime) -> None:
    """One statement per distinct reason: the failure counted, its first time kept, unless a
    usable answer to a later request was recorded meanwhile (that one wins)."""
    by_reason: dict[str, list[uuid.UUID]] = {}
    for f in failed:
        by_reason.setdefault(f.reason, []).append(f.message_id)
    for reason, ids in by_reason.items():
        conn.execute(
            _failure_statement(),
            {"b_ids": sorted(ids), "b_asked": asked_at, "b_reason": reason},
        )


@functools.cache
def _failure_statement() -> Update:
    c = _LOG.c
    asked = bindparam("b_asked", type_=UTCDateTime())
    return (
        update(_LOG)
        .where(
            c.id.in_(bindparam("b_ids", expanding=True)),
            c.gateway_status.in_(MOVING_STATUS_VALUES),
            or_(c.last_checked_at.is_(None), c.last_checked_at < asked),
        )
        .values(
            status_failures=c.status_failures + 1,
            status_failing_since=func.coalesce(c.status_failing_since, asked),
            status_failure=bindparam("b_reason"),
            updated_at=c.updated_at,  # a failed look is not a change
        )
    )


def _reset_failures() -> dict[str, Any]:
    """The SET part that clears the failure facts once a usable answer is recorded (not one
    to a request older than the first failure: a later failure still stands)."""
    c = _LOG.c
    asked = bindparam("b_asked", type_=UTCDateTime())
    fresh = or_(c.status_failing_since.is_(None), c.status_failing_since <= asked)
    return {
        "status_failures": _when(fresh, 0, c.status_failures),
        "status_failing_since": _when(fresh, None, c.status_failing_since),
        "status_failure": _when(fresh, None, c.status_failure),
    }


def _decide(asked: Asked, asked_at: dt.datetime) -> CheckResult | _Write | _Failed:
    """What one answer asks to be written (nothing for a failed check)."""
    message_id, stored = asked.message_id, asked.row.gateway_status
    answer = asked.answer
    if isinstance(answer, GatewayError):
        log.warning(
            "message %s: status check failed (%s); next sweep retries", message_id, answer.reason
        )
        return _Failed(message_id, answer.reason[:200], stored)
    old, new = GatewayStatus(stored), answer.status
    transition = classify_transition(old, new)
    if transition is Transition.FORWARD:
        return _Write(
            asked,
            stored,
            new.value,
            status_date(answer, asked_at, message_id),
            new.is_final,
            CheckResult(message_id, CheckOutcome.CHANGED, stored, new.value),
            _state_error(answer),
        )
    if transition is Transition.UNCHANGED:
        outcome = CheckOutcome.UNCHANGED
    else:
        outcome = CheckOutcome.BACKWARDS
        log.warning(
            "message %s: gateway status went backwards %s -> %s; ignored",
            message_id,
            old.value,
            new.value,
        )
        metrics.status_went_backwards(asked.row.type, old.value)
    return _Write(
        asked, stored, None, None, False, CheckResult(message_id, outcome, stored, new.value)
    )


def _settle(
    write: _Write, landed: set[uuid.UUID], changes: list[metrics.StatusChange]
) -> CheckResult:
    """The check's result once written; a forward change is counted once, when it landed
    (added to `changes`, whose metrics are recorded together)."""
    result = write.result
    if write.status is None:
        return result  # a look: its outcome does not depend on the write
    if result.message_id not in landed:
        return CheckResult(result.message_id, CheckOutcome.LOST_RACE, write.stored, write.status)
    row = write.asked.row
    log.debug("message %s: %s -> %s", result.message_id, write.stored, write.status)
    changes.append(
        metrics.StatusChange(
            row.type, write.status, row.submitted_at, write.changed_at, row.inserted_at
        )
    )
    return result


def _not_before(column: Any, moment: Any) -> Any:
    """`moment`, unless `column` already holds a later one (a later check recorded it)."""
    return case((or_(column.is_(None), column < moment), moment), else_=column)


# --- SQLite: one row at a time -------------------------------------------------------------


@functools.cache
def _looked_statement() -> Update:
    # A look is not a change: only last_checked_at moves (never backwards), updated_at stays.
    return (
        update(_LOG)
        .where(
            _LOG.c.id == bindparam("b_id"),
            or_(_LOG.c.last_checked_at.is_(None), _LOG.c.last_checked_at < bindparam("b_asked")),
        )
        .values(
            last_checked_at=bindparam("b_asked"),
            updated_at=_LOG.c.updated_at,
            **_reset_failures(),
        )
    )


@functools.cache
def _change_statement(final: bool) -> Update:
    statement = (
        update(_LOG)
        .where(_LOG.c.id == bindparam("b_id"), _LOG.c.gateway_status == bindparam("b_stored"))
        .values(
            gateway_status=bindparam("b_status"),
            status_changed_at=bindparam("b_changed"),
            updated_at=bindparam("b_asked"),
            last_checked_at=_not_before(_LOG.c.last_checked_at, bindparam("b_asked")),
            last_error=func.coalesce(bindparam("b_error", type_=String()), _LOG.c.last_error),
            **_reset_failures(),
        )
    )
    if final:
        statement = statement.values(final_at=bindparam("b_asked"), next_check_at=None)
    return statement


def _write_each(
    conn: Connection, writes: Sequence[_Write], asked_at: dt.datetime
) -> set[uuid.UUID]:
    """The messages whose forward change was written."""
    landed: set[uuid.UUID] = set()
    for w in writes:
        message_id = w.asked.message_id
        if w.status is None:
            conn.execute(_looked_statement(), {"b_id": message_id, "b_asked": asked_at})
            continue
        params = {
            "b_id": message_id,
            "b_stored": w.stored,
            "b_status": w.status,
            "b_changed": w.changed_at,
            "b_asked": asked_at,
            "b_error": w.error,
        }
        if affected(conn.execute(_change_statement(w.final), params)):
            landed.add(message_id)
    return landed


# --- PostgreSQL: the whole chunk in one statement -----------------------------------------


@functools.cache
def _chunk_statement() -> Update:
    """The per-row rules above for every answer at once (`v.status IS NULL`: a look)."""
    v = (
        func.unnest(
            array_param("b_ids", Uuid()),
            array_param("b_stored", String()),
            array_param("b_status", String()),
            array_param("b_changed", UTCDateTime()),
            array_param("b_final", Boolean()),
            array_param("b_error", String()),
        )
        .table_valued(
            column("id", Uuid()),
            column("stored", String()),
            column("status", String()),
            column("changed", UTCDateTime()),
            column("final", Boolean()),
            column("error", String()),
        )
        .render_derived(name="v")
    )
    asked = bindparam("b_asked", type_=UTCDateTime())
    c = _LOG.c
    looked = v.c.status.is_(None)
    return (
        update(_LOG)
        .where(
            c.id == v.c.id,
            or_(
                and_(looked, or_(c.last_checked_at.is_(None), c.last_checked_at < asked)),
                and_(~looked, c.gateway_status == v.c.stored),
            ),
        )
        .values(
            gateway_status=func.coalesce(v.c.status, c.gateway_status),
            status_changed_at=func.coalesce(v.c.changed, c.status_changed_at),
            last_checked_at=_not_before(c.last_checked_at, asked),
            updated_at=_when(~looked, asked, c.updated_at),
            final_at=_when(v.c.final, asked, c.final_at),
            next_check_at=_when(v.c.final, None, c.next_check_at),
            last_error=func.coalesce(v.c.error, c.last_error),
            **_reset_failures(),
        )
        .returning(c.id)
    )


def _when(condition: Any, then: Any, otherwise: Any) -> Any:
    return case((condition, then), else_=otherwise)


def _write_all(conn: Connection, writes: Sequence[_Write], asked_at: dt.datetime) -> set[uuid.UUID]:
    # Sorted by id, so two chunks sharing rows tend to lock them in the same order (the
    # plan decides, not the array; the lease makes overlapping chunks rare, and a deadlock
    # fails one chunk, which the next sweep checks again).
    ordered = sorted(writes, key=lambda w: w.asked.message_id)
    rows = conn.execute(
        _chunk_statement(),
        {
            "b_ids": [w.asked.message_id for w in ordered],
            "b_stored": [w.stored for w in ordered],
            "b_status": [w.status for w in ordered],
            "b_changed": [w.changed_at for w in ordered],
            "b_final": [w.final for w in ordered],
            "b_error": [w.error for w in ordered],
            "b_asked": asked_at,
        },
    )
    return set(rows.scalars())


__all__ = ["Answer", "Asked", "record_answers"]

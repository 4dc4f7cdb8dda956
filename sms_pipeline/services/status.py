"""Status polling: the check schedule, Terminated, the status sweep and one status check.

The schedule (docs/status-checks.md): a message's deadline is SMS_TERMINATE_AFTER_SECONDS
after submission. Its first check is due SMS_STATUS_FIRST_CHECK_SECONDS after submission
(at most the first SMS_STATUS_CHECK_BACKOFF step), later checks one backoff step after the
previous one, and every due time before the deadline is clamped to the deadline, so the
gateway is always asked at (or just after) it.

The sweep runs on beat every SMS_STATUS_POLL_SECONDS:

1. Terminated: a conditional UPDATE ends every message still moving after its deadline
   whose gateway answered a status request sent at or after that deadline
   (`last_checked_at`, a recorded fact, never inferred from `next_check_at`). A message
   without a gateway id cannot be asked and ends at the deadline. A final status is never
   touched.
2. Claim: messages still moving whose `next_check_at` is due are claimed in one UPDATE
   that also moves `next_check_at` forward by the next backoff step (indexed by
   `status_checks`), clamped to the deadline. That bump is the lease: a second,
   overlapping sweep no longer sees the row as due (PostgreSQL adds FOR UPDATE SKIP
   LOCKED so it does not even wait for it; SQLite serialises writers with BEGIN
   IMMEDIATE). `updated_at` is kept as it was: it says when the message changed, not
   when we looked at it.
3. Fan-out: the claimed ids go out SMS_STATUS_CHUNK_SIZE per broker message (through
   `sms_pipeline.dispatch`); the worker reads a chunk in one query, asks the gateway for
   all of it concurrently over the client's status pool (`check_many`), and records the
   answers on one connection, so a slow gateway costs one round trip per chunk, not per
   message, and status checks never hold the send path's connections.

A check asks the gateway, records when it asked (`last_checked_at`, only when the gateway
answered) and writes only a forward change, with a compare-and-set on the status it read,
so a late or repeated check can neither overwrite a final status nor move a message
backwards. A failed check changes nothing: the lease already scheduled the next one.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import datetime as dt
import enum
import functools
import logging
import threading
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, cast

from sqlalchemy import (
    Connection,
    CursorResult,
    Table,
    Update,
    and_,
    any_,
    bindparam,
    case,
    func,
    literal,
    or_,
    select,
    update,
)
from sqlalchemy.orm import Session

from sms_pipeline import dispatch
from sms_pipeline.db import get_engine, session_scope
from sms_pipeline.db.models import MOVING_STATUS_VALUES, SmsLog, UTCDateTime, utcnow
from sms_pipeline.db.sqltime import lower_bound_plus_seconds
from sms_pipeline.gateway import GatewayError, GatewayStatus, StatusResult
from sms_pipeline.metrics import hooks as metrics
from sms_pipeline.services.gateway import get_gateway_client
from sms_pipeline.settings import Settings, get_settings

log = logging.getLogger(__name__)


# --- pure rules -------------------------------------------------------------------------

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


# --- hooks for metrics --------------------------------------------------------------------

CheckHook = Callable[["CheckResult"], None]
_hooks: list[CheckHook] = []
_hooks_lock = threading.Lock()


def add_check_hook(hook: CheckHook) -> None:
    """Call `hook(result)` after every status check (metrics count `result.outcome`)."""
    with _hooks_lock:
        _hooks.append(hook)


def remove_check_hook(hook: CheckHook) -> None:
    with _hooks_lock:
        if hook in _hooks:
            _hooks.remove(hook)


def _notify(result: CheckResult) -> CheckResult:
    with _hooks_lock:
        hooks = list(_hooks)
    for hook in hooks:
        try:
            hook(result)
        except Exception:  # a metrics bug must not break polling
            log.exception("status check hook failed")
    return result


def _rowcount(result: Any) -> int:
    # DML results are CursorResults; Session.execute is typed with the general Result.
    return int(cast(CursorResult[Any], result).rowcount)


# --- one status check -------------------------------------------------------------------


class StatusClient(Protocol):
    def status(self, gateway_id: str) -> StatusResult: ...


class CheckOutcome(enum.StrEnum):
    CHANGED = "changed"
    UNCHANGED = "unchanged"
    BACKWARDS = "backwards"  # ignored and counted
    NOT_MOVING = "not_moving"  # final already (or gone): the gateway was not asked
    NO_GATEWAY_ID = "no_gateway_id"  # cannot be polled; Terminated will end it
    GATEWAY_ERROR = "gateway_error"  # left for the next sweep
    LOST_RACE = "lost_race"  # the row changed between our read and our write
    MISSING = "missing"


@dataclass(frozen=True)
class CheckResult:
    message_id: uuid.UUID
    outcome: CheckOutcome
    old_status: str | None = None
    new_status: str | None = None


@contextlib.contextmanager
def _one_statement(settings: Settings) -> Iterator[Connection]:
    """A connection for one statement: autocommit on PostgreSQL (one round trip instead of
    BEGIN + statement + COMMIT: a check is two such statements), a transaction on SQLite."""
    engine = get_engine(settings)
    if engine.dialect.name == "postgresql":
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            yield conn
    else:
        with engine.begin() as conn:
            yield conn


@functools.cache
def _check_read_statement() -> Any:  # a Select (its generic form varies across 2.x)
    # Built once: building a statement costs more Python time than a status check's query.
    # type and submitted_at are for the metrics hook: read now, not in a third query.
    return select(SmsLog.gateway_id, SmsLog.gateway_status, SmsLog.type, SmsLog.submitted_at).where(
        SmsLog.id == bindparam("b_id")
    )


@functools.cache
def _chunk_read_statement() -> Any:
    return select(
        SmsLog.id, SmsLog.gateway_id, SmsLog.gateway_status, SmsLog.type, SmsLog.submitted_at
    ).where(SmsLog.id.in_(bindparam("b_ids", expanding=True)))


@functools.cache
def _checked_statement() -> Update:
    # A look is not a change: only last_checked_at moves (never backwards), updated_at stays.
    return (
        update(SmsLog)
        .where(
            SmsLog.id == bindparam("b_id"),
            or_(SmsLog.last_checked_at.is_(None), SmsLog.last_checked_at < bindparam("b_asked")),
        )
        .values(last_checked_at=bindparam("b_asked"), updated_at=SmsLog.updated_at)
    )


@functools.cache
def _check_write_statement(final: bool) -> Update:
    values: dict[str, Any] = {
        "gateway_status": bindparam("b_status"),
        "status_changed_at": bindparam("b_changed"),
        "updated_at": bindparam("b_now"),
        "last_checked_at": bindparam("b_now"),
    }
    if final:
        values["final_at"] = bindparam("b_now")
        values["next_check_at"] = None
    return (
        update(SmsLog)
        .where(SmsLog.id == bindparam("b_id"), SmsLog.gateway_status == bindparam("b_stored"))
        .values(**values)
    )


def check_status(
    message_id: uuid.UUID,
    *,
    settings: Settings | None = None,
    client: StatusClient | None = None,
    now: dt.datetime | None = None,
) -> CheckResult:
    """Ask the gateway about one message and record a forward change; safe to run twice.

    When the gateway answers, `last_checked_at` records when the request went out (`now`,
    taken just before asking unless a clock is passed in): the Terminated rule's fact.
    """
    settings = settings or get_settings()
    with _one_statement(settings) as conn:
        row = conn.execute(_check_read_statement(), {"b_id": message_id}).first()
    skipped = _not_askable(message_id, row)
    if skipped is not None:
        return _notify(skipped)
    assert row is not None
    client = client or get_gateway_client(settings)
    asked_at = now or utcnow()
    try:
        answer: StatusResult | GatewayError = client.status(row.gateway_id)
    except GatewayError as exc:
        answer = exc
    with _one_statement(settings) as conn:
        return _notify(_record_answer(conn, message_id, row, answer, asked_at))


def _not_askable(message_id: uuid.UUID, row: Any) -> CheckResult | None:
    """Why the gateway is not asked about this message (gone, final, no id), or None."""
    if row is None:
        return CheckResult(message_id, CheckOutcome.MISSING)
    if row.gateway_status not in MOVING_STATUS_VALUES:
        return CheckResult(message_id, CheckOutcome.NOT_MOVING, row.gateway_status)
    if not row.gateway_id:
        return CheckResult(message_id, CheckOutcome.NO_GATEWAY_ID, row.gateway_status)
    return None


def _record_answer(
    conn: Connection,
    message_id: uuid.UUID,
    row: Any,
    answer: StatusResult | GatewayError,
    asked_at: dt.datetime,
) -> CheckResult:
    """Write what one answer means (nothing for a failed check) and say what it was."""
    stored = row.gateway_status
    if isinstance(answer, GatewayError):
        log.warning(
            "message %s: status check failed (%s); next sweep retries", message_id, answer.reason
        )
        return CheckResult(message_id, CheckOutcome.GATEWAY_ERROR, stored)
    old = GatewayStatus(stored)
    new = answer.status
    transition = classify_transition(old, new)
    if transition is not Transition.FORWARD:
        conn.execute(_checked_statement(), {"b_id": message_id, "b_asked": asked_at})
        if transition is Transition.UNCHANGED:
            return CheckResult(message_id, CheckOutcome.UNCHANGED, stored, new.value)
        log.warning(
            "message %s: gateway status went backwards %s -> %s; ignored",
            message_id,
            old.value,
            new.value,
        )
        return CheckResult(message_id, CheckOutcome.BACKWARDS, stored, new.value)
    changed_at = status_date(answer, asked_at, message_id)
    # Compare-and-set on the status we read: a final status (Terminated meanwhile) or a
    # newer answer written by another check is never overwritten.
    written = _rowcount(
        conn.execute(
            _check_write_statement(new.is_final),
            {
                "b_id": message_id,
                "b_stored": stored,
                "b_status": new.value,
                "b_changed": changed_at,
                "b_now": asked_at,
            },
        )
    )
    if not written:
        return CheckResult(message_id, CheckOutcome.LOST_RACE, stored, new.value)
    log.debug("message %s: %s -> %s", message_id, old.value, new.value)
    metrics.status_changed(row.type, new.value, row.submitted_at, changed_at)
    return CheckResult(message_id, CheckOutcome.CHANGED, stored, new.value)


# --- Terminated ---------------------------------------------------------------------------


def terminate_overdue(session: Session, now: dt.datetime, settings: Settings) -> int:
    """Messages still moving after their deadline become Terminated, once it is known.

    Known means: the gateway answered a status request sent at or after the deadline
    (`last_checked_at`, recorded by `check_status`) and still said the message was
    moving. A message delivered a minute before the deadline, whose previous check was
    minutes earlier, therefore gets its check at the deadline (see `next_check_time`) and
    ends Delivered. A message the gateway cannot be asked about (no gateway id) ends at the
    deadline. One whose checks keep failing stays moving, checked every last backoff step,
    until the gateway answers.
    """
    timeout = settings.sms_terminate_after_seconds
    cutoff = now - dt.timedelta(seconds=timeout)
    dialect = session.get_bind().dialect.name
    started = func.coalesce(SmsLog.submitted_at, SmsLog.inserted_at)
    no_gateway_id = or_(SmsLog.gateway_id.is_(None), SmsLog.gateway_id == "")
    candidates = (
        select(
            SmsLog.id,
            SmsLog.gateway_id,
            SmsLog.submitted_at,
            SmsLog.inserted_at,
            SmsLog.last_checked_at,
        )
        .where(
            SmsLog.gateway_status.in_(MOVING_STATUS_VALUES),
            or_(
                SmsLog.submitted_at < cutoff,
                and_(SmsLog.submitted_at.is_(None), SmsLog.inserted_at < cutoff),
            ),
            # In SQL as well as below, so a backlog of messages not yet checked after their
            # deadline cannot fill the batch and starve those that are.
            or_(
                no_gateway_id,
                SmsLog.last_checked_at >= lower_bound_plus_seconds(started, timeout, dialect),
            ),
        )
        .limit(settings.sms_status_batch_limit)
    )
    if dialect != "sqlite":
        candidates = candidates.with_for_update(skip_locked=True)
    overdue = [
        r.id
        for r in session.execute(candidates)
        if not r.gateway_id
        or checked_after_deadline(
            r.last_checked_at, deadline_of(r.submitted_at, r.inserted_at, settings)
        )
    ]
    if not overdue:
        return 0
    types = (
        session.execute(
            update(SmsLog)
            .where(SmsLog.id.in_(overdue), SmsLog.gateway_status.in_(MOVING_STATUS_VALUES))
            .values(
                gateway_status=GatewayStatus.TERMINATED.value,
                status_changed_at=now,
                updated_at=now,
                final_at=now,
                next_check_at=None,
            )
            .returning(SmsLog.type)
            .execution_options(synchronize_session=False)
        )
        .scalars()
        .all()
    )
    metrics.statuses_changed_in(session, types, GatewayStatus.TERMINATED.value)
    return len(types)


# --- the sweep ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Claimed:
    id: uuid.UUID
    gateway_id: str | None


def claim_due_checks(
    session: Session, now: dt.datetime, settings: Settings, *, limit: int | None = None
) -> list[Claimed]:
    """Claim moving messages due for a check; their next check moves one backoff step on."""
    limit = limit or settings.sms_status_batch_limit
    backoff = settings.sms_status_check_backoff
    due = and_(SmsLog.gateway_status.in_(MOVING_STATUS_VALUES), SmsLog.next_check_at <= now)
    candidates = select(SmsLog.id).where(due).order_by(SmsLog.next_check_at).limit(limit)
    if session.get_bind().dialect.name != "sqlite":
        candidates = candidates.with_for_update(skip_locked=True)
        # `= ANY(ARRAY(subquery))` runs the locking subquery once (an InitPlan). With
        # `IN (subquery)` and a big history, the planner estimated one due row and re-ran
        # the subquery per claimed row: 187 ms for 1,000 due rows among 1M rows, vs 41 ms.
        claimed = SmsLog.id == any_(func.array(candidates.scalar_subquery()))
    else:
        claimed = SmsLog.id.in_(candidates.scalar_subquery())

    def at(step: int) -> Any:
        return literal(now + dt.timedelta(seconds=backoff[step]), UTCDateTime())

    last = len(backoff) - 1
    next_check = (
        case(*[(SmsLog.status_checks == i, at(i)) for i in range(last)], else_=at(last))
        if last
        else at(0)
    )
    rows = session.execute(
        update(SmsLog)
        .where(claimed, due)
        .values(
            next_check_at=next_check,
            status_checks=SmsLog.status_checks + 1,
            # A look is not a change: keep updated_at (the column's onupdate would bump it).
            updated_at=SmsLog.updated_at,
        )
        .returning(
            SmsLog.id,
            SmsLog.gateway_id,
            SmsLog.submitted_at,
            SmsLog.inserted_at,
            SmsLog.status_checks,
        )
        .execution_options(synchronize_session=False)
    ).all()
    # A backoff step never jumps past the Terminated deadline: the message gets its check
    # at the deadline, so a late delivery is seen before Terminated is decided. The step
    # itself is in the UPDATE above (one statement for the common case); the few rows
    # whose deadline falls inside their step are pulled back here.
    capped = []
    for r in rows:
        deadline = deadline_of(r.submitted_at, r.inserted_at, settings)
        following = next_check_time(now, r.status_checks - 1, deadline, backoff)
        if r.gateway_id and following == deadline:
            capped.append({"b_id": r.id, "b_next": deadline})
    if capped:
        table = cast(Table, SmsLog.__table__)
        session.execute(
            update(table)
            .where(table.c.id == bindparam("b_id"))
            .values(next_check_at=bindparam("b_next"), updated_at=table.c.updated_at),
            capped,
        )
    return [Claimed(r.id, r.gateway_id) for r in rows]


def fan_out(ids: Sequence[uuid.UUID], settings: Settings) -> int:
    """Publish status checks for `ids`, SMS_STATUS_CHUNK_SIZE per broker message."""
    # A chunk still queued after the longest backoff step is dropped: by then its rows
    # have come due again and a later sweep has claimed them afresh.
    return dispatch.status_checks(
        ids, settings.sms_status_chunk_size, float(max(settings.sms_status_check_backoff))
    )


def check_many(ids: Sequence[uuid.UUID], settings: Settings | None = None) -> list[CheckResult]:
    """Check a chunk of messages (the worker's side of `fan_out`): one read for the chunk,
    the gateway asked for all of them concurrently, every answer recorded on one connection.

    A chunk that fails as a whole is logged; the sweep's lease already scheduled the next
    look at each of its messages.
    """
    settings = settings or get_settings()
    if not ids:
        return []
    try:
        with _one_statement(settings) as conn:
            rows = {r.id: r for r in conn.execute(_chunk_read_statement(), {"b_ids": list(ids)})}
        results: dict[uuid.UUID, CheckResult] = {}
        askable: list[uuid.UUID] = []
        for message_id in ids:
            skipped = _not_askable(message_id, rows.get(message_id))
            if skipped is not None:
                results[message_id] = skipped
            else:
                askable.append(message_id)
        if askable:
            client = get_gateway_client(settings)
            asked_at = utcnow()
            answers = client.status_many([rows[i].gateway_id for i in askable])
            with _one_statement(settings) as conn:
                for message_id, answer in zip(askable, answers, strict=True):
                    results[message_id] = _record_answer(
                        conn, message_id, rows[message_id], answer, asked_at
                    )
    except Exception:
        log.exception("status checks of a chunk of %d failed; the next sweep retries", len(ids))
        return []
    return [_notify(results[i]) for i in ids if i in results]


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

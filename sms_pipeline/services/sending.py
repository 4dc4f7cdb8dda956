"""Sending in batches: claim due messages, call the gateway for them concurrently, record.

One batch is three steps, each a constant number of statements whatever its size:

1. **Claim** (one statement, committed before the gateway is called): due QUEUED messages of
   one queue class (or of the given ids) whose account may send now, highest priority
   first, become SENDING with `attempts + 1` and a lease. A crash mid-call leaves rows
   that say an attempt was under way; their lease expires and the outbox sweeper puts
   them back. Every message carries `uniq_key`, so a repeated submission is refused by the
   gateway rather than delivered twice.
2. **Submit**: the claimed messages go to the gateway concurrently over one keep-alive pool,
   each exchange under a total deadline.
3. **Record** (one transaction): every outcome in one executemany, credits charged for what
   was submitted, accounts paused after a 429 or an exhausted balance.

The send rules live once each: the account's (active, pause, window) in
`accounts.account_permission`, credits in `accounts.has_credits`, the rate limit in
`accounts.take_rate_token`, the daily cap in `quotas.account_cap_reached`, the opt-out in
`optout.stops`, expiry and supersede in `privacy.still_sendable`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import enum
import functools
import logging
import random
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar, cast

from sqlalchemy import Connection, Engine, Integer, Select, Table, bindparam, func, select, update
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session

from sms_pipeline import hints
from sms_pipeline.broker import dispatch
from sms_pipeline.db import affected, alone, autocommit_connection, get_engine, skip_locked
from sms_pipeline.db.models import Account, OptOut, SendStatus, SmsLog, utcnow
from sms_pipeline.gateway import (
    GatewayConnectionError,
    GatewayCreditsExhausted,
    GatewayDuplicate,
    GatewayError,
    GatewayRejected,
    GatewayStatus,
    GatewayThrottled,
    IP2SMSClient,
    SendRequest,
    SendResult,
)
from sms_pipeline.metrics import hooks as metrics
from sms_pipeline.services import accounts as account_rules
from sms_pipeline.services import gateway_routing as routing
from sms_pipeline.services import gateways as gateway_routes
from sms_pipeline.services import optout, outbox, privacy
from sms_pipeline.services.accounts import quotas
from sms_pipeline.services.masking import mask_phone
from sms_pipeline.services.status import first_check_at
from sms_pipeline.settings import Settings, get_settings

log = logging.getLogger(__name__)
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


# --- 1. claim --------------------------------------------------------------------------


@dataclass(frozen=True)
class Claim:
    id: uuid.UUID
    phone_number: str
    body: str
    uniq_key: str | None
    ext_id: str | None
    sender_id: str | None
    account_id: int
    segments: int
    attempt: int
    type: str
    priority: int
    due_at: dt.datetime
    ready_at: dt.datetime  # enqueued, or the requested send time if later
    opted_out: bool
    expires_at: dt.datetime | None = None  # a code's validity or the type's queue age
    # The gateway that has it or may have it (an earlier attempt's outcome unknown): its
    # resends go there and nowhere else (docs/gateways.md).
    gateway: str | None = None


@dataclass(frozen=True)
class _Scope:
    queue_class: dispatch.QueueClass | None
    ids: tuple[uuid.UUID, ...] | None

    def where(self) -> list[Any]:
        clauses: list[Any] = [SmsLog.send_status == SendStatus.QUEUED.value]
        if self.queue_class is not None:
            clauses.append(SmsLog.type.in_(dispatch.types_of(self.queue_class)))
        if self.ids is not None:
            clauses.append(SmsLog.id.in_(self.ids))
        return clauses


@dataclass
class _Db:
    """The connections a drain holds for its whole run (one pool checkout, one ping).

    `rows()` runs one statement as its own transaction (`db.alone`: no BEGIN and COMMIT
    round trips on PostgreSQL). `tx` is for the record step's transaction.
    """

    auto: Connection
    tx: Connection
    engine: Engine

    def rows(self, statement: Any, params: dict[str, Any] | None = None) -> list[Any]:
        with alone(self.auto):
            return list(self.auto.execute(statement, params).all())


@contextlib.contextmanager
def _database(settings: Settings) -> Iterator[_Db]:
    engine = get_engine(settings)
    with autocommit_connection(engine) as auto, engine.connect() as tx:
        yield _Db(auto, tx, engine)


def _accounts(db: _Db) -> dict[int, Account]:
    # Accounts are few (one per sending customer): reading them all is one cheap query,
    # and the rules are then evaluated once per account, not once per message.
    table = cast(Table, Account.__table__)
    return {r.id: Account(**r._mapping) for r in db.rows(select(table))}


def _defer_blocked(
    scope: _Scope,
    blocked: dict[int, account_rules.SendPermission],
    now: dt.datetime,
    db: _Db,
) -> tuple[dict[uuid.UUID, AttemptResult], list[outbox.Dispatch]]:
    """Due messages of accounts that may not send now wait (due_at) until they may."""
    results: dict[uuid.UUID, AttemptResult] = {}
    later: list[outbox.Dispatch] = []
    if not blocked:
        return results, later
    for account_id, permission in blocked.items():
        until = permission.wait_until or now + dt.timedelta(minutes=1)
        wait = (until - now).total_seconds()
        rows = db.rows(
            update(SmsLog)
            .where(
                *scope.where(),
                SmsLog.account_id == account_id,
                SmsLog.due_at <= now + EARLY_TOLERANCE,
            )
            .values(
                due_at=until,
                # A wait the broker can hold gets a countdown kick; a longer one is
                # the sweeper's (dispatched_at None: publish once it is due).
                dispatched_at=until if wait <= outbox.max_countdown() else None,
                last_error=permission.reason,
            )
            .returning(SmsLog.id, SmsLog.type, SmsLog.priority)
        )
        for row in rows:
            results[row.id] = AttemptResult(Outcome.DEFERRED, wait, permission.reason)
            later.append(outbox.Dispatch(row.id, row.type, row.priority, max(wait, 0.0)))
    return results, later


def _permission(
    account: Account, now: dt.datetime, settings: Settings
) -> account_rules.SendPermission:
    """May this account send now: its own rules, then its daily cap (when one is set)."""
    permission = account_rules.account_permission(account, now)
    if permission.allowed and quotas.account_caps_on(settings):
        reopens = quotas.account_cap_reached(account, now, settings)
        if reopens is not None:
            return account_rules.SendPermission(False, reopens, "daily cap reached")
    return permission


@functools.cache
def _claim_statement(by_class: bool, by_ids: bool, engine: Engine) -> Any:
    # Built once per shape (constructing it costs more Python time than running it); the
    # queue class's types, the ids, the allowed accounts and the limit are parameters.
    due: Any = bindparam("b_due")
    where: list[Any] = [
        SmsLog.send_status == SendStatus.QUEUED.value,
        SmsLog.due_at <= due,
        SmsLog.account_id.in_(bindparam("b_accounts", expanding=True)),
        # Expired or superseded rows are never claimed; the privacy sweep ends them.
        privacy.still_sendable(bindparam("b_now")),
    ]
    if by_class:
        where.append(SmsLog.type.in_(bindparam("b_types", expanding=True)))
    if by_ids:
        where.append(SmsLog.id.in_(bindparam("b_ids", expanding=True)))
    pick: Select[Any] = (
        select(SmsLog.id)
        .where(*where)
        .order_by(SmsLog.priority.desc(), SmsLog.due_at)
        .limit(bindparam("b_limit", type_=Integer()))
    )
    pick = skip_locked(engine, pick)
    # A CTE, joined: PostgreSQL runs the locking pick once. As `id IN (subquery)` it may
    # re-run the subquery for every row of the table (minutes with a 20,000 backlog).
    picked = pick.cte("picked")
    return (
        update(SmsLog)
        .where(SmsLog.id == picked.c.id)
        .where(SmsLog.send_status == SendStatus.QUEUED.value)
        .values(
            send_status=SendStatus.SENDING.value,
            attempts=SmsLog.attempts + 1,
            lease_until=bindparam("b_lease"),
        )
        .returning(
            SmsLog.id,
            SmsLog.phone_number,
            SmsLog.body,
            SmsLog.uniq_key,
            SmsLog.ext_id,
            SmsLog.sender_id,
            SmsLog.account_id,
            SmsLog.segments,
            SmsLog.attempts,
            SmsLog.type,
            SmsLog.priority,
            SmsLog.due_at,
            SmsLog.inserted_at,
            SmsLog.send_after,
            SmsLog.expires_at,
            SmsLog.gateway,
        )
    )


def _claim(
    scope: _Scope,
    allowed: Sequence[int],
    now: dt.datetime,
    limit: int,
    settings: Settings,
    db: _Db,
) -> list[Claim]:
    if not allowed:
        return []
    statement = _claim_statement(scope.queue_class is not None, scope.ids is not None, db.engine)
    params: dict[str, Any] = {
        "b_due": now + EARLY_TOLERANCE,
        "b_now": now,
        "b_lease": now + dt.timedelta(seconds=settings.sms_send_lease_seconds),
        "b_accounts": list(allowed),
        "b_limit": limit,
    }
    if scope.queue_class is not None:
        params["b_types"] = list(dispatch.types_of(scope.queue_class))
    if scope.ids is not None:
        params["b_ids"] = list(scope.ids)
    rows = db.rows(statement, params)
    # One indexed read for the batch: which of its numbers opted out.
    numbers = sorted({r.phone_number for r in rows})
    query = select(OptOut.phone_number).where(OptOut.phone_number.in_(numbers))
    opted = {r[0] for r in db.rows(query)} if numbers else set()
    claims = [
        Claim(
            id=r.id,
            phone_number=r.phone_number,
            body=r.body,
            uniq_key=r.uniq_key,
            ext_id=r.ext_id,
            sender_id=r.sender_id,
            account_id=r.account_id,
            segments=r.segments,
            attempt=r.attempts,
            type=r.type,
            priority=r.priority,
            due_at=r.due_at,
            ready_at=max(r.inserted_at, r.send_after or r.inserted_at),
            opted_out=r.phone_number in opted,
            expires_at=r.expires_at,
            gateway=r.gateway,
        )
        for r in rows
    ]
    # RETURNING has no order: serve the batch as the claim chose it.
    claims.sort(key=lambda c: (-c.priority, c.due_at))
    return claims


# --- 3. record -------------------------------------------------------------------------


@dataclass(frozen=True)
class _Write:
    """The new values of one claimed row (every column the record statement sets)."""

    claim: Claim
    result: AttemptResult
    send_status: SendStatus
    give_back: int = 0  # 1: the attempt did not count (not sent: opt-out, credits, rate)
    gateway_id: str | None = None
    gateway_status: str | None = None
    status_changed_at: dt.datetime | None = None
    submitted_at: dt.datetime | None = None
    final_at: dt.datetime | None = None
    next_check_at: dt.datetime | None = None
    due_at: dt.datetime | None = None
    dispatched_at: dt.datetime | None = None
    last_error: str | None = None
    pause: tuple[dt.datetime, str] | None = None  # pause the account until, why
    charge: bool = False  # take the message's segments from a prepaid account
    # Which gateway has it (or may): set by the attempt when `set_gateway`, else unchanged.
    gateway: str | None = None
    set_gateway: bool = False

    def params(self) -> dict[str, Any]:
        return {
            "b_id": self.claim.id,
            "b_attempt": self.claim.attempt,
            "b_status": self.send_status.value,
            "b_give_back": self.give_back,
            "b_gateway_id": self.gateway_id,
            "b_gateway_status": self.gateway_status,
            "b_changed": self.status_changed_at,
            "b_submitted": self.submitted_at,
            "b_final": self.final_at,
            "b_next": self.next_check_at,
            "b_due": self.due_at or self.claim.due_at,
            "b_dispatched": self.dispatched_at,
            "b_error": self.last_error[:500] if self.last_error else None,
            "b_gateway": self.gateway if self.set_gateway else self.claim.gateway,
        }


_LOG = cast(Table, SmsLog.__table__)
# A Core statement on the table (not the entity): executemany without ORM bookkeeping.
_RECORD = (
    update(_LOG)
    .where(
        _LOG.c.id == bindparam("b_id"),
        _LOG.c.send_status == SendStatus.SENDING.value,
        _LOG.c.attempts == bindparam("b_attempt"),
    )
    .values(
        send_status=bindparam("b_status"),
        attempts=_LOG.c.attempts - bindparam("b_give_back"),
        gateway_id=bindparam("b_gateway_id"),
        gateway_status=bindparam("b_gateway_status"),
        status_changed_at=bindparam("b_changed"),
        submitted_at=bindparam("b_submitted"),
        final_at=bindparam("b_final"),
        next_check_at=bindparam("b_next"),
        due_at=bindparam("b_due"),
        dispatched_at=bindparam("b_dispatched"),
        lease_until=None,
        last_error=bindparam("b_error"),
        gateway=bindparam("b_gateway"),
    )
)


def _record(writes: Sequence[_Write], now: dt.datetime, db: _Db) -> int:
    """Every outcome of the batch in one transaction; returns the rows written."""
    if not writes:
        return 0
    charges: dict[int, list[uuid.UUID]] = {}
    for w in writes:
        if w.charge:
            charges.setdefault(w.claim.account_id, []).append(w.claim.id)
    pauses: dict[int, tuple[dt.datetime, str]] = {}
    for w in writes:
        if w.pause is not None:
            current = pauses.get(w.claim.account_id)
            if current is None or current[0] < w.pause[0]:
                pauses[w.claim.account_id] = w.pause

    def write() -> int:
        with db.tx.begin(), Session(bind=db.tx) as session:
            # Core on the connection itself: no ORM bookkeeping per row.
            written = affected(db.tx.execute(_RECORD, [w.params() for w in writes]))
            for account_id, ids in charges.items():
                # Charged for what this batch recorded as submitted: a row whose claim was
                # lost meanwhile (and so not written above) costs nothing.
                segments = (
                    select(func.coalesce(func.sum(SmsLog.segments), 0))
                    .where(
                        SmsLog.id.in_(ids),
                        SmsLog.send_status == SendStatus.SUBMITTED.value,
                        SmsLog.submitted_at == now,
                    )
                    .scalar_subquery()
                )
                account_rules.charge_credits(session, account_id, segments)
            started.clear()
            for account_id, (until, reason) in pauses.items():
                name = account_rules.pause_account(session, account_id, until, reason, now)
                if name is not None:
                    started.append(account_rules.pause_warning(name, until, reason))
            return written

    started: list[str] = []
    written = with_db_retry(write)
    for warning in started:  # once per pause: only the batch that started it
        log.warning("%s", warning)
    return written


# --- 2. submit and sort each answer ------------------------------------------------------


def _submitted(claim: Claim, answer: SendResult, now: dt.datetime, settings: Settings) -> _Write:
    status = answer.status
    # An accepted answer with unreadable parts (a date out of range, an id too long to
    # keep) is still a submission: record it, with what could not be read.
    note = "; ".join(answer.problems)[:500] or None
    if note:
        log.warning("message %s: accepted, but %s", claim.id, note)
    return _Write(
        claim,
        AttemptResult(Outcome.SUBMITTED),
        SendStatus.SUBMITTED,
        gateway_id=answer.gateway_id,
        gateway_status=status.value,
        status_changed_at=answer.date or now,
        submitted_at=now,
        final_at=now if status.is_final else None,
        next_check_at=None if status.is_final else first_check_at(now, settings),
        last_error=note,
        charge=True,
    )


def _failed(claim: Claim, exc: GatewayError, now: dt.datetime, settings: Settings) -> _Write:
    reason = exc.reason[:500]
    pause: tuple[dt.datetime, str] | None = None
    if isinstance(exc, GatewayConnectionError) and hints.should_warn("gateway-unreachable"):
        log.warning("%s", hints.gateway_unreachable(settings.ip2sms_send_url, settings))
    if isinstance(exc, GatewayThrottled):
        seconds = exc.retry_after or settings.sms_rate_limit_backoff_seconds
        pause = (now + dt.timedelta(seconds=seconds), "gateway throttled (429)")
    if isinstance(exc, GatewayDuplicate):
        # An earlier attempt reached the gateway (its answer was lost): it is submitted,
        # only its gateway id is unknown, so it cannot be polled. Its status is Unknown
        # until the Terminated rule closes it, so it never sits unexplained.
        return _Write(
            claim,
            AttemptResult(Outcome.SUBMITTED, detail="duplicate"),
            SendStatus.SUBMITTED,
            gateway_status=GatewayStatus.UNKNOWN.value,
            status_changed_at=now,
            submitted_at=now,
            last_error="uniq_key dupe: an earlier attempt reached the gateway; "
            "its gateway id is unknown",
        )
    if isinstance(exc, GatewayCreditsExhausted):
        # Not the message's fault: give the attempt back and wait for credits.
        until = now + dt.timedelta(seconds=settings.sms_credit_pause_seconds)
        return _Write(
            claim,
            AttemptResult(Outcome.DEFERRED, settings.sms_credit_pause_seconds, "credits exhausted"),
            SendStatus.QUEUED,
            give_back=1,
            due_at=until,
            last_error=reason,
            pause=(until, reason),
        )
    if exc.permanent:
        return _Write(
            claim,
            AttemptResult(Outcome.REJECTED, detail=reason),
            SendStatus.REJECTED,
            gateway_id=getattr(exc, "gateway_id", None),
            gateway_status=GatewayStatus.REJECTED.value
            if isinstance(exc, GatewayRejected)
            else None,
            status_changed_at=now,
            final_at=now,
            last_error=reason,
            pause=pause,
        )
    if claim.attempt >= settings.sms_max_attempts:
        return _Write(
            claim,
            AttemptResult(Outcome.EXHAUSTED, detail=reason),
            SendStatus.RETRYCOUNT_EXCEEDED,
            final_at=now,
            last_error=reason,
            pause=pause,
        )
    delay = retry_delay(claim.attempt, settings)
    if exc.retry_after is not None:
        delay = max(delay, min(exc.retry_after, settings.sms_retry_backoff_max_seconds))
    due = now + dt.timedelta(seconds=delay)
    return _Write(
        claim,
        AttemptResult(Outcome.RETRY, retry_in=delay, detail=reason),
        SendStatus.QUEUED,
        due_at=due,
        # A countdown kick reaches it then; without broker countdowns, the sweeper does.
        dispatched_at=due if delay <= outbox.max_countdown() else None,
        last_error=reason,
        pause=pause,
    )


def _not_sent(claim: Claim, outcome: Outcome, reason: str, wait: float, now: dt.datetime) -> _Write:
    """A claimed message that a per-message rule keeps from going now: the attempt is given
    back; OPTED_OUT is final, anything else waits `wait` seconds."""
    if outcome is Outcome.OPTED_OUT:
        return _Write(
            claim,
            AttemptResult(Outcome.OPTED_OUT, detail=reason),
            SendStatus.OPTED_OUT,
            give_back=1,
            final_at=now,
            last_error=reason,
        )
    due = now + dt.timedelta(seconds=wait)
    return _Write(
        claim,
        AttemptResult(Outcome.DEFERRED, wait, reason),
        SendStatus.QUEUED,
        give_back=1,
        due_at=due,
        dispatched_at=due if wait <= outbox.max_countdown() else None,
        last_error=reason,
    )


def _per_message_rules(
    claims: Sequence[Claim],
    accounts: dict[int, Account],
    now: dt.datetime,
    settings: Settings,
) -> tuple[list[Claim], list[_Write]]:
    """Split the claimed batch into what goes now and what the per-message rules hold back
    (opt-out, the balance of a prepaid account across the batch, the rate limit)."""
    go: list[Claim] = []
    held: list[_Write] = []
    balance = {a.id: a.credits for a in accounts.values()}
    for claim in claims:
        account = accounts[claim.account_id]
        if claim.opted_out and optout.stops(claim.type):
            # The number opted out after this text was queued: log it final, never send.
            held.append(_not_sent(claim, Outcome.OPTED_OUT, "number opted out", 0, now))
            continue
        if not account_rules.has_credits(account.postpaid, balance[account.id], claim.segments):
            held.append(_not_sent(claim, Outcome.DEFERRED, "out of credits", 300.0, now))
            continue
        if not account_rules.take_rate_token(account, settings):
            held.append(_not_sent(claim, Outcome.DEFERRED, "rate", random.uniform(0.2, 1.0), now))
            continue
        if not account.postpaid:
            balance[account.id] -= claim.segments
        go.append(claim)
    return go, held


def _request(claim: Claim, now: dt.datetime, settings: Settings) -> SendRequest:
    return SendRequest(
        phone_number=claim.phone_number,
        body=claim.body,
        ext_id=claim.ext_id or claim.id.hex,
        uniq_key=claim.uniq_key,
        source=claim.sender_id or None,
        # A code's time left, so the carrier drops it too once it stopped being valid.
        validity=privacy.gateway_validity(
            claim.type, claim.expires_at, now, settings.ip2sms_validity
        ),
    )


def send_batch(
    *,
    queue_class: dispatch.QueueClass | None = None,
    ids: Sequence[uuid.UUID] | None = None,
    settings: Settings | None = None,
    client: IP2SMSClient | None = None,
    now: dt.datetime | None = None,
    limit: int | None = None,
    db: _Db | None = None,
) -> BatchResult:
    """Claim, submit and record one batch of due messages of `queue_class` (or of `ids`).

    Safe to run twice at once and twice for the same ids: the claim is conditional and
    skips rows another batch holds.
    """
    settings = settings or get_settings()
    if db is None:
        with _database(settings) as own:
            return send_batch(
                queue_class=queue_class, ids=ids, settings=settings, client=client, now=now,
                limit=limit, db=own,
            )  # fmt: skip
    now = now or utcnow()
    scope = _Scope(queue_class, tuple(ids) if ids is not None else None)
    batch = BatchResult()
    accounts = _accounts(db)
    permissions = {a.id: _permission(a, now, settings) for a in accounts.values()}
    blocked = {i: p for i, p in permissions.items() if not p.allowed}
    deferred, later = _defer_blocked(scope, blocked, now, db)
    batch.results.update(deferred)
    allowed = sorted(i for i, p in permissions.items() if p.allowed)
    claims = _claim(scope, allowed, now, limit or settings.sms_send_batch_size, settings, db)
    batch.claimed = len(claims)
    if scope.ids is not None and len(claims) < len(scope.ids):
        # Given messages the claim refused because they expired or were superseded end
        # now, explained (a drain leaves those to the privacy sweep).
        for message_id, status in privacy.end_unsendable(settings, now=now, ids=scope.ids):
            batch.results[message_id] = AttemptResult(_ENDED[status], detail=status.value)
    if not claims:
        _kick_later(later)
        return batch
    go, writes = _per_message_rules(claims, accounts, now, settings)
    table = None
    if go:
        with alone(db.auto):
            table = gateway_routes.routes(db.auto, settings)
        at = now
        sent, held = routing.submit(
            go, accounts, table, lambda c: _request(c, at, settings), settings, db, client
        )
        answered = utcnow()
        for claim, reason, wait in held:
            writes.append(_not_sent(claim, Outcome.DEFERRED, reason, wait, answered))
        for claim, gateway, answer in sent:
            bound = claim.gateway is not None and table.routes[0].from_table
            if isinstance(answer, GatewayError) and bound and routing.movable(answer):
                # Bound to a gateway that may have it already, and that refuses for now:
                # it waits for that gateway (the attempt given back), never sent elsewhere.
                wait = settings.sms_gateway_probe_seconds
                why = f"waits for gateway {gateway}, which may have it already: {answer.reason}"
                writes.append(_not_sent(claim, Outcome.DEFERRED, why, wait, answered))
            elif isinstance(answer, GatewayError):
                write = _failed(claim, answer, answered, settings)
                # A definite refusal leaves it free to go anywhere next time (unless an
                # earlier attempt's unknown outcome holds it to its gateway).
                keep = claim.gateway or (None if routing.movable(answer) else gateway)
                writes.append(dataclasses.replace(write, gateway=keep, set_gateway=True))
            else:
                write = _submitted(claim, answer, answered, settings)
                # Post-paid accounts are never charged: their batches never touch accounts.
                prepaid = not accounts[claim.account_id].postpaid
                writes.append(
                    dataclasses.replace(write, charge=prepaid, gateway=gateway, set_gateway=True)
                )
        now = answered
    written = _record(writes, now, db)
    if table is not None:
        routing.after_batch(table, settings, db)
    if written < len(writes):
        log.warning(
            "send batch: %d of %d claims were lost meanwhile", len(writes) - written, len(writes)
        )
    for w in writes:
        batch.results[w.claim.id] = w.result
    _observe(writes, accounts, now, settings)
    later += [
        outbox.Dispatch(w.claim.id, w.claim.type, w.claim.priority, w.result.retry_in)
        for w in writes
        if w.result.retry_in is not None
    ]
    _kick_later(later)
    return batch


def _observe(
    writes: Sequence[_Write], accounts: dict[int, Account], now: dt.datetime, settings: Settings
) -> None:
    """Metrics and logs for a recorded batch: the metrics in one call, the daily caps counted
    once per account, logs per message on DEBUG and per batch on INFO."""
    if not writes:
        return
    sent: list[metrics.Sent] = []
    submitted: dict[int, int] = {}
    for w in writes:
        c = w.claim
        outcome = w.result.outcome
        answer = None
        if outcome is Outcome.SUBMITTED:
            submitted[c.account_id] = submitted.get(c.account_id, 0) + 1
            if w.result.detail is None:  # the gateway answered (not a uniq_key dupe)
                answer = metrics.Answer(
                    gateway_status=w.gateway_status or "",
                    ready_at=c.ready_at,
                    submitted_at=now,
                    status_changed_at=w.status_changed_at or now,
                )
        account = accounts.get(c.account_id)
        sent.append(
            metrics.Sent(
                type=c.type,
                account=account.name if account is not None else "unknown",
                attempts=c.attempt - w.give_back,
                send_status=w.send_status,
                answer=answer,
            )
        )
        if log.isEnabledFor(logging.DEBUG):
            log.debug(
                "message %s to %s attempt %d: %s (%s)",
                c.id,
                mask_phone(c.phone_number),
                c.attempt,
                outcome.value,
                w.gateway_id or w.last_error or "",
            )
        if outcome.is_final_failure:
            log.info(
                "message %s to %s: %s after attempt %d (%s)",
                c.id,
                mask_phone(c.phone_number),
                outcome.value,
                c.attempt,
                w.last_error,
            )
    metrics.messages_sent(sent)
    quotas.count_account_sends(submitted, settings)
    counts: dict[str, int] = {}
    for w in writes:
        counts[w.result.outcome.value] = counts.get(w.result.outcome.value, 0) + 1
    log.info(
        "send batch of %d: %s",
        len(writes),
        ", ".join(f"{n} {k}" for k, n in sorted(counts.items())),
    )


def _kick_later(later: Sequence[outbox.Dispatch]) -> None:
    """Messages that wait a short while (a retry, a rate limit, a pause) get a countdown kick
    (one per queue class, the soonest); longer waits are the sweeper's."""
    longest = outbox.max_countdown()
    soon = [d for d in later if d.countdown is not None and d.countdown <= longest]
    if soon:
        outbox.publish(soon)


# --- draining a queue class ------------------------------------------------------------


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


__all__ = [
    "AttemptResult",
    "BatchResult",
    "Claim",
    "DrainResult",
    "Outcome",
    "drain",
    "retry_delay",
    "send_batch",
    "with_db_retry",
]

"""`enqueue_sms`: validate, write the row, dispatch after commit (`enqueue_many`: `many`).

The hot path is one INSERT: the account's name resolves to its id from a short-lived
cache (`account_refs`), and the checks that must be exact (the account is active, the
number has not opted out) are part of the INSERT itself, so a call costs one round trip
and a commit, on a connection the thread holds (`db.held`). The send is a coalesced kick
(see `sms_pipeline.broker.dispatch`), published after the commit.
"""

from __future__ import annotations

import datetime as dt
import functools
import uuid
from collections.abc import Callable, Mapping
from typing import Any, cast

from sqlalchemy import (
    Insert,
    String,
    Table,
    bindparam,
    case,
    insert,
    literal,
    null,
    select,
    true,
)
from sqlalchemy.orm import Session

from sms_pipeline.db import held, session_scope
from sms_pipeline.db.models import Account, SendStatus, SmsLog, utcnow
from sms_pipeline.errors import OptedOut
from sms_pipeline.metrics import hooks as metrics
from sms_pipeline.services import intake, optout, outbox, privacy
from sms_pipeline.services.intake.account_refs import (
    AccountRef,
    account_ref,
    cached_ref,
    forget_accounts,
    refuse_account,
)
from sms_pipeline.services.intake.many import enqueue_many
from sms_pipeline.services.outbox import Dispatch, dispatch_after_commit, dispatch_for
from sms_pipeline.settings import Settings, get_settings

__all__ = [
    "ESSENTIAL_TYPES",
    "ValidBody",
    "dispatch_of_values",
    "enqueue_many",
    "enqueue_sms",
    "forget_accounts",
    "is_opted_out",
    "normalise_phone_number",
    "store_checked",
    "validate_body",
    "validate_callback_url",
    "validate_type",
    "validate_xml_text",
]

ESSENTIAL_TYPES = optout.ESSENTIAL_TYPES  # the rule lives in services/optout.py

# The rules live in services/intake/; these names are kept for callers of this module.
normalise_phone_number = intake.parse_number
validate_body = intake.validate_body
validate_type = intake.validate_type
validate_callback_url = intake.validate_callback_url
validate_xml_text = intake.check_text
is_opted_out = intake.is_opted_out
ValidBody = intake.ValidBody
_Valid = intake.Message
_validate = intake.validate_message


def _erased_hash(phone_number: str, message_type: str, settings: Settings) -> str | None:
    """The number's keyed hash when an opt-out kept only as a hash could stop this message."""
    if not optout.stops(message_type) or privacy.privacy_key(settings, create=False) is None:
        return None
    return privacy.subject_hash(phone_number, settings, create=False)


# --- the row -----------------------------------------------------------------------------

_COLUMNS = (
    "id", "phone_number", "type", "body", "account_id", "sender_id", "priority",
    "send_after", "due_at", "ext_id", "uniq_key", "customer_id", "cost_centre",
    "segments", "encoding", "callback_url", "inserted_at", "updated_at", "expires_at",
    "api_key_id",
)  # fmt: skip


@functools.cache
def _insert_one(stoppable: bool, by_hash: bool = False) -> Insert:
    """INSERT … SELECT … FROM accounts WHERE id = :account_id AND active RETURNING send_status.

    Built once per shape. No row inserted means the account is not active. For a type an
    opt-out stops (`stoppable`), the send status is decided in the same statement: OPTED
    OUT when the number opted out (with `by_hash`, also by an opt-out kept only as the
    number's keyed hash after an erasure; without a privacy key there is no such opt-out,
    and the statement does not look). The check is one derived column, read by the four
    columns it decides: the statement is planned again on most calls (PostgreSQL's custom
    plans), and each copy of the check would be planned too. An essential type's statement
    has no check at all.
    """
    table = cast(Table, SmsLog.__table__)
    params = {name: bindparam(name, type_=table.c[name].type) for name in _COLUMNS}
    dispatched_at = bindparam("dispatched_at", type_=table.c.dispatched_at.type)
    queued = literal(SendStatus.QUEUED.value)
    columns = [*_COLUMNS, "send_status", "dispatched_at", "final_at", "last_error"]
    active = (Account.id == params["account_id"], Account.active.is_(True))
    if not stoppable:
        chosen = select(*params.values(), queued, dispatched_at, null(), null()).where(*active)
    else:
        phone_hash = bindparam("phone_hash", type_=String()) if by_hash else None
        check = optout.opted_out_clause(params["phone_number"], phone_hash)
        # OFFSET 0: kept a subquery (PostgreSQL would copy the check into each column).
        stop = select(check.label("stopped")).offset(0).subquery("stop")
        stopped = stop.c.stopped.is_(True)
        chosen = (
            select(
                *params.values(),
                case((stopped, literal(SendStatus.OPTED_OUT.value)), else_=queued),
                case((stopped, null()), else_=dispatched_at),
                case((stopped, params["inserted_at"]), else_=None),
                case((stopped, literal("number opted out")), else_=None),
            )
            .select_from(Account)
            .join(stop, true())
            .where(*active)
        )
    # The Table, not the entity: a Core statement, no ORM bulk-insert machinery per call.
    return insert(table).from_select(columns, chosen).returning(table.c.send_status)


def _statement(values: Mapping[str, Any]) -> Insert:
    return _insert_one(bool(values["stoppable"]), values["phone_hash"] is not None)


def _insert_params(
    v: _Valid, ref: AccountRef, settings: Settings, extra: Mapping[str, Any] | None = None
) -> tuple[dict[str, Any], Dispatch | None]:
    now = utcnow()
    values = intake.row_values(v, ref.id, now, settings)
    values["api_key_id"] = None
    if extra:
        values.update(extra)
    dispatch = dispatch_of_values(values, now)
    values["stoppable"] = optout.stops(v.type)
    values["phone_hash"] = _erased_hash(v.phone_number, v.type, settings)
    values["dispatched_at"] = now if dispatch is not None else None
    return values, dispatch


def _insert(
    execute: Callable[[dict[str, Any]], str | None],
    lookup: Callable[[Callable[[Session], Any]], Any],
    v: _Valid,
    settings: Settings,
    extra: Mapping[str, Any] | None = None,
) -> tuple[uuid.UUID, str, AccountRef, Dispatch | None]:
    """Run the one-row INSERT; its id, send status, account and dispatch (or InvalidMessage).

    `lookup(fn)` runs `fn(session)` in a session for the rare reads (an account not cached
    yet, or the reason an INSERT inserted nothing).
    """
    ref, from_cache = cached_ref(v.account, settings) or lookup(
        lambda s: account_ref(s, v.account, settings, cached=False)
    )
    values, dispatch = _insert_params(v, ref, settings, extra)
    status = execute(values)
    if status is None and from_cache:
        # Nothing inserted: the account is inactive, or the cached identity is stale.
        ref, _ = lookup(lambda s: account_ref(s, v.account, settings, cached=False))
        values["account_id"] = ref.id
        status = execute(values)
    if status is None:
        raise lookup(lambda s: refuse_account(s, ref.id))
    return values["id"], status, ref, dispatch


def _store_one(
    session: Session, v: _Valid, settings: Settings, extra: Mapping[str, Any] | None = None
) -> uuid.UUID:
    """In the caller's transaction: counted and dispatched when it commits."""

    def execute(values: dict[str, Any]) -> str | None:
        if supersedes:
            # Before the insert, in its transaction: older codes to the number end here.
            privacy.supersede_older(
                session, new_id=values["id"], account_id=values["account_id"],
                phone_number=v.phone_number, message_type=v.type, now=values["inserted_at"],
                settings=settings,
            )  # fmt: skip
        return session.execute(_statement(values), values).scalar()

    supersedes = privacy.supersedes(v.type, settings)
    message_id, status, ref, dispatch = _insert(execute, lambda fn: fn(session), v, settings, extra)
    metrics.message_stored(session, v.type, ref.name, status)
    if status == SendStatus.OPTED_OUT.value:
        raise OptedOut(message_id)
    if dispatch is not None:
        dispatch_after_commit(session, dispatch)
    return message_id


def _store_alone(
    v: _Valid, settings: Settings, extra: Mapping[str, Any] | None = None
) -> uuid.UUID:
    """In a transaction of its own: one INSERT as one statement (`db.held`: no BEGIN and
    COMMIT round trips on PostgreSQL, most of an enqueue's time), then the dispatch."""

    def lookup(fn: Callable[[Session], Any]) -> Any:
        with session_scope(settings) as session:
            return fn(session)

    ended: list[int] = []

    def execute(values: dict[str, Any]) -> str | None:
        statement = _statement(values)
        if code:
            lock = privacy.number_lock_key(values["account_id"], values["phone_number"])
            reason = privacy.superseded_reason(values["id"])
            status, attempts = held.insert_code_alone(
                statement, values, settings, lock=lock, reason=reason
            )
            ended.extend(attempts)
            return status
        return cast("str | None", held.insert_alone(statement, values, settings))

    code = privacy.supersedes(v.type, settings)
    message_id, status, ref, dispatch = _insert(execute, lookup, v, settings, extra)
    metrics.message_stored_committed(v.type, ref.name, status)
    if ended:
        metrics.messages_ended_committed(v.type, ref.name, ended, SendStatus.SUPERSEDED.value)
    if status == SendStatus.OPTED_OUT.value:
        raise OptedOut(message_id)  # the OPTED OUT row is stored: the log explains it
    if dispatch is not None:
        outbox.publish([dispatch])
    return message_id


def store_checked(
    valid: _Valid,
    *,
    session: Session | None = None,
    extra: Mapping[str, Any] | None = None,
    settings: Settings | None = None,
) -> uuid.UUID:
    """`enqueue_sms` for a message a door has already validated (`intake.check_message`),
    with columns of that door's own (`extra`: the API's `api_key_id` and its signed
    `callback_url`) written by the same INSERT. In `session`'s transaction, or alone (one
    statement). Raises OptedOut like enqueue_sms."""
    settings = settings or get_settings()
    if session is not None:
        return _store_one(session, valid, settings, extra)
    if privacy.supersedes(valid.type, settings) and not held.codes_alone(settings):
        with session_scope(settings) as own:
            return _store_one(own, valid, settings, extra)
    return _store_alone(valid, settings, extra)


def dispatch_of_values(values: Mapping[str, Any], now: dt.datetime) -> Dispatch | None:
    return dispatch_for(values["id"], values["type"], values["priority"], values["due_at"], now)


def enqueue_sms(
    phone_number: str,
    body: str,
    type: str = "text",
    *,
    account: str | int | None = None,
    priority: int = 0,
    send_at: dt.datetime | None = None,
    sender_id: str | None = None,
    ext_id: str | None = None,
    customer_id: str | None = None,
    cost_centre: str | None = None,
    callback_url: str | None = None,
    valid_for: float | dt.timedelta | None = None,
    session: Session | None = None,
) -> uuid.UUID:
    """Store a message and dispatch its send once the row is committed.

    Returns the message id, which is also its `sms_log` id for its whole life. With
    `session`, the row joins the caller's transaction and the send is dispatched after
    that transaction commits (nothing is sent if it rolls back). Bad input raises
    `InvalidMessage` naming the field, and nothing is stored. A `text` message to a
    number that opted out is stored as `OPTED OUT` and raises `OptedOut` (with its id).

    `valid_for` (seconds or a timedelta; default SMS_OTP_VALID_SECONDS for verification
    and 2FA) is how long after its send time the message is worth sending: not submitted
    by then, it ends `EXPIRED` (as does any message older than its type's maximum queue
    age). A new verification/2FA message supersedes older ones to the number (SUPERSEDED).
    """
    settings = get_settings()
    valid = _validate(
        settings, phone_number, body, type, account=account, priority=priority,
        send_at=send_at, sender_id=sender_id, ext_id=ext_id, customer_id=customer_id,
        cost_centre=cost_centre, callback_url=callback_url, valid_for=valid_for,
    )  # fmt: skip
    if session is not None:
        # An OptedOut raised here leaves its row in the caller's transaction.
        return _store_one(session, valid, settings)
    if privacy.supersedes(valid.type, settings) and not held.codes_alone(settings):
        # A code ends older ones in the same transaction as its insert (never OPTED OUT:
        # codes are essential); where the database can, `_store_alone` does both at once.
        with session_scope(settings) as own:
            return _store_one(own, valid, settings)
    return _store_alone(valid, settings)

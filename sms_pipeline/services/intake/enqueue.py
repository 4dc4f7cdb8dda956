"""`enqueue_sms` and `enqueue_many`: validate, write the rows, dispatch after commit.

The hot path is one INSERT: the account's name resolves to its id from a short-lived
cache, and the checks that must be exact (the account is active, the number has not opted
out) are part of the INSERT itself, so a call costs one round trip and a commit. The
send is a coalesced kick (see `sms_pipeline.broker.dispatch`), published after the commit.
"""

from __future__ import annotations

import datetime as dt
import functools
import os
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, cast

from sqlalchemy import (
    Boolean,
    Insert,
    String,
    Table,
    and_,
    bindparam,
    case,
    insert,
    literal,
    null,
    select,
)
from sqlalchemy.orm import Session

from sms_pipeline.db import get_engine, is_sqlite, one_statement, session_scope
from sms_pipeline.db.engine import scrubbed
from sms_pipeline.db.models import Account, OptOut, SendStatus, SmsLog, utcnow
from sms_pipeline.errors import InvalidMessage, OptedOut
from sms_pipeline.metrics import hooks as metrics
from sms_pipeline.services import intake, optout, outbox, privacy
from sms_pipeline.services.accounts import find_account
from sms_pipeline.services.outbox import Dispatch, dispatch_after_commit, dispatch_for
from sms_pipeline.settings import Settings, get_settings

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


# --- accounts: name → id, cached ---------------------------------------------------------


@dataclass(frozen=True)
class _AccountRef:
    id: int
    name: str
    expires: float


_accounts_lock = threading.Lock()
_accounts: dict[tuple[str, str | int | None], _AccountRef] = {}


def _account_ref(
    session: Session, account: str | int | None, settings: Settings, *, cached: bool = True
) -> tuple[_AccountRef, bool]:
    """The account's id and name, and whether they came from the cache.

    The cache is trusted for SMS_ACCOUNT_CACHE_SECONDS and holds only identities read from
    existing rows (never an account created in a transaction that may roll back); whether
    the account is active is checked by the INSERT itself.
    """
    key = (settings.database_url, account)
    now = time.monotonic()
    if cached and (hit := _cached_ref(account, settings)) is not None:
        return hit
    name = settings.sms_default_account if account is None else account
    found = (
        session.get(Account, name)
        if isinstance(name, int)
        else (session.scalar(select(Account).where(Account.name == name)))
    )
    if found is None and account is None:
        found = find_account(session, None)  # created now: not cached until seen again
        assert found is not None
        return _AccountRef(found.id, found.name, now), False
    if found is None:
        raise InvalidMessage("account", "no such account")
    ref = _AccountRef(found.id, found.name, now + settings.sms_account_cache_seconds)
    if settings.sms_account_cache_seconds > 0:
        with _accounts_lock:
            _accounts[key] = ref
    return ref, False


def _cached_ref(account: str | int | None, settings: Settings) -> tuple[_AccountRef, bool] | None:
    with _accounts_lock:
        ref = _accounts.get((settings.database_url, account))
    if ref is not None and ref.expires > time.monotonic():
        return ref, True
    return None


def forget_accounts() -> None:
    """Drop the account cache (tests; after renaming or deleting an account)."""
    with _accounts_lock:
        _accounts.clear()


def _refuse_account(session: Session, account_id: int) -> InvalidMessage:
    active = session.scalar(select(Account.active).where(Account.id == account_id))
    if active is None:
        forget_accounts()
        return InvalidMessage("account", "no such account")
    return InvalidMessage("account", "the account is not active")


# --- the row -----------------------------------------------------------------------------

_COLUMNS = (
    "id", "phone_number", "type", "body", "account_id", "sender_id", "priority",
    "send_after", "due_at", "ext_id", "uniq_key", "customer_id", "cost_centre",
    "segments", "encoding", "callback_url", "inserted_at", "updated_at", "expires_at",
    "api_key_id",
)  # fmt: skip


@functools.cache
def _insert_one(by_hash: bool = False) -> Insert:
    """INSERT … SELECT … FROM accounts WHERE id = :account_id AND active RETURNING send_status.

    Built once per shape. No row inserted means the account is not active. The send status
    is decided in the same statement: OPTED OUT when an opt-out stops this message (with
    `by_hash`, also one kept only as the number's keyed hash after an erasure; without a
    privacy key there is no such opt-out, and the statement does not look).
    """
    table = cast(Table, SmsLog.__table__)
    params = {name: bindparam(name, type_=table.c[name].type) for name in _COLUMNS}
    phone_hash = bindparam("phone_hash", type_=String()) if by_hash else None
    stopped = and_(
        bindparam("stoppable", type_=Boolean()),
        optout.opted_out_clause(params["phone_number"], phone_hash),
    )
    queued, opted = SendStatus.QUEUED.value, SendStatus.OPTED_OUT.value
    chosen = select(
        *params.values(),
        case((stopped, literal(opted)), else_=literal(queued)),
        case((stopped, null()), else_=bindparam("dispatched_at", type_=table.c.dispatched_at.type)),
        case((stopped, params["inserted_at"]), else_=None),
        case((stopped, literal("number opted out")), else_=None),
    ).where(Account.id == params["account_id"], Account.active.is_(True))  # fmt: skip
    columns = [*_COLUMNS, "send_status", "dispatched_at", "final_at", "last_error"]
    # The Table, not the entity: a Core statement, no ORM bulk-insert machinery per call.
    return insert(table).from_select(columns, chosen).returning(table.c.send_status)


def _insert_params(
    v: _Valid, ref: _AccountRef, settings: Settings, extra: Mapping[str, Any] | None = None
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
) -> tuple[uuid.UUID, str, _AccountRef, Dispatch | None]:
    """Run the one-row INSERT; its id, send status, account and dispatch (or InvalidMessage).

    `lookup(fn)` runs `fn(session)` in a session for the rare reads (an account not cached
    yet, or the reason an INSERT inserted nothing).
    """
    ref, from_cache = _cached_ref(v.account, settings) or lookup(
        lambda s: _account_ref(s, v.account, settings, cached=False)
    )
    values, dispatch = _insert_params(v, ref, settings, extra)
    status = execute(values)
    if status is None and from_cache:
        # Nothing inserted: the account is inactive, or the cached identity is stale.
        ref, _ = lookup(lambda s: _account_ref(s, v.account, settings, cached=False))
        values["account_id"] = ref.id
        status = execute(values)
    if status is None:
        raise lookup(lambda s: _refuse_account(s, ref.id))
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
        return session.execute(_insert_one(values["phone_hash"] is not None), values).scalar()

    supersedes = privacy.supersedes(v.type, settings)
    message_id, status, ref, dispatch = _insert(execute, lambda fn: fn(session), v, settings, extra)
    metrics.message_stored(session, v.type, ref.name, status)
    if status == SendStatus.OPTED_OUT.value:
        raise OptedOut(message_id)
    if dispatch is not None:
        dispatch_after_commit(session, dispatch)
    return message_id


class _HeldInsert:
    """PostgreSQL, own transaction: the one-row INSERT on a connection each producing thread
    keeps, in autocommit, through psycopg directly.

    The hot path of a producer calling `enqueue_sms` in a loop: no pool checkout and ping,
    no BEGIN/COMMIT, no SQLAlchemy execution machinery per call (the statement is compiled
    once). A failed connection is dropped and the INSERT tried once more on a fresh one.
    """

    def __init__(self) -> None:
        self._local = threading.local()
        self._compiled: dict[tuple[str, bool], Any] = {}

    def _statement(self, settings: Settings, by_hash: bool) -> Any:
        key = (settings.database_url, by_hash)
        if key not in self._compiled:
            statement = _insert_one(by_hash)
            self._compiled[key] = statement.compile(dialect=get_engine(settings).dialect)
        return self._compiled[key]

    @functools.cached_property
    def _defaults(self) -> dict[str, Any]:
        # Scalar column defaults SQLAlchemy would fill in at execution (attempts=0, ...).
        table = cast(Table, SmsLog.__table__)
        return {
            c.name: getattr(c.default, "arg", None)
            for c in table.columns
            if c.default is not None and getattr(c.default, "is_scalar", False)
        }

    def _connection(self, settings: Settings) -> Any:
        import psycopg

        held = getattr(self._local, "conn", None)
        key = (os.getpid(), settings.database_url)
        if held is not None and self._local.key == key and not held.closed:
            return held
        url = get_engine(settings).url.set(drivername="postgresql")
        conn = psycopg.connect(url.render_as_string(hide_password=False), autocommit=True)
        self._local.conn, self._local.key = conn, (os.getpid(), settings.database_url)
        return conn

    def _params(self, compiled: Any, values: dict[str, Any]) -> dict[str, Any]:
        params = compiled.construct_params(values)
        for name, default in self._defaults.items():
            if name not in values and params.get(name) is None:
                params[name] = default
        processors = compiled._bind_processors
        return {k: (processors[k](v) if k in processors else v) for k, v in params.items()}

    def __call__(self, values: dict[str, Any], settings: Settings) -> str | None:
        import psycopg

        compiled = self._statement(settings, values["phone_hash"] is not None)
        params = self._params(compiled, values)
        sql = compiled.string
        for attempt in (1, 2):
            conn = self._connection(settings)
            try:
                row = conn.execute(sql, params).fetchone()
                return None if row is None else str(row[0])
            except psycopg.OperationalError as exc:
                conn.close()
                if attempt == 2:
                    raise _database_error(exc, sql) from exc
            except psycopg.Error as exc:
                raise _database_error(exc, sql) from exc
        raise AssertionError("unreachable")

    def rows(self, sql: str, params: Mapping[str, Any], settings: Settings) -> list[Any]:
        """A read of one statement on this thread's held connection (psycopg placeholders):
        the API's key check, on the connection its INSERT then uses."""
        import psycopg

        for attempt in (1, 2):
            conn = self._connection(settings)
            try:
                return list(conn.execute(sql, params).fetchall())
            except psycopg.OperationalError as exc:
                conn.close()
                if attempt == 2:
                    raise _database_error(exc, sql) from exc
            except psycopg.Error as exc:
                raise _database_error(exc, sql) from exc
        raise AssertionError("unreachable")

    def code(self, values: dict[str, Any], settings: Settings) -> tuple[str | None, list[int]]:
        """A one-time code: the number's lock, then one statement that ends the older codes
        and inserts this one (`_code_sql`), sent as one pipeline (one round trip). Its send
        status, and the attempts of each code it ended SUPERSEDED.

        No BEGIN and COMMIT: in autocommit the statements of a pipeline before its Sync run
        in one implicit transaction (the lock is held until the Sync commits the INSERT,
        and an error rolls back both), and each statement still takes its own snapshot, so
        the second sees every code committed before the lock was granted."""
        import psycopg

        compiled = self._statement(settings, values["phone_hash"] is not None)
        params = self._params(compiled, values)
        params["superseded_reason"] = privacy.superseded_reason(values["id"])
        sql = _code_sql(compiled.string)
        lock = privacy.number_lock_key(values["account_id"], values["phone_number"])
        for attempt in (1, 2):
            conn = self._connection(settings)
            try:
                with conn.pipeline():
                    conn.execute(privacy.NUMBER_LOCK_SQL, {"k": lock})
                    cursor = conn.execute(sql, params)
                row = cursor.fetchone()
                return (None, []) if row is None else (str(row[0]), list(row[1] or []))
            except psycopg.OperationalError as exc:
                conn.close()
                if attempt == 2:
                    raise _database_error(exc, sql) from exc
            except psycopg.Error as exc:
                conn.close()  # never hand on a connection inside a failed transaction
                raise _database_error(exc, sql) from exc
            except BaseException:
                conn.close()
                raise
        raise AssertionError("unreachable")


def _database_error(exc: Exception, sql: str) -> Exception:
    """A psycopg error from a held connection as SQLAlchemy would raise it (IntegrityError,
    OperationalError, ...: what callers and the API's 503 handler expect), its server text
    scrubbed of row data (`db.engine.scrub_error`) and no parameters shown."""
    import psycopg
    from sqlalchemy.exc import DBAPIError

    scrubbed(exc)
    return DBAPIError.instance(sql, None, exc, psycopg.Error, hide_parameters=True)


@functools.cache
def _code_sql(insert_sql: str) -> str:
    """The one statement of a code (PostgreSQL): the older codes of the same account, number
    and type not yet submitted end SUPERSEDED (waiting ones) or are marked `superseded_by`
    (an attempt in flight: its answer is recorded as it comes, it is never attempted again),
    and the new row is inserted; RETURNING its status and the ended codes' attempts.

    Run after the number's advisory lock in the same transaction (a later statement's
    snapshot sees every code committed by a producer that held the lock before), and only
    for an active account (the INSERT's own condition: no row inserted, nothing ended).
    The older codes are found by the number's index (ix_sms_log_phone_number).
    """
    log_table = cast(Table, SmsLog.__table__).fullname
    accounts = cast(Table, Account.__table__).fullname
    superseded = SendStatus.SUPERSEDED.value
    waiting, in_flight = SendStatus.QUEUED.value, SendStatus.SENDING.value
    ends = f"send_status = '{waiting}'"
    return (
        f"WITH older AS (UPDATE {log_table} SET"
        f" send_status = CASE WHEN {ends} THEN '{superseded}' ELSE send_status END,"
        f" final_at = CASE WHEN {ends} THEN %(inserted_at)s::TIMESTAMPTZ ELSE final_at END,"
        f" lease_until = CASE WHEN {ends} THEN NULL ELSE lease_until END,"
        f" last_error = CASE WHEN {ends} THEN %(superseded_reason)s::VARCHAR"
        " ELSE last_error END,"
        " superseded_by = %(id)s::UUID, updated_at = %(inserted_at)s::TIMESTAMPTZ"
        " WHERE phone_number = %(phone_number)s::VARCHAR AND account_id = %(account_id)s::INTEGER"
        " AND type = %(type)s::VARCHAR AND id <> %(id)s::UUID"
        f" AND ({ends} OR (send_status = '{in_flight}' AND superseded_by IS NULL))"
        f" AND EXISTS (SELECT 1 FROM {accounts} WHERE {accounts}.id = %(account_id)s::INTEGER"
        f" AND {accounts}.active IS true)"
        " RETURNING attempts, send_status) "
        f"{insert_sql}, (SELECT array_agg(attempts) FROM older"
        f" WHERE older.send_status = '{superseded}')"
    )


_held_insert = _HeldInsert()


def held_rows(sql: str, params: Mapping[str, Any], settings: Settings) -> list[Any]:
    """One read on this thread's held PostgreSQL connection (autocommit)."""
    return _held_insert.rows(sql, params, settings)


def _store_alone(
    v: _Valid, settings: Settings, extra: Mapping[str, Any] | None = None
) -> uuid.UUID:
    """In a transaction of its own: one INSERT as one statement (`one_statement`: no BEGIN
    and COMMIT round trips on PostgreSQL, most of an enqueue's time), then the dispatch."""

    def lookup(fn: Callable[[Session], Any]) -> Any:
        with session_scope(settings) as session:
            return fn(session)

    ended: list[int] = []

    def execute(values: dict[str, Any]) -> str | None:
        if not is_sqlite(settings.database_url):
            if code:
                status, attempts = _held_insert.code(values, settings)
                ended.extend(attempts)
                return status
            return _held_insert(values, settings)
        # Its own connection: the look-ups above run with none open (SQLite has one writer).
        with one_statement(settings) as conn:
            return conn.execute(_insert_one(values["phone_hash"] is not None), values).scalar()

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
    if privacy.supersedes(valid.type, settings) and is_sqlite(settings.database_url):
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
    if privacy.supersedes(valid.type, settings) and is_sqlite(settings.database_url):
        # A code ends older ones in the same transaction as its insert (never OPTED OUT:
        # codes are essential); on PostgreSQL `_store_alone` does both in one statement.
        with session_scope(settings) as own:
            return _store_one(own, valid, settings)
    return _store_alone(valid, settings)


def enqueue_many(
    messages: Iterable[Mapping[str, Any]],
    *,
    account: str | int | None = None,
    session: Session | None = None,
) -> list[uuid.UUID]:
    """Store a batch of messages in one transaction and one INSERT; one kick per queue class.

    Each message is a mapping of `enqueue_sms`'s arguments (`phone_number`, `body`, and
    optionally `type`, `priority`, `send_at`, `sender_id`, `ext_id`, `customer_id`,
    `cost_centre`, `callback_url`, `account`; `account` defaults to this call's). Returns
    the ids in order. Any invalid message raises `InvalidMessage` (its field prefixed with
    `messages[i].`) and nothing is stored. Messages to numbers that opted out are stored
    as `OPTED OUT` (not sent) like `enqueue_sms` does, without raising; read their status
    by id. With `session`, the rows join the caller's transaction.
    """
    settings = get_settings()
    valid: list[_Valid] = []
    for i, message in enumerate(messages):
        fields = dict(message)
        fields.setdefault("account", account)
        unknown = set(fields) - {*_MESSAGE_FIELDS, "account"}
        if unknown:
            raise InvalidMessage(f"messages[{i}]", f"unknown fields: {', '.join(sorted(unknown))}")
        try:
            valid.append(_validate(settings, **fields))
        except InvalidMessage as exc:
            raise InvalidMessage(f"messages[{i}].{exc.field}", exc.reason) from None
        except TypeError:
            raise InvalidMessage(f"messages[{i}]", "phone_number and body are required") from None
    if not valid:
        return []
    if session is not None:
        return _store_many(session, valid, settings)
    with session_scope(settings) as own:
        return _store_many(own, valid, settings)


_MESSAGE_FIELDS = intake.FIELDS


def _store_many(session: Session, valid: Sequence[_Valid], settings: Settings) -> list[uuid.UUID]:
    refs = {v.account: _account_ref(session, v.account, settings)[0] for v in valid}
    # (cached identities: the statement below checks that every account is active)
    # Exact checks, one statement each for the whole batch: active accounts, opt-outs.
    ids = sorted({r.id for r in refs.values()})
    active = set(session.scalars(select(Account.id).where(Account.id.in_(ids), Account.active)))
    for ref in refs.values():
        if ref.id not in active:
            raise _refuse_account(session, ref.id)
    numbers = sorted({v.phone_number for v in valid if optout.stops(v.type)})
    opted = (
        set(session.scalars(select(OptOut.phone_number).where(OptOut.phone_number.in_(numbers))))
        if numbers
        else set()
    )
    now = utcnow()
    rows: list[dict[str, Any]] = []
    # The newest code of the batch to a number is the live one: older ones, in the batch or
    # already stored, end SUPERSEDED.
    newest: dict[tuple[int, str, str], int] = {}
    for i, v in enumerate(valid):
        if privacy.supersedes(v.type, settings):
            newest[(refs[v.account].id, v.phone_number, v.type)] = i
    for i, v in enumerate(valid):
        ref = refs[v.account]
        values = intake.row_values(v, ref.id, now, settings)
        live = newest.get((ref.id, v.phone_number, v.type))
        if live is not None and live != i:
            reason = "superseded by a newer code to the same number in the same batch"
            intake.refuse(values, SendStatus.SUPERSEDED, reason, now)
            metrics.message_stored(session, v.type, ref.name, values["send_status"])
        else:
            intake.admit(session, values, account=ref.name, settings=settings, now=now, opted=opted)
        rows.append(values)
    session.execute(insert(SmsLog), rows)
    return [r["id"] for r in rows]

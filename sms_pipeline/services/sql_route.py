"""The SQL route (after the SMSPortal SQL service): rows other applications insert into `sms_queue`.

Per account, every `process_queue_interval` seconds, waiting rows become `sms_log`
messages in one transaction that also deletes them. This door only maps a queue row onto
the intake core (services/intake/): a row that cannot be admitted ends in the log with
the most specific word (`number invalid`, `send_at invalid`, `priority invalid`,
`data1 invalid`) and its reason, never stopping the queue. Every column is read as text,
so no value the database holds (PostgreSQL `infinity`, SQLite text in a time column)
fails the read; a row the database cannot read back at all is moved aside to
`sms_queue_unreadable` with its id and the error. Each account is polled in its own
transaction: one account's failure is logged and counted, and the others go on.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import re
import uuid
from typing import Any

from sqlalchemy import (
    Table,
    Text,
    cast,
    column,
    delete,
    insert,
    inspect,
    literal,
    select,
    table,
    update,
)
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from sms_pipeline.db import schema_of, session_scope, skip_locked
from sms_pipeline.db.models import (
    Account,
    MessageType,
    SendStatus,
    SmsLog,
    SmsQueueUnreadable,
    utcnow,
)
from sms_pipeline.errors import InvalidMessage
from sms_pipeline.metrics import hooks as metrics
from sms_pipeline.services import intake, privacy
from sms_pipeline.settings import Settings, get_settings

log = logging.getLogger(__name__)


def _table(model: Any) -> Table:
    found: Table = model.__table__
    return found


BATCH = 1000
# SMSPortal's QUEUE columns; any other column an operator added is carried in `extra`.
KNOWN_COLUMNS = frozenset(
    {
        "id", "account_id", "kind", "message_type", "sender_id", "num_to", "data1", "data2",
        "flash", "send_at", "priority", "retry_count", "cost_centre", "customer_id",
        "inserted_at",
    }
)  # fmt: skip
_INTEGER = re.compile(r"[+-]?\d{1,18}")


def _queue_columns(session: Session) -> tuple[str, ...]:
    """sms_queue's columns as this database has them now (operators may add some)."""
    found = inspect(session.connection()).get_columns("sms_queue", schema=schema_of(session))
    return tuple(c["name"] for c in found)


def _queue(session: Session, names: tuple[str, ...]) -> Any:
    return table("sms_queue", *(column(n) for n in names), schema=schema_of(session))


def _as_text(queue: Any, names: tuple[str, ...]) -> list[Any]:
    return [queue.c.id, *(cast(queue.c[n], Text).label(n) for n in names if n != "id")]


def _read_rows(
    session: Session, account_id: int, limit: int, names: tuple[str, ...]
) -> tuple[list[dict[str, Any]], list[tuple[int, str]]]:
    """Up to `limit` waiting rows, every column as text; and the (id, error) of rows the
    database could not read back (the batch is read once, then row by row on an error)."""
    queue = _queue(session, names)
    ordered = (
        select(queue.c.id)
        .where(queue.c.account_id == account_id)
        .order_by(queue.c.priority.desc(), queue.c.id)
        .limit(limit)
    )
    whole = select(*_as_text(queue, names)).where(queue.c.id.in_(ordered.scalar_subquery()))
    try:
        with session.begin_nested():
            rows = [dict(r._mapping) for r in session.execute(skip_locked(session, whole))]
        return sorted(rows, key=lambda r: _order(r)), []
    except (SQLAlchemyError, ValueError, UnicodeDecodeError):
        pass
    readable: list[dict[str, Any]] = []
    unreadable: list[tuple[int, str]] = []
    for (queue_id,) in session.execute(skip_locked(session, ordered)).all():
        one = select(*_as_text(queue, names)).where(queue.c.id == queue_id)
        try:
            with session.begin_nested():
                found = session.execute(one).first()
        except (SQLAlchemyError, ValueError, UnicodeDecodeError) as exc:
            unreadable.append((int(queue_id), _error_text(exc)))
            continue
        if found is not None:
            readable.append(dict(found._mapping))
    return readable, unreadable


def _order(row: dict[str, Any]) -> tuple[int, int]:
    text = row.get("priority")
    priority = int(text) if text is not None and _INTEGER.fullmatch(text.strip()) else 0
    return (-priority, int(row["id"]))


def _error_text(exc: BaseException) -> str:
    """The error's class and message, never the value it quotes (it may be a code)."""
    orig = getattr(exc, "orig", None) or exc
    message = str(orig).split(" with text ")[0]
    return f"{type(orig).__name__}: {message}"[:500]


def _move_aside(session: Session, account_id: int, unreadable: list[tuple[int, str]]) -> None:
    """Rows the database cannot read back: copied (by the database, undecoded) with the error."""
    queue = _queue(session, ("id", "customer_id"))
    aside = _table(SmsQueueUnreadable)
    for queue_id, error in unreadable:
        log.warning(
            "queue row %s of account %s unreadable: moved aside (%s)", queue_id, account_id, error
        )
        session.execute(
            insert(aside).from_select(
                ["queue_id", "account_id", "customer_id", "error"],
                select(
                    queue.c.id,
                    literal(account_id),
                    cast(queue.c.customer_id, Text),
                    literal(error),
                ).where(queue.c.id == queue_id),
            )
        )
        metrics.intake_error("sql_route", "unreadable_row")


# --- one row ---------------------------------------------------------------------------------


def _integer(text: str | None) -> object:
    """A queue row's integer column read as text: an int, or the text (refused later)."""
    if text is not None and _INTEGER.fullmatch(text.strip()):
        return int(text)
    return text


def _flag(text: str | None) -> bool:
    return (text or "").strip().lower() in {"1", "t", "true", "y", "yes"}


def _carried(row: dict[str, Any], names: tuple[str, ...]) -> str | None:
    extra = {n: row[n] for n in names if n not in KNOWN_COLUMNS and row.get(n) is not None}
    return json.dumps(extra, ensure_ascii=False, sort_keys=True) if extra else None


def _problems_in_order(problems: list[InvalidMessage]) -> list[InvalidMessage]:
    order = {f: i for i, f in enumerate(intake.FIELDS)}
    return sorted(problems, key=lambda p: order.get(p.field, len(order)))


def message_values(
    session: Session,
    row: dict[str, Any],
    names: tuple[str, ...],
    account: str,
    now: dt.datetime,
    settings: Settings,
) -> dict[str, Any]:
    """A queue row (every column as text) → the `sms_log` row, admitted or refused."""
    account_id = int(row["account_id"])
    problems: list[InvalidMessage] = []
    try:
        send_at = intake.stored_time("send_at", row.get("send_at"))
    except InvalidMessage as exc:
        send_at, problems = None, [exc]
    checked = intake.check_message(
        settings,
        row.get("num_to"),
        row.get("data1"),
        row.get("message_type") or MessageType.TEXT.value,
        account=account_id,
        priority=_integer(row.get("priority")),
        send_at=send_at,
        sender_id=row.get("sender_id") or None,
        customer_id=row.get("customer_id") or None,
        cost_centre=row.get("cost_centre") or None,
        now=now,
    )
    carried: dict[str, Any] = {
        "queue_id": int(row["id"]),
        "flash": _flag(row.get("flash")),
        "data2": row.get("data2"),
        "extra": _carried(row, names),
    }
    if isinstance(checked, list) or problems:
        problems = _problems_in_order(problems + (checked if isinstance(checked, list) else []))
        values = _refused_values(row, account_id, send_at, now, settings)
        values.update(carried)
        first = problems[0]
        intake.refuse(values, intake.status_for(first), str(first), now)
        metrics.message_stored(session, values["type"], account, values["send_status"])
        return values
    values = intake.row_values(checked, account_id, now, settings)
    values.update(carried)
    intake.admit(session, values, account=account, settings=settings, now=now)
    return values


def _refused_values(
    row: dict[str, Any],
    account_id: int,
    send_at: dt.datetime | None,
    now: dt.datetime,
    settings: Settings,
) -> dict[str, Any]:
    """What a refused row keeps: its own values as far as the log can hold them."""
    known = {t.value for t in MessageType}
    message_type = row.get("message_type")
    message_type = message_type if message_type in known else MessageType.TEXT.value
    priority = _integer(row.get("priority"))
    if not isinstance(priority, int) or not -(2**31) <= priority < 2**31:
        priority = 0
    if send_at is not None and (send_at - now).days > settings.sms_max_schedule_days:
        send_at = None  # beyond what date arithmetic may be asked about (reason says so)
    sender_id = row.get("sender_id") or None
    message_id = uuid.uuid4()
    values: dict[str, Any] = {
        "id": message_id,
        "uniq_key": message_id.hex,
        "phone_number": (row.get("num_to") or "").strip()[:32],
        "type": message_type,
        "body": row.get("data1") or "",
        "account_id": account_id,
        "sender_id": sender_id and sender_id[:16],
        "priority": priority,
        "send_after": send_at,
        "due_at": now,
        "expires_at": privacy.expiry_for(message_type, now, settings),
        "cost_centre": (row.get("cost_centre") or None) and row["cost_centre"][:64],
        "customer_id": (row.get("customer_id") or None) and row["customer_id"][:128],
        "segments": 1,
        "encoding": "GSM-7",
        "ext_id": None,
        "callback_url": None,
        "inserted_at": now,
        "updated_at": now,
    }
    return values


# --- one account, every account --------------------------------------------------------------


def ingest_account_queue(
    account_id: int, settings: Settings | None = None, *, limit: int = BATCH
) -> int:
    """Move up to `limit` waiting queue rows of one account into the log; returns how many
    rows left the queue (admitted, refused or moved aside)."""
    settings = settings or get_settings()
    now = utcnow()
    with session_scope(settings) as session:
        account = metrics.account_name(account_id, session)
        names = _queue_columns(session)
        rows, unreadable = _read_rows(session, account_id, limit, names)
        _move_aside(session, account_id, unreadable)
        messages: list[dict[str, Any]] = []
        pending: list[dict[str, Any]] = []
        for row in rows:
            if pending and privacy.supersedes(row.get("message_type") or "", settings):
                # A code ends the older ones to its number, those of this batch included.
                session.execute(insert(_table(SmsLog)), pending)
                pending = []
            message = message_values(session, row, names, account, now, settings)
            messages.append(message)
            pending.append(message)
            if message["send_status"] != SendStatus.QUEUED.value:
                log.info(
                    "queue row %s refused: %s (%s)",
                    message["queue_id"],
                    message["send_status"],
                    message["last_error"],
                )
        if pending:
            session.execute(insert(_table(SmsLog)), pending)
        done = [m["queue_id"] for m in messages] + [queue_id for queue_id, _ in unreadable]
        if done:
            queue = _queue(session, ("id",))
            session.execute(delete(queue).where(queue.c.id.in_(done)))
        session.execute(
            update(Account).where(Account.id == account_id).values(last_process_queue=now)
        )
    return len(rows) + len(unreadable)


def poll_account(account_id: int, settings: Settings) -> int:
    """Every waiting row of one account, batch by batch; a failure is logged, counted and
    ends this account's pass only (its rows wait for the next one)."""
    total = 0
    try:
        while True:
            moved = ingest_account_queue(account_id, settings)
            total += moved
            if moved < BATCH:
                return total
    except Exception:
        # One account's queue failing (its database work) holds no other account.
        metrics.poller_unit_failed("sql_route")
        log.exception("SQL route: the queue of account %s failed; skipped this round", account_id)
        return total


def poll_queues(settings: Settings | None = None) -> int:
    """Ingest the queue of every active account whose ProcessQueueInterval has passed."""
    settings = settings or get_settings()
    now = utcnow()
    with session_scope(settings) as session:
        accounts = session.execute(
            select(Account.id, Account.process_queue_interval, Account.last_process_queue).where(
                Account.active.is_(True), Account.process_queue_interval > 0
            )
        ).all()
    total = 0
    for account_id, interval, last in accounts:
        if last is not None and last > now - dt.timedelta(seconds=interval):
            continue
        total += poll_account(account_id, settings)
    return total

"""Replication of verifications (long: one pass, and the fallback that sets a bad row aside).

Every new row of `verification.verifications` becomes one `sms_log` row.

By fact, not by age: a verification is replicated because no `sms_log` row holds its id
(NOT EXISTS on the unique `sms_log.verification_id`), whatever its age or the order the
service's transactions commit in, so no look-back window or high-water mark can skip one.
Exactly once comes from the database: INSERT ... ON CONFLICT (verification_id) DO NOTHING
RETURNING, and only the rows this pass inserted are dispatched, after commit.

The table is the verification service's (db/models/verifications.py): each pass reflects
it and reads only the columns it needs, plus optional ones it can use; we never write it.
A verification already canceled, expired or past `code_expired_at` when first seen gets
its row ending `EXPIRED` with the reason (counted once), and is never sent.
"""

from __future__ import annotations

import datetime as dt
import logging
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, cast

from sqlalchemy import (
    Boolean,
    Column,
    Connection,
    Insert,
    MetaData,
    Row,
    Select,
    String,
    Table,
    Uuid,
    exists,
    func,
    inspect,
    select,
)
from sqlalchemy.orm import Session

from sms_pipeline.db import insert_ignore, schema_of, session_scope
from sms_pipeline.db.models import (
    SCHEMA,
    MessageType,
    SendStatus,
    SmsLog,
    UTCDateTime,
    UTCTimestamp,
    utcnow,
)
from sms_pipeline.gateway import GatewayStatus
from sms_pipeline.gateway.codec import MAX_GATEWAY_ID_LENGTH, describe_invalid_xml_char
from sms_pipeline.metrics import hooks as metrics
from sms_pipeline.services import intake, privacy
from sms_pipeline.services.accounts import get_or_create_default_account
from sms_pipeline.settings import Settings, get_settings

log = logging.getLogger(__name__)

BATCH_SIZE = 1000
TABLE = "verifications"
REQUIRED_COLUMNS = ("id", "phone_number", "code", "inserted_at")
OPTIONAL_COLUMNS = ("status", "active", "code_expired_at", "gateway_id")
# Statuses the service gives a verification that must no longer be sent.
ENDED_STATUSES = frozenset({"canceled", "expired"})


def render_code(code: int | str | None, settings: Settings) -> str:
    """A verification code as the patient should read it (integer or text code)."""
    if code is None:
        return ""
    if isinstance(code, int) and not isinstance(code, bool):
        digits = settings.sms_verification_code_digits
        return f"{code:0{digits}d}" if digits and code >= 0 else str(code)
    return str(code).strip()


def render_body(code: str, template: str) -> str:
    """The SMS text for a verification code (`{code}` in the template; no other fields)."""
    return template.replace("{code}", code)


@dataclass(frozen=True)
class ReplicationResult:
    inserted: int = 0  # new sms_log rows
    dispatched: int = 0  # of which queued for sending by us
    tracked: int = 0  # of which already sent by the verification service: polled only
    invalid: int = 0  # of which refused (number invalid / data1 invalid)
    ended: int = 0  # of which canceled or expired before we saw them: not sent

    def __add__(self, other: ReplicationResult) -> ReplicationResult:
        return ReplicationResult(
            self.inserted + other.inserted,
            self.dispatched + other.dispatched,
            self.tracked + other.tracked,
            self.invalid + other.invalid,
            self.ended + other.ended,
        )


def source_table(conn: Connection) -> Table:
    """The verifications table as this database has it: needed and usable columns only."""
    found = {c["name"]: c for c in inspect(conn).get_columns(TABLE, schema=schema_of(conn))}
    missing = [name for name in REQUIRED_COLUMNS if name not in found]
    if missing:
        raise RuntimeError(f"{SCHEMA}.{TABLE} has no column {', '.join(missing)}")

    def moment(name: str) -> Column[Any]:
        aware = bool(getattr(found[name]["type"], "timezone", False))
        return Column(name, UTCDateTime() if aware else UTCTimestamp())

    columns: list[Column[Any]] = [
        Column("id", Uuid(), primary_key=True),
        Column("phone_number", String()),
        Column("code"),  # integer in the service's table, text in older shapes: as stored
        moment("inserted_at"),
    ]
    kinds: dict[str, Any] = {"status": String(), "active": Boolean(), "gateway_id": String()}
    for name in OPTIONAL_COLUMNS:
        if name in found:
            columns.append(moment(name) if name == "code_expired_at" else Column(name, kinds[name]))
    # The schema is translated away on SQLite by the engine, as for every model.
    return Table(TABLE, MetaData(), *columns, schema=SCHEMA)


def _ended_reason(verification: Row[Any], now: dt.datetime) -> str | None:
    """Why a verification must not be sent any more, or None."""
    mapping = verification._mapping
    status = mapping.get("status")
    if status in ENDED_STATUSES:
        return f"verification {status} before it was sent"
    expires = mapping.get("code_expired_at")
    if expires is not None and expires <= now:
        return "code expired before it was sent"
    return None


def _row_for(
    verification: Row[Any], account_id: int, now: dt.datetime, settings: Settings
) -> dict[str, Any]:
    mapping = verification._mapping
    body = render_body(render_code(mapping["code"], settings), settings.sms_verification_template)
    row = _base_row(mapping["id"], account_id, now)
    row.update(
        body=body,
        expires_at=privacy.expiry_for(
            MessageType.VERIFICATION.value,
            now,
            settings,
            code_expires_at=mapping.get("code_expired_at"),
        ),
    )
    message_id = row["id"]
    raw_number = mapping["phone_number"] or ""
    checked = intake.check_message(
        settings, raw_number, body, MessageType.VERIFICATION.value, account=account_id, now=now
    )
    row["phone_number"] = (
        checked.phone_number if isinstance(checked, intake.Message) else raw_number.strip()[:32]
    )

    gateway_id = mapping.get("gateway_id")
    if gateway_id:
        # The verification service sent it itself: track it (poll its status), never send.
        # An id the gateway cannot be asked about is not stored (a cut-down id would ask
        # about another message): the row ends Terminated at its deadline, explained.
        sent_at = mapping["inserted_at"] or now
        given = str(gateway_id)
        usable_id: str | None = given
        unusable = describe_invalid_xml_char(given) or (
            f"is longer than {MAX_GATEWAY_ID_LENGTH} characters"
            if len(given) > MAX_GATEWAY_ID_LENGTH
            else None
        )
        if unusable is not None:
            usable_id = None
            row["last_error"] = f"gateway id {unusable}: its status cannot be asked"
        row.update(
            send_status=SendStatus.SUBMITTED.value,
            gateway_id=usable_id,
            gateway_status=GatewayStatus.ACCEPTED.value,
            status_changed_at=sent_at,
            submitted_at=sent_at,
            next_check_at=now,
        )
        return row
    ended = _ended_reason(verification, now)
    if ended is not None:
        intake.refuse(row, SendStatus.EXPIRED, ended, now)
        return row
    if isinstance(checked, list):
        first = checked[0]
        intake.refuse(row, intake.status_for(first), str(first), now)
        return row
    row.update(
        send_status=SendStatus.QUEUED.value,
        uniq_key=message_id.hex,
        segments=checked.body.segments,
        encoding=checked.body.encoding,
        dispatched_at=now,
    )
    return row


def _base_row(verification_id: Any, account_id: int, now: dt.datetime) -> dict[str, Any]:
    """A verification's sms_log row before its number, text and outcome are known."""
    return {
        "id": uuid.uuid4(),
        "type": MessageType.VERIFICATION.value,
        "phone_number": "",
        "body": "",
        "account_id": account_id,
        "priority": 0,
        "due_at": now,
        "expires_at": None,
        "attempts": 0,
        "status_checks": 0,
        "segments": 1,
        "encoding": "GSM-7",
        "flash": False,
        "verification_id": verification_id,
        "inserted_at": now,
        "updated_at": now,
        "uniq_key": None,
        "gateway_id": None,
        "gateway_status": None,
        "status_changed_at": None,
        "submitted_at": None,
        "next_check_at": None,
        "dispatched_at": None,
        "final_at": None,
        "last_error": None,
    }


def _insert(session: Session) -> Insert:
    return insert_ignore(session, cast(Table, SmsLog.__table__), ["verification_id"])


def find_unreplicated(
    session: Session, source: Table, limit: int, only: Any = None
) -> Sequence[Row[Any]]:
    """Verifications that have no sms_log row yet, whatever their age, oldest first (only
    the one with id `only`, when given)."""
    # The same total order in every replicator: concurrent passes insert overlapping rows
    # in the same order, so they wait on each other's keys instead of deadlocking.
    query = _unreplicated(select(*source.c), source)
    if only is not None:
        query = query.where(source.c.id == only)
    return session.execute(query.limit(limit)).all()


def _unreplicated(query: Select[Any], source: Table) -> Select[Any]:
    return query.where(~exists().where(SmsLog.verification_id == source.c.id)).order_by(
        source.c.inserted_at, source.c.id
    )


def _default_account(settings: Settings) -> tuple[int, str]:
    """The default account's id and name (its metrics label)."""
    with session_scope(settings) as session:
        account = get_or_create_default_account(session, settings)
        return account.id, account.name


def replicate_batch(
    settings: Settings, *, limit: int = BATCH_SIZE, source: Table | None = None, only: Any = None
) -> tuple[ReplicationResult, int]:
    """One transaction: insert up to `limit` missing rows. Returns (result, rows looked at)."""
    now = utcnow()
    account_id, account = _default_account(settings)
    with session_scope(settings) as session:
        if source is None:
            source = source_table(session.connection())
        pending = find_unreplicated(session, source, limit, only)
        if not pending:
            return ReplicationResult(), 0
        rows = [_row_for(v, account_id, now, settings) for v in pending]
        inserted_ids = set(
            session.execute(_insert(session).returning(SmsLog.__table__.c.id), rows).scalars()
        )
        result = ReplicationResult()
        newest: dict[str, dict[str, Any]] = {}
        for row in rows:
            if row["id"] not in inserted_ids:
                continue  # another replicator inserted this verification first
            status = row["send_status"]
            if status == SendStatus.QUEUED.value:
                newest[row["phone_number"]] = row  # rows come oldest first
                # Admitted as at every door; older codes end once per number, below.
                intake.admitted(
                    session, row, account=account, settings=settings, now=now, supersede=False
                )
                result += ReplicationResult(inserted=1, dispatched=1)
                continue
            metrics.message_stored(session, row["type"], account, status)
            if status == SendStatus.SUBMITTED.value:
                result += ReplicationResult(inserted=1, tracked=1)
            elif status == SendStatus.EXPIRED.value:
                log.info(
                    "verification %s not sent: %s (message %s)",
                    row["verification_id"],
                    row["last_error"],
                    row["id"],
                )
                result += ReplicationResult(inserted=1, ended=1)
            else:
                log.info(
                    "verification %s refused as %s (message %s)",
                    row["verification_id"],
                    status,
                    row["id"],
                )
                result += ReplicationResult(inserted=1, invalid=1)
        for row in newest.values():  # the newest code to a number ends the older ones
            privacy.supersede_older(
                session,
                new_id=row["id"],
                account_id=account_id,
                phone_number=row["phone_number"],
                message_type=row["type"],
                now=now,
                settings=settings,
            )
    return result, len(pending)


def replicate_verifications(
    settings: Settings | None = None, *, batch_size: int = BATCH_SIZE, max_batches: int = 100
) -> ReplicationResult:
    """One replication pass over every waiting verification; safe to run concurrently and
    repeatedly."""
    settings = settings or get_settings()
    total = ReplicationResult()
    source: Table | None = None
    for _ in range(max_batches):
        if source is None:
            with session_scope(settings) as session:
                source = source_table(session.connection())
        try:
            result, seen = replicate_batch(settings, limit=batch_size, source=source)
        except Exception:
            # Counted and logged; its verifications go again one by one, so that one that
            # cannot be replicated holds none of the others.
            metrics.poller_unit_failed("replication")
            log.exception("replication: a batch failed; its rows go one by one")
            result, seen = _one_by_one(settings, source, batch_size)
        total += result
        if seen < batch_size:
            break
    if total.inserted:
        log.info(
            "replication: %d new verification SMS (%d to send, %d tracked, %d refused, "
            "%d ended before sending)",
            total.inserted,
            total.dispatched,
            total.tracked,
            total.invalid,
            total.ended,
        )
    return total


def _one_by_one(settings: Settings, source: Table, limit: int) -> tuple[ReplicationResult, int]:
    """The next `limit` waiting verifications, each in a transaction of its own; one that
    still fails is set aside."""
    with session_scope(settings) as session:
        query = _unreplicated(select(source.c.id), source).limit(limit)
        ids = list(session.execute(query).scalars())
    total = ReplicationResult()
    for verification_id in ids:
        try:
            result, _ = replicate_batch(settings, limit=1, source=source, only=verification_id)
        except Exception as exc:
            metrics.poller_unit_failed("replication")
            result = _set_aside(settings, verification_id, exc)
        total += result
    return total, len(ids)


def _set_aside(settings: Settings, verification_id: Any, exc: Exception) -> ReplicationResult:
    """A verification that cannot be replicated ends as a final row that says so (`data1
    invalid`, without its number or code): replicated once, by that fact, and explained."""
    now = utcnow()
    account_id, account = _default_account(settings)
    row = _base_row(verification_id, account_id, now)
    reason = f"the verification row could not be replicated ({type(exc).__name__})"
    intake.refuse(row, SendStatus.DATA1_INVALID, reason, now)
    log.warning("replication: verification %s set aside: %s", verification_id, reason)
    with session_scope(settings) as session:
        inserted = session.execute(_insert(session).returning(SmsLog.__table__.c.id), [row]).all()
        if inserted:
            metrics.message_stored(session, row["type"], account, row["send_status"])
    return ReplicationResult(inserted=len(inserted), invalid=len(inserted))


def waiting(session: Session, source: Table | None = None) -> tuple[int, dt.datetime | None]:
    """Verifications waiting to be replicated, and the oldest one's `inserted_at`."""
    if source is None:
        source = source_table(session.connection())
    count, oldest = session.execute(
        select(func.count(), func.min(source.c.inserted_at)).where(
            ~exists().where(SmsLog.verification_id == source.c.id)
        )
    ).one()
    return int(count), oldest

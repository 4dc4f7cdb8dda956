"""Data protection: codes that expire and are superseded, redaction, retention, erasure.

Every rule here has its one home (docs/privacy.md says what is kept, where, how long):
- **Expiry.** Each message records one fact, `expires_at` = due + the type's maximum queue
  age, and for one-time codes no later than due + validity. A message not submitted by
  then is never sent: the claim refuses it (`still_sendable` in the one send predicate),
  and the privacy sweep (or a send attempt for that message) ends it `EXPIRED`, also
  behind a paused, inactive or out-of-credit account.
- **Supersede.** A new verification/2FA message ends the older ones of the same type,
  number and account not yet submitted: `SUPERSEDED` at once when waiting; when an attempt
  is in flight, `superseded_by` marks it so the answer is still recorded as it is, and a
  failed attempt is never retried (the claim refuses it; it ends `SUPERSEDED`).
- **Redaction.** Bodies of `SMS_REDACT_TYPES` become `[redacted]` in the privacy sweep
  after they are final (length kept in `body_chars`; segments and encoding stay).
- **Retention.** Messages final longer than their type's retention go in bounded batches
  with their replies, callback events and idempotency records; their counts go to
  `sms_daily_rollup`, which the report reads.
- **Erasure / export / audit** for one person, named in the audit log only by a keyed hash.
"""

from __future__ import annotations

import datetime as dt
import getpass
import hashlib
import hmac
import json
import logging
import os
import secrets
import uuid
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import phonenumbers
from sqlalchemy import (
    ColumnElement,
    and_,
    delete,
    event,
    func,
    or_,
    select,
    text,
    update,
)
from sqlalchemy.orm import Session

from sms_pipeline.db import (
    affected,
    among,
    get_engine,
    is_sqlite,
    session_scope,
    skip_locked,
    truncate_wal,
    upsert_insert,
)
from sms_pipeline.db.files import private_folder
from sms_pipeline.db.models import (
    Account,
    AuditEvent,
    CallbackEvent,
    DailyRollup,
    IdempotencyRecord,
    MessageType,
    OptOut,
    OptOutHash,
    SendStatus,
    SmsLog,
    SmsQueue,
    SmsReply,
    SmsShortcode,
    Verification,
    utcnow,
)
from sms_pipeline.errors import InvalidMessage
from sms_pipeline.metrics import hooks as metrics
from sms_pipeline.settings import Settings, SettingsError, get_settings

log = logging.getLogger(__name__)

# One-time codes: they get a validity, supersede each other and carry the time left.
OTP_TYPES = frozenset({MessageType.VERIFICATION.value, MessageType.TWO_FA.value})
REDACTED = "[redacted]"
KEY_FILE = "privacy.key"
_HASH_LABEL = b"sms-pipeline subject v1:"
_WAITING = SendStatus.QUEUED.value
_IN_FLIGHT = SendStatus.SENDING.value


# --- expiry -----------------------------------------------------------------------------------


def parse_valid_for(value: object) -> dt.timedelta | None:
    """`valid_for` of enqueue_sms: seconds or a timedelta, positive; None = the default."""
    if value is None:
        return None
    if isinstance(value, dt.timedelta):
        seconds = value.total_seconds()
    elif isinstance(value, int | float) and not isinstance(value, bool):
        seconds = float(value)
    else:
        raise InvalidMessage("valid_for", "must be seconds or a timedelta")
    if not 0 < seconds <= 366 * 86400:
        raise InvalidMessage("valid_for", "must be more than 0 seconds and at most a year")
    return dt.timedelta(seconds=seconds)


def expiry_for(
    message_type: str,
    due_at: dt.datetime,
    settings: Settings,
    valid_for: dt.timedelta | None = None,
    code_expires_at: dt.datetime | None = None,
) -> dt.datetime:
    """When a message due at `due_at` stops being worth sending (the `expires_at` fact)."""
    limit = due_at + dt.timedelta(seconds=settings.max_queue_age(message_type))
    if valid_for is None and message_type in OTP_TYPES:
        valid_for = dt.timedelta(seconds=settings.sms_otp_valid_seconds)
    if valid_for is not None:
        limit = min(limit, due_at + valid_for)
    if code_expires_at is not None:
        limit = min(limit, code_expires_at)
    return limit


def gateway_validity(
    message_type: str, expires_at: dt.datetime | None, now: dt.datetime, default: str | None
) -> str | None:
    """The `validity` attribute: a code's time left in whole minutes (at least one).

    Rounded down, so the carrier never delivers a code after it stopped being valid (a
    code with under a minute left still gets one minute: the gateway has no finer unit).
    """
    if expires_at is None or message_type not in OTP_TYPES:
        return default
    minutes = max(1, int((expires_at - now).total_seconds() // 60))
    return f"+{minutes} minute"


def still_sendable(now: Any) -> ColumnElement[bool]:
    """The send predicate's part: not expired and not superseded (`now` a bind parameter)."""
    return and_(
        or_(SmsLog.expires_at.is_(None), SmsLog.expires_at > now),
        SmsLog.superseded_by.is_(None),
    )


def _expiry_reason(expires_at: dt.datetime | None) -> str:
    when = expires_at.strftime("%Y-%m-%dT%H:%M:%SZ") if expires_at else "its expiry"
    return f"expired: not submitted by {when} (code validity or maximum queue age)"


def superseded_reason(newer: uuid.UUID | None) -> str:
    return f"superseded by a newer code to the same number ({newer})"


def end_unsendable(
    settings: Settings | None = None,
    *,
    now: dt.datetime | None = None,
    ids: Sequence[uuid.UUID] | None = None,
) -> list[tuple[uuid.UUID, SendStatus]]:
    """End waiting messages past `expires_at` (or superseded) as EXPIRED / SUPERSEDED.

    All of them (the privacy sweep), or only `ids` (a send attempt for given messages, which
    the claim refused). The rows are found through the outbox's partial index (waiting
    messages only), so the cost follows the queue, not the log. Paused, inactive and
    out-of-credit accounts included. Returns the ended ids and their statuses.
    """
    settings = settings or get_settings()
    now = now or utcnow()
    ended: list[tuple[uuid.UUID, SendStatus]] = []
    for status, condition, reason in (
        (
            SendStatus.SUPERSEDED,
            SmsLog.superseded_by.is_not(None),
            "superseded by a newer code to the same number",
        ),
        (
            SendStatus.EXPIRED,
            and_(SmsLog.expires_at.is_not(None), SmsLog.expires_at <= now),
            _expiry_reason(None),
        ),
    ):
        where = [SmsLog.send_status == _WAITING, condition]
        if ids is not None:
            where.append(SmsLog.id.in_(list(ids)))
        with session_scope(settings) as session:
            rows = session.execute(
                update(SmsLog)
                .where(*where)
                .values(send_status=status.value, final_at=now, lease_until=None, last_error=reason)
                .returning(SmsLog.id, SmsLog.type, SmsLog.account_id, SmsLog.attempts)
                .execution_options(synchronize_session=False)
            ).all()
            for message_id, message_type, account_id, attempts in rows:
                metrics.message_ended(session, message_type, account_id, attempts, status)
                ended.append((message_id, status))
    if ended and ids is None:
        log.info("privacy: %d waiting messages ended EXPIRED/SUPERSEDED", len(ended))
    return ended


def expire_waiting(settings: Settings | None = None, *, now: dt.datetime | None = None) -> int:
    """End every waiting message that expired or was superseded; how many (the sweep)."""
    return len(end_unsendable(settings, now=now))


# --- supersede -------------------------------------------------------------------------------


# The per-number lock of a code (PostgreSQL; psycopg's placeholder, SQLAlchemy's below).
NUMBER_LOCK_SQL = "SELECT pg_advisory_xact_lock(hashtextextended(%(k)s, 18))"


def number_lock_key(account_id: int, phone_number: str) -> str:
    return f"otp:{account_id}:{phone_number}"


def _lock_number(session: Session, account_id: int, phone_number: str) -> None:
    # Two enqueues to one number take turns: the later one sees (and supersedes) the
    # earlier one's committed row. SQLite's BEGIN IMMEDIATE already serialises writers.
    if not is_sqlite(session.get_bind()):
        session.execute(
            text("SELECT pg_advisory_xact_lock(hashtextextended(:k, 18))"),
            {"k": number_lock_key(account_id, phone_number)},
        )


def supersedes(message_type: str, settings: Settings) -> bool:
    """Whether a new message of this type ends the older ones to its number."""
    return settings.sms_otp_supersede and message_type in OTP_TYPES


def supersede_older(
    session: Session,
    *,
    new_id: uuid.UUID,
    account_id: int,
    phone_number: str,
    message_type: str,
    now: dt.datetime,
    settings: Settings,
) -> int:
    """Before storing a new code: end the older ones to the number not yet submitted.

    Call it in the transaction that inserts the new message, before the insert. Waiting
    ones end SUPERSEDED now; one whose attempt is in flight is marked (`superseded_by`): its
    answer is recorded as it comes, and it is never attempted again.
    """
    if not supersedes(message_type, settings):
        return 0
    _lock_number(session, account_id, phone_number)
    same = (
        (SmsLog.account_id == account_id)
        & (SmsLog.phone_number == phone_number)
        & (SmsLog.type == message_type)
        & (SmsLog.id != new_id)
    )
    rows = session.execute(
        update(SmsLog)
        .where(same, SmsLog.send_status == _WAITING)
        .values(
            send_status=SendStatus.SUPERSEDED.value,
            superseded_by=new_id,
            final_at=now,
            lease_until=None,
            last_error=superseded_reason(new_id),
        )
        .returning(SmsLog.attempts)
        .execution_options(synchronize_session=False)
    ).all()
    for (attempts,) in rows:
        metrics.message_ended(session, message_type, account_id, attempts, SendStatus.SUPERSEDED)
    marked = affected(
        session.execute(
            update(SmsLog)
            .where(same, SmsLog.send_status == _IN_FLIGHT, SmsLog.superseded_by.is_(None))
            .values(superseded_by=new_id)
            .execution_options(synchronize_session=False)
        )
    )
    return len(rows) + marked


# --- redaction --------------------------------------------------------------------------------


def redact_final(
    settings: Settings | None = None, *, now: dt.datetime | None = None, limit: int = 10000
) -> int:
    """Replace the bodies of final messages of SMS_REDACT_TYPES by the marker (one UPDATE).

    The rows come from the partial index ix_sms_log_unredacted (final, not yet redacted),
    so the cost follows what is left to redact.
    """
    settings = settings or get_settings()
    now = now or utcnow()
    types = sorted(settings.sms_redact_types)
    if not types:
        return 0
    with session_scope(settings) as session:
        candidates = (
            select(SmsLog.id)
            .where(
                SmsLog.redacted_at.is_(None),
                SmsLog.final_at.is_not(None),
                SmsLog.type.in_(types),
                SmsLog.final_at <= now,
            )
            .limit(limit)
        )
        redacted = affected(
            session.execute(
                update(SmsLog)
                .where(SmsLog.id.in_(candidates))
                .values(body=REDACTED, body_chars=func.length(SmsLog.body), redacted_at=now)
                .execution_options(synchronize_session=False)
            )
        )
    if redacted:
        metrics.privacy_action("redacted", redacted)
        forget_old_copies(settings)
    return redacted


def forget_old_copies(settings: Settings | None = None) -> None:
    """SQLite: no copy of what was just redacted or erased stays in the WAL (see truncate_wal).

    The database file itself keeps none: `secure_delete` is on for every connection.
    PostgreSQL: nothing to do here (its WAL and dead tuples are the server's; VACUUM).
    """
    _truncate(get_engine(settings))


def _forget_after_commit(session: Session) -> None:
    engine = session.get_bind().engine
    if is_sqlite(engine):
        event.listen(session, "after_commit", lambda _s: _truncate(engine), once=True)


def _truncate(engine: Any, tries: int = 3) -> None:
    for _ in range(tries):  # busy: a reader outlasted the busy timeout; try again
        outcome = truncate_wal(engine)
        if outcome is None or not outcome[0]:
            return
    log.warning("privacy: the WAL checkpoint was busy; old copies stay until the next one")


def privacy_sweep(
    settings: Settings | None = None, *, now: dt.datetime | None = None
) -> dict[str, int]:
    """The beat job (status-poll period): expire what waited too long, then redact."""
    settings = settings or get_settings()
    now = now or utcnow()
    expired = expire_waiting(settings, now=now)
    return {"ended": expired, "redacted": redact_final(settings, now=now)}


# --- retention --------------------------------------------------------------------------------


@dataclass
class PurgeResult:
    messages: int = 0
    replies: int = 0
    shortcodes: int = 0
    callback_events: int = 0
    idempotency_records: int = 0
    batches: int = 0

    def as_dict(self) -> dict[str, int]:
        return dict(self.__dict__)


def _outcome(send_status: str, gateway_status: str | None) -> str:
    from sms_pipeline.metrics.queries import outcome_of

    return outcome_of(send_status, gateway_status)


def _add_to_rollup(
    session: Session, counts: dict[tuple[dt.date, int, str, str], list[int]]
) -> None:
    if not counts:
        return
    rows = [
        {"day": d, "hour": h, "type": t, "outcome": o, "messages": n, "segments": s}
        for (d, h, t, o), (n, s) in counts.items()
    ]
    statement = upsert_insert(session, DailyRollup)
    session.execute(
        statement.on_conflict_do_update(
            index_elements=["day", "hour", "type", "outcome"],
            set_={
                "messages": DailyRollup.messages + statement.excluded.messages,
                "segments": DailyRollup.segments + statement.excluded.segments,
            },
        ),
        rows,
    )


def _delete_messages(session: Session, ids: list[uuid.UUID], result: PurgeResult) -> None:
    for model, column in (
        (CallbackEvent, CallbackEvent.message_id),
        (IdempotencyRecord, IdempotencyRecord.message_id),
        (SmsReply, SmsReply.message_id),
        (SmsLog, SmsLog.id),
    ):
        statement = delete(model).where(among(session, column, ids))
        gone = affected(session.execute(statement.execution_options(synchronize_session=False)))
        if model is CallbackEvent:
            result.callback_events += gone
        elif model is IdempotencyRecord:
            result.idempotency_records += gone
        elif model is SmsReply:
            result.replies += gone
        else:
            result.messages += gone


def purge_expired_rows(
    settings: Settings | None = None,
    *,
    now: dt.datetime | None = None,
    batch_size: int | None = None,
    max_batches: int | None = None,
) -> PurgeResult:
    """Delete messages final longer than their type's retention, one batch per transaction.

    Each batch adds its messages to the daily rollup and deletes them, their callback
    events, idempotency records and replies in one short transaction (rows another
    transaction holds are skipped, never waited for), so the send path keeps running.
    Replies and shortcode messages not tied to a message go after SMS_RETENTION_DAYS.
    """
    settings = settings or get_settings()
    now = now or utcnow()
    size = batch_size or settings.sms_retention_batch_size
    result = PurgeResult()
    for message_type in (t.value for t in MessageType):
        cutoff = now - dt.timedelta(days=settings.retention_days(message_type))
        while max_batches is None or result.batches < max_batches:
            with session_scope(settings) as session:
                query = (
                    select(
                        SmsLog.id,
                        SmsLog.inserted_at,
                        SmsLog.send_status,
                        SmsLog.gateway_status,
                        SmsLog.segments,
                    )
                    .where(
                        SmsLog.inserted_at < cutoff,
                        SmsLog.type == message_type,
                        SmsLog.final_at < cutoff,
                    )
                    .order_by(SmsLog.inserted_at)
                    .limit(size)
                )
                rows = session.execute(skip_locked(session, query)).all()
                if not rows:
                    break
                counts: dict[tuple[dt.date, int, str, str], list[int]] = defaultdict(lambda: [0, 0])
                for row in rows:
                    key = (
                        row.inserted_at.date(),
                        row.inserted_at.hour,
                        message_type,
                        _outcome(row.send_status, row.gateway_status),
                    )
                    counts[key][0] += 1
                    counts[key][1] += row.segments
                _add_to_rollup(session, counts)
                _delete_messages(session, [row.id for row in rows], result)
            result.batches += 1
            if len(rows) < size:
                break
    cutoff = now - dt.timedelta(days=settings.sms_retention_days)
    for model, when in ((SmsReply, SmsReply.received_at), (SmsShortcode, SmsShortcode.received_at)):
        while True:
            with session_scope(settings) as session:
                ids = select(model.id).where(when < cutoff).limit(size)
                gone = affected(
                    session.execute(
                        delete(model)
                        .where(model.id.in_(ids))
                        .execution_options(synchronize_session=False)
                    )
                )
            if model is SmsReply:
                result.replies += gone
            else:
                result.shortcodes += gone
            if gone < size:
                break
    if result.messages:
        metrics.privacy_action("purged", result.messages)
        log.info("privacy: retention purged %s", result.as_dict())
    if result.messages or result.replies or result.shortcodes:
        forget_old_copies(settings)
    return result


def rollup_counts(
    session_or_conn: Any, since: dt.datetime, until: dt.datetime
) -> dict[tuple[dt.datetime, str, str], int]:
    """Purged messages per (hour, type, outcome) for the report's window."""
    rows = session_or_conn.execute(
        select(
            DailyRollup.day,
            DailyRollup.hour,
            DailyRollup.type,
            DailyRollup.outcome,
            DailyRollup.messages,
        ).where(DailyRollup.day >= since.date(), DailyRollup.day <= until.date())
    ).all()
    out: dict[tuple[dt.datetime, str, str], int] = defaultdict(int)
    for day, hour, message_type, outcome, messages in rows:
        when = dt.datetime(day.year, day.month, day.day, hour, tzinfo=dt.UTC)
        if since.replace(minute=0, second=0, microsecond=0) <= when < until:
            out[(when, message_type, outcome)] += int(messages)
    return out


# --- the keyed hash ---------------------------------------------------------------------------


def _key_path(settings: Settings) -> Path:
    return settings.sms_data_dir.resolve() / KEY_FILE


def privacy_key(settings: Settings, *, create: bool) -> bytes | None:
    """SMS_PRIVACY_KEY, or the key kept in the data folder (embedded database only).

    With `create`, an embedded install generates its key on first use (file mode 0600);
    with PostgreSQL a missing SMS_PRIVACY_KEY is a configuration error (several hosts must
    share one key, or an erased opt-out would stop holding).
    """
    if settings.sms_privacy_key is not None:
        value = settings.sms_privacy_key.get_secret_value()
        if len(value) < 16:
            raise SettingsError("SMS_PRIVACY_KEY: must be at least 16 characters")
        return value.encode("utf-8")
    if not is_sqlite(settings.database_url) and not create:
        return None  # a server database never has a key file (see below): no disk look-up
    path = _key_path(settings)
    if path.exists():
        return path.read_bytes().strip()
    if not create:
        return None
    if not is_sqlite(settings.database_url):
        raise SettingsError(
            "SMS_PRIVACY_KEY: required with a server database (a long random secret, "
            "the same on every host)"
        )
    private_folder(path.parent)  # 0700: the key file below is 0600
    # Written whole under a temporary name, then linked into place: another process never
    # reads a half-written key, and the first one linked wins.
    draft = path.with_name(f".{KEY_FILE}.{os.getpid()}.{secrets.token_hex(4)}")
    fd = os.open(draft, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(secrets.token_urlsafe(32))
    try:
        os.link(draft, path)
    except FileExistsError:
        pass
    finally:
        draft.unlink()
    return path.read_bytes().strip()


def subject_hash(number: str, settings: Settings | None = None, *, create: bool = True) -> str:
    """The keyed hash (HMAC-SHA256) that names a person without their number."""
    settings = settings or get_settings()
    key = privacy_key(settings, create=create)
    if key is None:
        raise SettingsError("SMS_PRIVACY_KEY: no key configured")
    return hmac.new(key, _HASH_LABEL + number.encode("utf-8"), hashlib.sha256).hexdigest()


def erased_opt_out(session: Session, number: str, settings: Settings | None = None) -> bool:
    """Whether `number` opted out and was erased since (its opt-out kept only as a hash)."""
    settings = settings or get_settings()
    if privacy_key(settings, create=False) is None:
        return False  # no key, so no hash was ever stored
    return session.get(OptOutHash, subject_hash(number, settings, create=False)) is not None


def forget_erased_opt_out(session: Session, number: str, settings: Settings | None = None) -> None:
    """An opt-in (START) from `number` also lifts an opt-out kept as a hash."""
    settings = settings or get_settings()
    if privacy_key(settings, create=False) is None:
        return
    session.execute(
        delete(OptOutHash).where(OptOutHash.phone_hash == subject_hash(number, settings))
    )


# --- audit ------------------------------------------------------------------------------------


def os_actor() -> str:
    try:
        return "os:" + getpass.getuser()
    except Exception:  # no user name (a container without /etc/passwd entry)
        return f"os:uid {os.getuid()}"


def audit(
    session: Session,
    actor: str,
    action: str,
    *,
    number: str | None = None,
    detail: dict[str, Any] | None = None,
    settings: Settings | None = None,
    account: str | None = None,
) -> None:
    """One audit row: who did what to whose data (the person by keyed hash only).

    `account`: the account the action was limited to (None: every account).
    """
    subject = subject_hash(number, settings) if number is not None else None
    session.add(
        AuditEvent(
            at=utcnow(),
            actor=actor[:128],
            action=action,
            subject_hash=subject,
            detail=json.dumps(detail, sort_keys=True, default=str) if detail else None,
            account=account,
        )
    )


def audit_rows(session: Session, *, limit: int = 100) -> list[AuditEvent]:
    return list(session.scalars(select(AuditEvent).order_by(AuditEvent.id.desc()).limit(limit)))


# --- one person: export and erasure -----------------------------------------------------------


def normalise_subject(raw: str) -> str:
    """The E.164 form of a person's number (InvalidMessage when it is not one)."""
    from sms_pipeline.services.intake import parse_number

    return parse_number(raw)


def _same_number(raw: str | None, number: str) -> bool:
    if not raw:
        return False
    text_form = raw.strip()
    if text_form == number:
        return True
    if text_form[:1].isdigit():
        text_form = "+" + text_form.lstrip("0") if text_form.startswith("00") else "+" + text_form
    try:
        parsed = phonenumbers.parse(text_form, None)
    except phonenumbers.NumberParseException:
        return False
    return phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164) == number


def _matching(
    session: Session, column: Any, pk: Any, number: str, where: Sequence[Any] = ()
) -> list[Any]:
    """Primary keys of rows whose free-form number column holds `number` in any spelling."""
    tail = number[-7:]
    rows = session.execute(select(pk, column).where(column.like(f"%{tail}%"), *where)).all()
    return [key for key, raw in rows if _same_number(raw, number)]


def _row(obj: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for column in obj.__table__.columns:
        value = getattr(obj, column.key)
        if isinstance(value, dt.datetime | dt.date | uuid.UUID):
            value = str(value)
        out[column.key] = value
    return out


@dataclass
class SubjectRows:
    number: str
    messages: list[Any] = field(default_factory=list)
    replies: list[Any] = field(default_factory=list)
    shortcodes: list[Any] = field(default_factory=list)
    queue: list[Any] = field(default_factory=list)
    callback_events: list[Any] = field(default_factory=list)
    idempotency_records: list[Any] = field(default_factory=list)
    opt_outs: list[Any] = field(default_factory=list)
    opt_out_hashes: list[Any] = field(default_factory=list)


def _in_account(column: Any, account_id: int | None) -> list[Any]:
    return [] if account_id is None else [column == account_id]


def _collect(
    session: Session, number: str, settings: Settings, account_id: int | None = None
) -> SubjectRows:
    """The person's rows; with `account_id`, only that account's (an account admin's scope).

    Opt-outs (kept for every account) are the platform's: collected only without an account.
    """
    found = SubjectRows(number)
    found.messages = list(
        session.scalars(
            select(SmsLog).where(
                SmsLog.phone_number == number, *_in_account(SmsLog.account_id, account_id)
            )
        )
    )
    ids = [m.id for m in found.messages]
    reply_ids = set(
        _matching(
            session,
            SmsReply.phone_number,
            SmsReply.id,
            number,
            _in_account(SmsReply.account_id, account_id),
        )
    )
    if ids:
        reply_ids |= set(session.scalars(select(SmsReply.id).where(SmsReply.message_id.in_(ids))))
        found.callback_events = list(
            session.scalars(select(CallbackEvent).where(CallbackEvent.message_id.in_(ids)))
        )
        found.idempotency_records = list(
            session.scalars(select(IdempotencyRecord).where(IdempotencyRecord.message_id.in_(ids)))
        )
    if reply_ids:
        found.replies = list(session.scalars(select(SmsReply).where(SmsReply.id.in_(reply_ids))))
    sc_ids = _matching(
        session,
        SmsShortcode.num_from,
        SmsShortcode.id,
        number,
        _in_account(SmsShortcode.account_id, account_id),
    )
    if sc_ids:
        found.shortcodes = list(
            session.scalars(select(SmsShortcode).where(SmsShortcode.id.in_(sc_ids)))
        )
    queue_ids = _matching(
        session, SmsQueue.num_to, SmsQueue.id, number, _in_account(SmsQueue.account_id, account_id)
    )
    if queue_ids:
        found.queue = list(session.scalars(select(SmsQueue).where(SmsQueue.id.in_(queue_ids))))
    if account_id is not None:
        return found
    opt_out = session.get(OptOut, number)
    found.opt_outs = [opt_out] if opt_out is not None else []
    hashed = session.get(OptOutHash, subject_hash(number, settings))
    found.opt_out_hashes = [hashed] if hashed is not None else []
    return found


def _account_name(session: Session, account_id: int | None) -> str | None:
    if account_id is None:
        return None
    name = session.scalar(select(Account.name).where(Account.id == account_id))
    return name if name is not None else f"#{account_id}"


def export_subject(
    session: Session,
    raw_number: str,
    actor: str,
    settings: Settings | None = None,
    *,
    account_id: int | None = None,
) -> dict[str, Any]:
    """Every row about one person, as JSON-ready data (a subject access request); audited.

    With `account_id` (an account admin), only that account's rows: its messages, replies,
    shortcode messages, queue rows and their events; the platform's opt-out list and the
    verification service's rows are left to a platform admin. The audit row names the account.

    The verification service's own rows (`verification.verifications`) are read, not
    written: they are listed under `verifications (owned by the verification service)`.
    """
    settings = settings or get_settings()
    number = normalise_subject(raw_number)
    found = _collect(session, number, settings, account_id)
    verifications = (
        list(
            session.scalars(
                select(Verification).where(
                    Verification.phone_number.in_([number, number.lstrip("+")])
                )
            )
        )
        if account_id is None
        else []
    )
    account = _account_name(session, account_id)
    data: dict[str, Any] = {
        "phone_number": number,
        "account": account,
        "tables": {
            "sms_log": [_row(m) for m in found.messages],
            "sms_replies": [_row(r) for r in found.replies],
            "sms_shortcodes": [_row(s) for s in found.shortcodes],
            "sms_queue": [_row(q) for q in found.queue],
            "callback_events": [_row(e) for e in found.callback_events],
            "api_idempotency": [_row(i) for i in found.idempotency_records],
            "opt_outs": [_row(o) for o in found.opt_outs],
            "opt_out_hashes": [_row(h) for h in found.opt_out_hashes],
            "verifications (owned by the verification service)": [_row(v) for v in verifications],
        },
    }
    audit(
        session,
        actor,
        "export",
        number=number,
        detail={t: len(rows) for t, rows in data["tables"].items()},
        settings=settings,
        account=account,
    )
    return data


def erase_subject(
    session: Session,
    raw_number: str,
    actor: str,
    settings: Settings | None = None,
    *,
    account_id: int | None = None,
) -> dict[str, int]:
    """Remove every row that holds one person's number; rows removed per table; audited.

    What stays: an opt-out becomes its keyed hash (so STOP still holds), and the audit row
    naming the person by that hash. `verification.verifications` is the verification
    service's to purge: never written here. With `account_id` (an account admin), only that
    account's rows go; other accounts' rows and the opt-out stay.
    """
    settings = settings or get_settings()
    number = normalise_subject(raw_number)
    found = _collect(session, number, settings, account_id)
    removed: dict[str, int] = {}
    message_ids = [m.id for m in found.messages]
    for name, rows in (
        ("callback_events", found.callback_events),
        ("api_idempotency", found.idempotency_records),
        ("sms_replies", found.replies),
        ("sms_shortcodes", found.shortcodes),
        ("sms_queue", found.queue),
    ):
        for row in rows:
            session.delete(row)
        removed[name] = len(rows)
    session.flush()
    removed["sms_log"] = (
        affected(session.execute(delete(SmsLog).where(SmsLog.id.in_(message_ids))))
        if message_ids
        else 0
    )
    removed["opt_outs"] = 0
    if found.opt_outs:
        opt_out = found.opt_outs[0]
        if not found.opt_out_hashes:
            session.add(
                OptOutHash(
                    phone_hash=subject_hash(number, settings),
                    opted_out_at=opt_out.opted_out_at,
                    source=opt_out.source,
                )
            )
        session.delete(opt_out)
        removed["opt_outs"] = 1
    audit(
        session,
        actor,
        "erase",
        number=number,
        detail=removed,
        settings=settings,
        account=_account_name(session, account_id),
    )
    _forget_after_commit(session)  # the caller commits: then the WAL's old copies go
    session.flush()
    metrics.privacy_action("erased", 1)
    return removed


def audit_body_read(
    session: Session, actor: str, message_ids: Iterable[uuid.UUID], settings: Settings | None = None
) -> None:
    """`show --body` and the API: one audit row per message whose body was read."""
    for message_id in message_ids:
        number = session.scalar(select(SmsLog.phone_number).where(SmsLog.id == message_id))
        audit(
            session,
            actor,
            "read_body",
            number=number,
            detail={"message_id": str(message_id)},
            settings=settings,
        )


__all__ = [
    "OTP_TYPES",
    "REDACTED",
    "PurgeResult",
    "audit",
    "audit_body_read",
    "audit_rows",
    "end_unsendable",
    "erase_subject",
    "erased_opt_out",
    "expire_waiting",
    "expiry_for",
    "export_subject",
    "forget_erased_opt_out",
    "gateway_validity",
    "os_actor",
    "parse_valid_for",
    "privacy_sweep",
    "purge_expired_rows",
    "redact_final",
    "rollup_counts",
    "still_sendable",
    "subject_hash",
    "supersede_older",
]

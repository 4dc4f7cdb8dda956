"""Replication: every new row of `verification.verifications` becomes one `sms_log` row.

Why a safe window and an anti-join rather than a high-water mark
------------------------------------------------------------------
The verification service writes `inserted_at` when it inserts a row, not when that row
commits. A transaction that inserts early and commits late makes a row appear *behind*
rows already seen, so a mark ("everything up to inserted_at X is done") would skip it
for ever. Each pass therefore looks at every verification inserted in the last
SMS_REPLICATION_SAFE_WINDOW_SECONDS (default 600 s) that has no `sms_log` row yet
(NOT EXISTS on `sms_log.verification_id`): a row committed late is found by the next
pass, as long as its transaction was open for less than the window.

Exactly once comes from the database, not from the poller: `sms_log.verification_id`
is unique and rows go in with INSERT ... ON CONFLICT (verification_id) DO NOTHING
RETURNING, so two replicators running at once (or a pass repeated after a crash) insert
each row once, and only the rows this pass actually inserted are dispatched, after
commit, through the outbox. Later changes to a verification (attempts_count, status)
never create another row: the anti-join and the unique key both see the first one.

Cost: the scan uses `ix_verifications_inserted_at` and one probe of the unique index per
candidate, so a pass costs about the number of verifications created within the window
(a few thousand rows at most), whatever the size of the history. A high-water mark would
only trim that to the rows after the mark, and it would need a mark table and still
fall back to the window for late commits; it is not worth its state.
"""

from __future__ import annotations

import datetime as dt
import logging
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, cast

from sqlalchemy import Insert, Table, exists, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from sms_pipeline.db import session_scope
from sms_pipeline.db.models import (
    MessageType,
    SendStatus,
    SmsLog,
    Verification,
    utcnow,
)
from sms_pipeline.errors import InvalidMessage
from sms_pipeline.gateway import GatewayStatus
from sms_pipeline.metrics import hooks as metrics
from sms_pipeline.services import privacy
from sms_pipeline.services.accounts import get_or_create_default_account
from sms_pipeline.services.enqueue import normalise_phone_number, validate_body
from sms_pipeline.services.outbox import Dispatch, dispatch_after_commit
from sms_pipeline.settings import Settings, get_settings

log = logging.getLogger(__name__)

BATCH_SIZE = 1000


def render_body(code: str, template: str) -> str:
    """The SMS text for a verification code (`{code}` in the template; no other fields)."""
    return template.replace("{code}", code)


@dataclass(frozen=True)
class ReplicationResult:
    inserted: int = 0  # new sms_log rows
    dispatched: int = 0  # of which queued for sending by us
    tracked: int = 0  # of which already sent by the verification service: polled only
    invalid: int = 0  # of which refused (number invalid / data1 invalid)

    def __add__(self, other: ReplicationResult) -> ReplicationResult:
        return ReplicationResult(
            self.inserted + other.inserted,
            self.dispatched + other.dispatched,
            self.tracked + other.tracked,
            self.invalid + other.invalid,
        )


def _row_for(
    verification: Verification, account_id: int, now: dt.datetime, settings: Settings
) -> dict[str, Any]:
    message_id = uuid.uuid4()
    body = render_body(verification.code or "", settings.sms_verification_template)
    row: dict[str, Any] = {
        "id": message_id,
        "type": MessageType.VERIFICATION.value,
        "body": body,
        "account_id": account_id,
        "priority": 0,
        "due_at": now,
        "expires_at": privacy.expiry_for(
            MessageType.VERIFICATION.value,
            now,
            settings,
            code_expires_at=verification.code_expired_at,
        ),
        "attempts": 0,
        "status_checks": 0,
        "segments": 1,
        "encoding": "GSM-7",
        "flash": False,
        "verification_id": verification.id,
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
    raw_number = verification.phone_number or ""
    number_error: str | None = None
    try:
        number = normalise_phone_number(raw_number)
    except InvalidMessage as exc:
        number, number_error = raw_number.strip()[:32], exc.reason
    row["phone_number"] = number

    if verification.gateway_id:
        # The verification service sent it itself: track it (poll its status), never send.
        sent_at = verification.inserted_at or now
        row.update(
            send_status=SendStatus.SUBMITTED.value,
            gateway_id=verification.gateway_id[:64],
            gateway_status=GatewayStatus.ACCEPTED.value,
            status_changed_at=sent_at,
            submitted_at=sent_at,
            next_check_at=now,
        )
        return row
    if number_error is not None:
        row.update(
            send_status=SendStatus.NUMBER_INVALID.value, last_error=number_error, final_at=now
        )
        return row
    try:
        valid = validate_body(body, settings)
    except InvalidMessage as exc:
        row.update(send_status=SendStatus.DATA1_INVALID.value, last_error=str(exc), final_at=now)
        return row
    row.update(
        send_status=SendStatus.QUEUED.value,
        uniq_key=message_id.hex,
        segments=valid.segments,
        encoding=valid.encoding,
        dispatched_at=now,
    )
    return row


def _insert(session: Session) -> Insert:
    table = cast(Table, SmsLog.__table__)
    if session.get_bind().dialect.name == "sqlite":
        return sqlite.insert(table).on_conflict_do_nothing(index_elements=["verification_id"])
    return postgresql.insert(table).on_conflict_do_nothing(index_elements=["verification_id"])


def find_unreplicated(session: Session, since: dt.datetime, limit: int) -> Sequence[Verification]:
    """Verifications inserted since `since` that have no sms_log row yet, oldest first."""
    # The same total order in every replicator: concurrent passes insert overlapping rows
    # in the same order, so they wait on each other's keys instead of deadlocking.
    return session.scalars(
        select(Verification)
        .where(
            Verification.inserted_at >= since,
            ~exists().where(SmsLog.verification_id == Verification.id),
        )
        .order_by(Verification.inserted_at, Verification.id)
        .limit(limit)
    ).all()


def replicate_batch(
    settings: Settings, *, limit: int = BATCH_SIZE
) -> tuple[ReplicationResult, int]:
    """One transaction: insert up to `limit` missing rows. Returns (result, rows looked at)."""
    now = utcnow()
    since = now - dt.timedelta(seconds=settings.sms_replication_safe_window_seconds)
    with session_scope(settings) as session:
        pending = find_unreplicated(session, since, limit)
        if not pending:
            return ReplicationResult(), 0
        account_id = get_or_create_default_account(session, settings).id
        rows = [_row_for(v, account_id, now, settings) for v in pending]
        inserted_ids = set(
            session.execute(_insert(session).returning(SmsLog.__table__.c.id), rows).scalars()
        )
        result = ReplicationResult()
        account = metrics.account_name(account_id)
        newest: dict[str, dict[str, Any]] = {}
        for row in rows:
            if row["id"] not in inserted_ids:
                continue  # another replicator inserted this verification first
            status = row["send_status"]
            metrics.message_stored(session, row["type"], account, status)
            if status == SendStatus.QUEUED.value:
                newest[row["phone_number"]] = row  # rows come oldest first
                dispatch_after_commit(session, Dispatch(row["id"], row["type"], row["priority"]))
                result += ReplicationResult(inserted=1, dispatched=1)
            elif status == SendStatus.SUBMITTED.value:
                result += ReplicationResult(inserted=1, tracked=1)
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
    """One replication pass over the safe window; safe to run concurrently and repeatedly."""
    settings = settings or get_settings()
    total = ReplicationResult()
    for _ in range(max_batches):
        result, seen = replicate_batch(settings, limit=batch_size)
        total += result
        if seen < batch_size:
            break
    if total.inserted:
        log.info(
            "replication: %d new verification SMS (%d to send, %d tracked, %d refused)",
            total.inserted,
            total.dispatched,
            total.tracked,
            total.invalid,
        )
    return total

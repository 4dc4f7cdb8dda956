"""The SQL route (after the SMSPortal SQL service): rows other applications insert into `sms_queue`.

Per account, every `process_queue_interval` seconds, waiting rows become `sms_log`
messages in one transaction that also deletes them; bad rows end in the log as
`number invalid` / `data1 invalid` rather than vanishing.
"""

from __future__ import annotations

import datetime as dt
import logging
import uuid

from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session

from sms_pipeline.db import session_scope, skip_locked
from sms_pipeline.db.models import Account, MessageType, SendStatus, SmsLog, SmsQueue, utcnow
from sms_pipeline.errors import InvalidMessage
from sms_pipeline.metrics import hooks as metrics
from sms_pipeline.priorities import priority_problem
from sms_pipeline.services import optout, privacy
from sms_pipeline.services.enqueue import (
    is_opted_out,
    normalise_phone_number,
    validate_body,
    validate_type,
    validate_xml_text,
)
from sms_pipeline.services.outbox import dispatch_after_commit, dispatch_of
from sms_pipeline.settings import Settings, get_settings

log = logging.getLogger(__name__)


def _message_from_row(
    session: Session, row: SmsQueue, now: dt.datetime, settings: Settings
) -> SmsLog:
    message_id = uuid.uuid4()
    status, error, segments, encoding = SendStatus.QUEUED, None, 1, "GSM-7"
    number = (row.num_to or "")[:32]
    # An unknown type is stored as a text (and refused below): the log's CHECK allows
    # only the known ones.
    known = {t.value for t in MessageType}
    message_type = row.message_type if row.message_type in known else MessageType.TEXT.value
    try:
        number = normalise_phone_number(row.num_to)
    except InvalidMessage as exc:
        status, error = SendStatus.NUMBER_INVALID, exc.reason
    if status is SendStatus.QUEUED:
        try:
            validate_type(row.message_type)
            valid = validate_body(row.data1, settings)
            segments, encoding = valid.segments, valid.encoding
            for field, value in (("sender_id", row.sender_id), ("customer_id", row.customer_id)):
                validate_xml_text(field, value or "")
            if (problem := priority_problem(row.priority)) is not None:
                # The same range as enqueue_sms; SMSPortal's two refusal words name the
                # number or the rest of the row, so the reason goes in last_error.
                raise InvalidMessage("priority", problem)
        except InvalidMessage as exc:
            status, error = SendStatus.DATA1_INVALID, str(exc)
    if status is SendStatus.QUEUED and optout.stops(message_type) and is_opted_out(session, number):
        status, error = SendStatus.OPTED_OUT, "number opted out"
    send_at = row.send_at
    return SmsLog(
        id=message_id,
        phone_number=number,
        type=message_type,
        body=row.data1 or "",
        account_id=row.account_id,
        sender_id=(row.sender_id or None) and row.sender_id[:16],
        priority=row.priority,
        send_after=send_at,
        due_at=max(now, send_at) if send_at else now,
        expires_at=privacy.expiry_for(
            message_type, max(now, send_at) if send_at else now, settings
        ),
        send_status=status.value,
        last_error=error,
        uniq_key=message_id.hex,
        cost_centre=row.cost_centre,
        customer_id=row.customer_id,
        flash=row.flash,
        segments=segments,
        encoding=encoding,
        queue_id=row.id,
        inserted_at=now,
        updated_at=now,
        final_at=None if status is SendStatus.QUEUED else now,
    )


def ingest_account_queue(
    account_id: int, settings: Settings | None = None, *, limit: int = 1000
) -> int:
    """Move up to `limit` waiting queue rows of one account into the log; returns how many."""
    settings = settings or get_settings()
    now = utcnow()
    with session_scope(settings) as session:
        account = metrics.account_name(account_id, session)
        query = (
            select(SmsQueue)
            .where(SmsQueue.account_id == account_id)
            .order_by(SmsQueue.priority.desc(), SmsQueue.id)
            .limit(limit)
        )
        rows = list(session.scalars(skip_locked(session, query)))
        for row in rows:
            message = _message_from_row(session, row, now, settings)
            if message.send_status == SendStatus.QUEUED.value:
                privacy.supersede_older(
                    session,
                    new_id=message.id,
                    account_id=message.account_id,
                    phone_number=message.phone_number,
                    message_type=message.type,
                    now=now,
                    settings=settings,
                )
                dispatch = dispatch_of(message, now)
                if dispatch is not None:
                    message.dispatched_at = now
                    dispatch_after_commit(session, dispatch)
            else:
                log.info("queue row %s refused: %s", row.id, message.send_status)
            session.add(message)
            metrics.message_stored(session, message.type, account, message.send_status)
        if rows:
            session.flush()
            session.execute(delete(SmsQueue).where(SmsQueue.id.in_([r.id for r in rows])))
        session.execute(
            update(Account).where(Account.id == account_id).values(last_process_queue=now)
        )
    return len(rows)


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
        try:
            while True:
                moved = ingest_account_queue(account_id, settings)
                total += moved
                if moved < 1000:
                    break
        except Exception:
            # One account's queue failing (a row, its database work) holds no other account.
            metrics.poller_unit_failed("sql_route")
            log.exception(
                "SQL route: the queue of account %s failed; skipped this round", account_id
            )
    return total

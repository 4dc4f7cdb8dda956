"""Retention: final messages past their type's retention go, in bounded batches, with what
hangs off them; their counts stay in `sms_daily_rollup` (the report reads it).
"""

from __future__ import annotations

import datetime as dt
import logging
import uuid
from collections import defaultdict
from dataclasses import dataclass

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from sms_pipeline.db import affected, among, session_scope, skip_locked, upsert_insert
from sms_pipeline.db.models import (
    CallbackEvent,
    DailyRollup,
    IdempotencyRecord,
    MessageType,
    SmsLog,
    SmsReply,
    SmsShortcode,
    utcnow,
)
from sms_pipeline.metrics import hooks as metrics
from sms_pipeline.services.privacy.redaction import forget_old_copies
from sms_pipeline.settings import Settings, get_settings

log = logging.getLogger(__name__)


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

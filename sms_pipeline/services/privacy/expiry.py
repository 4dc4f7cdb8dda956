"""Expiry: each message records `expires_at`; what is not submitted by then is never sent.

The claim refuses it (`still_sendable` in the send predicate) and the privacy sweep, or a
send attempt, ends it `EXPIRED` (docs/privacy.md).
"""

from __future__ import annotations

import datetime as dt
import logging
import uuid
from collections.abc import Sequence
from typing import Any

from sqlalchemy import ColumnElement, and_, or_, update

from sms_pipeline.db import session_scope
from sms_pipeline.db.models import MessageType, SendStatus, SmsLog, utcnow
from sms_pipeline.errors import InvalidMessage
from sms_pipeline.metrics import hooks as metrics
from sms_pipeline.settings import Settings, get_settings

log = logging.getLogger(__name__)

# One-time codes: they get a validity, supersede each other and carry the time left.
OTP_TYPES = frozenset({MessageType.VERIFICATION.value, MessageType.TWO_FA.value})
WAITING = SendStatus.QUEUED.value
IN_FLIGHT = SendStatus.SENDING.value


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
        where = [SmsLog.send_status == WAITING, condition]
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

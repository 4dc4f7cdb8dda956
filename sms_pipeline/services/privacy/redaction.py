"""Redaction: bodies of SMS_REDACT_TYPES become `[redacted]` once final; the privacy sweep.

Length stays in `body_chars`. On SQLite the WAL's old copies are truncated after commit.
"""

from __future__ import annotations

import datetime as dt
import logging

from sqlalchemy import func, select, update

from sms_pipeline.db import affected, get_engine, session_scope
from sms_pipeline.db import forget_old_copies as db_forget_old_copies
from sms_pipeline.db.models import SmsLog, utcnow
from sms_pipeline.metrics import hooks as metrics
from sms_pipeline.services.privacy.expiry import expire_waiting
from sms_pipeline.settings import Settings, get_settings

log = logging.getLogger(__name__)

REDACTED = "[redacted]"


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
    """No copy of what was just redacted or erased stays in the database's write-ahead log
    (SQLite; see `db.forget_old_copies`). The database file itself keeps none:
    `secure_delete` is on for every connection."""
    db_forget_old_copies(get_engine(settings))


def privacy_sweep(
    settings: Settings | None = None, *, now: dt.datetime | None = None
) -> dict[str, int]:
    """The beat job (status-poll period): expire what waited too long, then redact."""
    settings = settings or get_settings()
    now = now or utcnow()
    expired = expire_waiting(settings, now=now)
    return {"ended": expired, "redacted": redact_final(settings, now=now)}

"""Supersede: a new one-time code ends the older ones to the same number not yet submitted.

Waiting ones end `SUPERSEDED` at once; one in flight is marked (`superseded_by`) so its
answer is recorded as it is and a failed attempt is never retried.
"""

from __future__ import annotations

import datetime as dt
import uuid

from sqlalchemy import update
from sqlalchemy.orm import Session

from sms_pipeline.db import affected, lock_until_commit
from sms_pipeline.db.models import SendStatus, SmsLog
from sms_pipeline.metrics import hooks as metrics
from sms_pipeline.services.privacy.expiry import IN_FLIGHT, OTP_TYPES, WAITING, superseded_reason
from sms_pipeline.settings import Settings


def number_lock_key(account_id: int, phone_number: str) -> str:
    return f"otp:{account_id}:{phone_number}"


def _lock_number(session: Session, account_id: int, phone_number: str) -> None:
    # Two enqueues to one number take turns: the later one sees (and supersedes) the
    # earlier one's committed row.
    lock_until_commit(session, number_lock_key(account_id, phone_number))


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
        .where(same, SmsLog.send_status == WAITING)
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
            .where(same, SmsLog.send_status == IN_FLIGHT, SmsLog.superseded_by.is_(None))
            .values(superseded_by=new_id)
            .execution_options(synchronize_session=False)
        )
    )
    return len(rows) + marked

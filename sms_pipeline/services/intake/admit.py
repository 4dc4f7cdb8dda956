"""Admission: a validated message becomes an `sms_log` row, once, for every door.

The row's values (`row_values`), then the decision (`admit`): OPTED OUT when an opt-out
stops it (by number, or by the number's keyed hash after an erasure), otherwise QUEUED
after ending older codes to the number (supersede), counted, and dispatched after commit.
A refused row (`refuse`) ends at once with the most specific status (`status_for`).

`enqueue_sms` alone asks the same questions inside its one INSERT (`opted_out_clause`,
the fast path); every other door calls `admit` in its transaction.
"""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

from sqlalchemy.orm import Session

from sms_pipeline.db.models import OptOut, SendStatus
from sms_pipeline.errors import InvalidMessage
from sms_pipeline.metrics import hooks as metrics
from sms_pipeline.services import optout, privacy
from sms_pipeline.services.outbox import dispatch_after_commit, dispatch_for
from sms_pipeline.settings import Settings

from .validate import Message

# The most specific refusal word for a field at fault (SMSPortal's SENT words, and ours).
_STATUS_OF_FIELD = {
    "phone_number": SendStatus.NUMBER_INVALID,
    "send_at": SendStatus.SEND_AT_INVALID,
    "priority": SendStatus.PRIORITY_INVALID,
}


def status_for(problem: InvalidMessage) -> SendStatus:
    """`number invalid`, `send_at invalid`, `priority invalid`, else `data1 invalid`."""
    return _STATUS_OF_FIELD.get(problem.field, SendStatus.DATA1_INVALID)


def row_values(m: Message, account_id: int, now: dt.datetime, settings: Settings) -> dict[str, Any]:
    """The new row's columns (without its send status) for a validated message."""
    message_id = uuid.uuid4()
    due_at = max(now, m.send_at) if m.send_at else now
    return {
        "id": message_id,
        "phone_number": m.phone_number,
        "type": m.type,
        "body": m.body.body,
        "account_id": account_id,
        "sender_id": m.sender_id,
        "priority": m.priority,
        "send_after": m.send_at,
        "due_at": due_at,
        "expires_at": privacy.expiry_for(m.type, due_at, settings, m.valid_for),
        "ext_id": m.ext_id,
        "uniq_key": message_id.hex,
        "customer_id": m.customer_id,
        "cost_centre": m.cost_centre,
        "segments": m.body.segments,
        "encoding": m.body.encoding,
        "callback_url": m.callback_url,
        "inserted_at": now,
        "updated_at": now,
    }


def is_opted_out(session: Session, phone_number: str, settings: Settings | None = None) -> bool:
    """Opted out: by number, or (after an erasure) by the number's keyed hash."""
    if session.get(OptOut, phone_number) is not None:
        return True
    return privacy.erased_opt_out(session, phone_number, settings)


def stopped(
    session: Session,
    phone_number: str,
    message_type: str,
    settings: Settings,
    opted: set[str] | None = None,
) -> bool:
    """Whether an opt-out stops this message (`opted`: numbers already known opted out)."""
    if not optout.stops(message_type):
        return False
    if opted is not None and phone_number in opted:
        return True
    if opted is not None:
        return privacy.erased_opt_out(session, phone_number, settings)
    return is_opted_out(session, phone_number, settings)


def refuse(values: dict[str, Any], status: SendStatus, reason: str, now: dt.datetime) -> None:
    """The row ends at once: refused (or ended) with its reason, never dispatched."""
    values.update(send_status=status.value, last_error=reason, final_at=now, dispatched_at=None)


def admit(
    session: Session,
    values: dict[str, Any],
    *,
    account: str,
    settings: Settings,
    now: dt.datetime,
    opted: set[str] | None = None,
    supersede: bool = True,
) -> bool:
    """Decide a valid row's status in `session`'s transaction; True when it will be sent.

    OPTED OUT when an opt-out stops it (counted); otherwise QUEUED and `admitted`. The
    caller inserts `values`.
    """
    if stopped(session, values["phone_number"], values["type"], settings, opted):
        refuse(values, SendStatus.OPTED_OUT, "number opted out", now)
        metrics.message_stored(session, values["type"], account, values["send_status"])
        return False
    values.update(send_status=SendStatus.QUEUED.value, final_at=None, last_error=None)
    admitted(session, values, account=account, settings=settings, now=now, supersede=supersede)
    return True


def admitted(
    session: Session,
    values: dict[str, Any],
    *,
    account: str,
    settings: Settings,
    now: dt.datetime,
    supersede: bool = True,
) -> None:
    """A QUEUED row (stored or about to be, in `session`'s transaction): older codes to the
    number end SUPERSEDED (unless `supersede` is False: the caller does it once per number
    for a batch), the send is dispatched after commit, and the row is counted."""
    if supersede and privacy.supersedes(values["type"], settings):
        privacy.supersede_older(
            session, new_id=values["id"], account_id=values["account_id"],
            phone_number=values["phone_number"], message_type=values["type"], now=now,
            settings=settings,
        )  # fmt: skip
    dispatch = dispatch_for(values["id"], values["type"], values["priority"], values["due_at"], now)
    values["dispatched_at"] = now if dispatch is not None else None
    if dispatch is not None:
        dispatch_after_commit(session, dispatch)
    metrics.message_stored(session, values["type"], account, values["send_status"])

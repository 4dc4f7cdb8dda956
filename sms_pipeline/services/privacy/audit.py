"""The audit log: who read or changed what about one person, named by the keyed hash."""

from __future__ import annotations

import getpass
import json
import os
import uuid
from collections.abc import Iterable
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from sms_pipeline.db.models import AuditEvent, SmsLog, utcnow
from sms_pipeline.services.privacy.keyed_hash import subject_hash
from sms_pipeline.settings import Settings


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

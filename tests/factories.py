"""Rows for tests: an account, a message row with the fields a test names, a row read back."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

from sms_pipeline.db import session_scope
from sms_pipeline.db.models import Account, SendStatus, SmsLog, utcnow
from sms_pipeline.services.accounts import get_or_create_default_account

NUMBER = "+380931234567"


def make_account(name: str | None = None, **values: Any) -> int:
    """A new account (postpaid, no credits, the default window unless `values` say else);
    its id. The name is unique unless given."""
    fields: dict[str, Any] = {
        "name": name or f"acct-{uuid.uuid4().hex[:8]}",
        "username": "demo",
        "postpaid": True,
        "credits": 0,
    }
    fields.update(values)
    with session_scope() as session:
        account = Account(**fields)
        session.add(account)
        session.flush()
        return account.id


def message_row(message_id: uuid.UUID) -> SmsLog:
    """The message's `sms_log` row as it is now (detached)."""
    with session_scope() as session:
        found = session.get(SmsLog, message_id)
        assert found is not None, message_id
        return found


def message(account_id: int, now: dt.datetime | None = None, **values: Any) -> SmsLog:
    """An `sms_log` row not yet added: a text waiting since ten minutes before `now`,
    unless `values` say else."""
    now = now or utcnow()
    message_id = values.pop("id", None) or uuid.uuid4()
    fields: dict[str, Any] = {
        "id": message_id,
        "phone_number": NUMBER,
        "type": "text",
        "body": "hello",
        "account_id": account_id,
        "inserted_at": now - dt.timedelta(minutes=10),
        "updated_at": now,
        "due_at": now - dt.timedelta(minutes=10),
        "send_status": SendStatus.QUEUED.value,
        "uniq_key": message_id.hex,
    }
    fields.update(values)
    return SmsLog(**fields)


def insert_message(now: dt.datetime | None = None, **values: Any) -> uuid.UUID:
    """`message` of the default account, stored (for states no gateway can be made to give)."""
    with session_scope() as session:
        row = message(get_or_create_default_account(session).id, now, **values)
        session.add(row)
        session.flush()
        return row.id

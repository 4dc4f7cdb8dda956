"""Rows for tests: an account with the fields a test names, and a message's row read back."""

from __future__ import annotations

import uuid
from typing import Any

from sms_pipeline.db import session_scope
from sms_pipeline.db.models import Account, SmsLog


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

"""The outbox sweeper must not re-publish a whole backlog at every sweep.

Found by the worker-kill run: with a backlog longer than the grace period, every sweep
re-published every waiting message (≈ 4 redundant send tasks per message), which slowed
the very backlog it was re-publishing.
"""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

import pytest
from sqlalchemy import insert

from sms_pipeline.db import session_scope
from sms_pipeline.db.models import SendStatus, SmsLog, utcnow
from sms_pipeline.services.accounts import get_or_create_default_account


def test_sweeper_republishes_a_waiting_backlog_with_backoff_not_every_sweep(
    db: Any, settings_env: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from sms_pipeline.services import outbox
    from tests.helpers import capture_publishes

    capture_publishes(monkeypatch)
    settings_env(SMS_OUTBOX_GRACE_SECONDS=1)
    long_ago = utcnow() - dt.timedelta(seconds=20)
    with session_scope() as session:
        account_id = get_or_create_default_account(session).id
        session.execute(
            insert(SmsLog),
            [
                {
                    "id": uuid.uuid4(),
                    "phone_number": "+380931234567",
                    "type": "text",
                    "body": "backlog",
                    "account_id": account_id,
                    "send_status": SendStatus.QUEUED.value,
                    "due_at": long_ago,
                    "dispatched_at": long_ago,
                    "uniq_key": uuid.uuid4().hex,
                    "inserted_at": long_ago,
                    "updated_at": long_ago,
                }
                for _ in range(50)
            ],
        )
    now = utcnow()
    assert outbox.sweep_outbox(now=now).dispatched == 50  # stale: published again, once
    later = now + dt.timedelta(seconds=1.2)  # past the grace period
    assert outbox.sweep_outbox(now=later).dispatched == 0  # not again at the next sweep

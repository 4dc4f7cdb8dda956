"""Small helpers shared by the integration tests."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable

from sms_pipeline.db import session_scope
from sms_pipeline.db.models import SendStatus, SmsLog

NORMAL = "+380931234567"


def wait_for(
    message_id: uuid.UUID, done: Callable[[SmsLog], bool], timeout: float = 30.0
) -> SmsLog:
    """Poll the message's row until `done(row)` holds; fail with the row after `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        with session_scope() as session:
            row = session.get(SmsLog, message_id)
            if row is not None and done(row):
                return row
        if time.monotonic() > deadline:
            raise AssertionError(f"message {message_id} did not settle: {row!r}")
        time.sleep(0.1)


def is_final(row: SmsLog) -> bool:
    return SendStatus(row.send_status).is_final

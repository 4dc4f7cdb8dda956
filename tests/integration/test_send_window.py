"""The send window: a request that hangs holds its own slot only."""

from __future__ import annotations

from typing import Any

import pytest

from sms_pipeline import enqueue_sms
from sms_pipeline.broker.dispatch import QueueClass
from sms_pipeline.db import session_scope
from sms_pipeline.db.models import SendStatus, SmsLog
from sms_pipeline.services import sending

HUNG = "+380931234506"  # the default rules: ...06 answers after slow_seconds; ...2x: at once


@pytest.mark.parametrize("simulator", [{"slow_seconds": 3.0}], indirect=True)
def test_messages_behind_a_hung_request_are_sent_and_recorded_before_it_ends(
    db: Any, redis_url: str, simulator: Any, settings_env: Any
) -> None:
    # Two slots: the hung request holds one, every other message goes through the other.
    settings_env(SMS_SEND_WINDOW=2, SMS_DRAIN_LINGER_MS=0, SMS_DRAIN_LINGER_BULK_MS=0)
    hung = enqueue_sms(HUNG, "first in the queue, answered late")
    healthy = [enqueue_sms(f"+3809312345{n}", f"behind it {n}") for n in range(20, 26)]

    result = sending.drain(QueueClass.BULK)

    assert result.claimed == 7
    assert result.batches >= 6  # claimed again as the free slot came back, one at a time
    with session_scope() as session:
        late = session.get(SmsLog, hung)
        assert late is not None and late.send_status == SendStatus.SUBMITTED.value
        for message_id in healthy:
            row = session.get(SmsLog, message_id)
            assert row is not None and row.send_status == SendStatus.SUBMITTED.value
            assert row.attempts == 1
            # Recorded (submitted_at is the time its group was recorded) while the hung
            # request was still out: nothing waited for it.
            assert row.submitted_at is not None and late.submitted_at is not None
            assert row.submitted_at < late.submitted_at

"""A failed attempt waits base x 2^(attempt-1), capped, with jitter over its upper half."""

from __future__ import annotations

from sms_pipeline.services.sending import retry_delay
from sms_pipeline.settings import Settings


def test_the_wait_doubles_per_attempt_up_to_the_cap_with_jitter_over_the_upper_half() -> None:
    settings = Settings(SMS_RETRY_BACKOFF_SECONDS=5, SMS_RETRY_BACKOFF_MAX_SECONDS=30)
    for attempt, full in [(1, 5.0), (2, 10.0), (3, 20.0), (4, 30.0), (9, 30.0)]:
        waits = [retry_delay(attempt, settings) for _ in range(200)]
        assert all(full / 2 <= w <= full for w in waits), (attempt, min(waits), max(waits))
        assert max(waits) - min(waits) > full / 10  # jittered, not fixed

"""One attempt is at most one request the gateway sees (issue 27, item 3).

libcurl re-sends a POST on a fresh connection when a reused keep-alive connection dies
before any answer byte. The gateway here resets every reused connection after reading the
request, so each such request reached it: re-sending would submit the message again.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import update

from sms_pipeline import enqueue_sms
from sms_pipeline.db import session_scope
from sms_pipeline.db.models import SendStatus, SmsLog, utcnow
from sms_pipeline.gateway import IP2SMSClient
from tests.helpers import NORMAL, attempt_send
from tests.loopback_peers import ResetReusedConnections


@pytest.fixture
def resetting_gateway(settings_env: Any) -> Iterator[ResetReusedConnections]:
    server = ResetReusedConnections()
    base = f"http://127.0.0.1:{server.port}"
    settings_env(
        IP2SMS_SEND_URL=f"{base}/ip2sms/",
        IP2SMS_STATUS_URL=f"{base}/ip2sms-request/",
        IP2SMS_READ_TIMEOUT="5",
        SMS_GATEWAY_CONNECTIONS="1",
    )
    yield server
    server.close()


def test_three_attempts_are_three_requests_when_reused_connections_are_reset(
    db: Any, no_dispatch: list[Any], resetting_gateway: ResetReusedConnections
) -> None:
    message_id = enqueue_sms(NORMAL, "hello")
    client = IP2SMSClient.from_settings()  # one pool: attempt 2 reuses attempt 1's connection
    try:
        outcomes = []
        for _ in range(3):
            with session_scope() as session:  # the retry's backoff has passed
                session.execute(update(SmsLog).values(due_at=utcnow()))
            outcomes.append(attempt_send(message_id, client=client))
    finally:
        client.close()
    # 502 on a fresh connection, reset after the request on the reused one, 502 again.
    assert [o.outcome for o in outcomes] == ["retry", "retry", "exhausted"]
    assert "not re-sent" in (outcomes[1].detail or "")
    assert resetting_gateway.requests == 3
    assert resetting_gateway.connections == 2
    with session_scope() as session:
        row = session.get_one(SmsLog, message_id)
        assert row.send_status == SendStatus.RETRYCOUNT_EXCEEDED.value
        assert row.attempts == 3

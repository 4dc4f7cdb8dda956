"""A bound on "moving" (issue 27, item 2): a message whose status checks all fail ends
Terminated once its deadline passed and the failures lasted SMS_STATUS_GIVE_UP_SECONDS.

The gateway is a loopback server answering every status request with a hostile body; the
sweeps run in this process with a clock the test passes in (no sleeping).
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from sms_pipeline.db import session_scope
from sms_pipeline.db.models import SendStatus, SmsLog, utcnow
from sms_pipeline.gateway import GatewayStatus
from sms_pipeline.services import status
from tests.backends import backend  # noqa: F401  (the fixture, used by name)
from tests.factories import insert_message
from tests.loopback_peers import FixedAnswerGateway
from tests.support import merge_json

pytestmark = pytest.mark.usefixtures("backend")

TERMINATE_AFTER = 600
GIVE_UP = 60
SWEEP = 30  # the sweep period the test's clock steps by

HOSTILE = {
    "garbage": b"\x00\xff\xfe garbage \x80\x81",
    "error root": b"<error>Access denied</error>",
    "truncated": b'<?xml version="1.0"?><status id="42" date="Fri, 06 Sep 2013"><sta',
    "entity bomb": b'<?xml version="1.0"?><!DOCTYPE l [<!ENTITY a "aaaaaaaaaa">'
    b'<!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;"><!ENTITY c "&b;&b;&b;&b;&b;&b;&b;&b;">]>'
    b"<status><state>&c;</state></status>",
}
DELIVERED = (
    b'<status id="42" date="Fri, 06 Sep 2013 19:11:16 +0300"><state>Delivered</state></status>'
)


@pytest.fixture
def gateway(settings_env: Any) -> Iterator[FixedAnswerGateway]:
    server = FixedAnswerGateway(HOSTILE["garbage"])
    settings_env(
        IP2SMS_STATUS_URL=server.url,
        IP2SMS_SEND_URL=server.url.replace("-request", ""),
        SMS_TERMINATE_AFTER_SECONDS=str(TERMINATE_AFTER),
        SMS_STATUS_GIVE_UP_SECONDS=str(GIVE_UP),
        SMS_STATUS_CHECK_BACKOFF="30,60,120",
        SMS_STATUS_FIRST_CHECK_SECONDS="10",
    )
    yield server
    server.close()


def submitted(at: dt.datetime) -> uuid.UUID:
    """A message the gateway accepted at `at` (id 42), its first check 10 s later."""
    return insert_message(
        at,
        type="verification",
        body="code 1234",
        send_status=SendStatus.SUBMITTED.value,
        gateway_id="42",
        gateway_status=GatewayStatus.ACCEPTED.value,
        status_changed_at=at,
        submitted_at=at,
        inserted_at=at,
        updated_at=at,
        next_check_at=at + dt.timedelta(seconds=10),
    )


def read(message_id: uuid.UUID) -> SmsLog:
    with session_scope() as session:
        return session.get_one(SmsLog, message_id)


def sweep_until_final(message_id: uuid.UUID, start: dt.datetime, until: float) -> float | None:
    """Sweep every SWEEP s of the test's clock from `start`; the offset at which the
    message became final, or None."""
    offset = 10.0
    while offset <= until:
        status.sweep_statuses(inline=True, now=start + dt.timedelta(seconds=offset))
        if read(message_id).final_at is not None:
            return offset
        offset += SWEEP
    return None


@pytest.mark.parametrize("kind", sorted(HOSTILE))
def test_hostile_status_answers_for_ever_end_terminated_with_the_reason(
    kind: str, gateway: FixedAnswerGateway
) -> None:
    gateway.body = HOSTILE[kind]
    start = utcnow()
    message_id = submitted(start)
    ended = sweep_until_final(message_id, start, TERMINATE_AFTER + GIVE_UP + 10 * SWEEP)
    assert ended is not None, "still moving: no bound"
    row = read(message_id)
    assert row.gateway_status == GatewayStatus.TERMINATED.value
    # The bound: after the deadline (first failure at 10 s, give-up 60 s long before it),
    # at the first sweep past it.
    assert TERMINATE_AFTER < ended <= TERMINATE_AFTER + SWEEP
    assert row.last_error is not None
    assert row.last_error.startswith("Terminated: no usable status answer: ")
    assert f"{row.status_failures} status checks failed" in row.last_error
    assert row.status_failure is not None and row.status_failure in row.last_error
    assert row.status_failing_since == start + dt.timedelta(seconds=10)
    assert row.status_failures == gateway.requests  # every failed check counted, no more
    merge_json(
        Path(".sms_pipeline/reliability.json"),
        {f"give_up_{kind.replace(' ', '_')}": {"ended_after_s": ended, "checks": gateway.requests}},
    )
    print(f"FIGURE: hostile status answers ({kind}): Terminated at +{ended:.0f} s "
          f"(deadline {TERMINATE_AFTER} s, give-up {GIVE_UP} s) after "
          f"{gateway.requests} failed checks: {row.last_error}")  # fmt: skip


def test_a_usable_answer_before_the_give_up_wins(gateway: FixedAnswerGateway) -> None:
    start = utcnow()
    message_id = submitted(start)
    assert sweep_until_final(message_id, start, TERMINATE_AFTER - 60) is None
    assert read(message_id).status_failures > 0
    gateway.body = DELIVERED  # the gateway recovers before the give-up decision
    assert sweep_until_final(message_id, start + dt.timedelta(seconds=TERMINATE_AFTER - 40), 200)
    row = read(message_id)
    assert row.gateway_status == GatewayStatus.DELIVERED.value
    assert (row.status_failures, row.status_failing_since, row.status_failure) == (0, None, None)


def test_a_usable_moving_answer_resets_the_failures(gateway: FixedAnswerGateway) -> None:
    start = utcnow()
    message_id = submitted(start)
    status.sweep_statuses(inline=True, now=start + dt.timedelta(seconds=10))
    row = read(message_id)
    assert (row.status_failures, row.status_failing_since) == (
        1,
        start + dt.timedelta(seconds=10),
    )
    gateway.body = DELIVERED.replace(b"Delivered", b"Enroute")
    status.sweep_statuses(inline=True, now=start + dt.timedelta(seconds=60))
    row = read(message_id)
    assert row.gateway_status == GatewayStatus.ENROUTE.value
    assert (row.status_failures, row.status_failing_since, row.status_failure) == (0, None, None)


def test_give_up_defaults_to_the_validity_period(settings_env: Any) -> None:
    settings = settings_env(IP2SMS_VALIDITY="+2 hour")
    assert settings.status_give_up_seconds == 7200
    assert settings_env(IP2SMS_VALIDITY="+30 minutes").status_give_up_seconds == 1800
    assert settings_env(SMS_STATUS_GIVE_UP_SECONDS="60").status_give_up_seconds == 60


def test_failures_that_start_near_the_deadline_get_their_whole_give_up_period(
    gateway: FixedAnswerGateway,
) -> None:
    gateway.body = DELIVERED.replace(b"Delivered", b"Enroute")
    start = utcnow()
    message_id = submitted(start)
    assert sweep_until_final(message_id, start, TERMINATE_AFTER - 30) is None
    gateway.body = HOSTILE["error root"]
    ended = sweep_until_final(
        message_id, start + dt.timedelta(seconds=TERMINATE_AFTER), GIVE_UP + 10 * SWEEP
    )
    assert ended is not None
    row = read(message_id)
    assert row.gateway_status == GatewayStatus.TERMINATED.value
    assert row.status_failing_since is not None and row.final_at is not None
    assert row.final_at - row.status_failing_since >= dt.timedelta(seconds=GIVE_UP)
    assert "<error>" in (row.last_error or "")

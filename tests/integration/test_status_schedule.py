"""The status-check schedule and the Terminated rule, on PostgreSQL and SQLite.

Every test drives the sweeps with a clock passed in (`sweep_statuses(now=...)`) and a
gateway whose answers follow the same clock, so "delivered one second before the
deadline" is exact and no test sleeps. Messages are submitted through the real send path,
so the first check time is the one submission sets.
"""

from __future__ import annotations

import datetime as dt
import itertools
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from sms_pipeline import enqueue_sms
from sms_pipeline.db import session_scope
from sms_pipeline.db.models import SmsLog
from sms_pipeline.gateway import GatewayStatus, GatewayTimeout, SendResult, StatusResult
from sms_pipeline.services import outbox, status
from sms_pipeline.services.status import checks as status_checks
from sms_pipeline.simulator import SimulatorConfig, SimulatorServer
from tests.backends import backend  # noqa: F401  (the fixture, used by name)
from tests.factories import message_row as row
from tests.helpers import AnswersAtOnce, attempt_send

# Every test here runs on PostgreSQL and on the embedded SQLite database.
pytestmark = pytest.mark.usefixtures("backend")

NUMBERS = itertools.count(1000)


class ClockedGateway(AnswersAtOnce):
    """Accepts every message; a message is Enroute until its `delivered_after` seconds
    (None: forever), then Delivered, on the test's clock (`now`)."""

    def __init__(self) -> None:
        self.now = dt.datetime.now(dt.UTC)
        self.plans: dict[str, float | None] = {}
        self.accepted_at: dict[str, dt.datetime] = {}
        self.asked: dict[str, list[dt.datetime]] = {}
        self.failing = False
        self._ids = itertools.count(1)
        self.next_plan: float | None = None

    def send(self, phone_number: str, body: str, **_: Any) -> SendResult:
        gateway_id = f"g{next(self._ids)}"
        self.plans[gateway_id] = self.next_plan
        self.accepted_at[gateway_id] = self.now
        return SendResult(gateway_id, GatewayStatus.ACCEPTED, self.now, None, None, None, b"")

    def send_many(self, batch: list[Any]) -> list[SendResult]:
        """The batch interface the send path uses."""
        return [self.send(r.phone_number, r.body) for r in batch]

    def status(self, gateway_id: str) -> StatusResult:
        self.asked.setdefault(gateway_id, []).append(self.now)
        if self.failing:
            raise GatewayTimeout("read timeout")
        plan = self.plans[gateway_id]
        age = (self.now - self.accepted_at[gateway_id]).total_seconds()
        answer = (
            GatewayStatus.DELIVERED if plan is not None and age >= plan else GatewayStatus.ENROUTE
        )
        return StatusResult(gateway_id, answer, self.now, None, None, None, b"")


@pytest.fixture
def gateway(monkeypatch: pytest.MonkeyPatch) -> ClockedGateway:
    fake = ClockedGateway()
    monkeypatch.setattr(status_checks, "get_gateway_client", lambda settings=None: fake)
    monkeypatch.setattr(outbox, "publish", lambda dispatches: 0)
    return fake


def submit(gateway: ClockedGateway, delivered_after: float | None) -> uuid.UUID:
    """Enqueue and send one message now (the real send path); the gateway accepts it."""
    message_id = enqueue_sms(f"+38093123{next(NUMBERS):04d}", "hello", "text")
    gateway.next_plan = delivered_after
    outcome = attempt_send(message_id, client=gateway)  # type: ignore[arg-type]
    assert outcome.outcome == "submitted"
    return message_id


def run_sweeps(
    gateway: ClockedGateway, start: dt.datetime, period: float, until: dt.datetime
) -> None:
    """Beat: a sweep every `period` seconds from `start` to `until`, checks run inline."""
    now = start
    while now <= until:
        gateway.now = now
        status.sweep_statuses(inline=True, now=now)
        now += dt.timedelta(seconds=period)


# (timeout, sweep period, backoff, first check): the issue's configuration (timeout shorter
# than the first backoff step), the defaults, a sweep period longer than the timeout, a
# first check longer than the first step, steps that straddle the deadline.
SCHEDULES = [
    pytest.param(20, 2, "30,60,120,300,600", 10, id="issue-config-timeout-below-first-step"),
    pytest.param(1800, 60, "30,60,120,300,600", 10, id="defaults"),
    pytest.param(5, 60, "30", 10, id="sweep-period-longer-than-timeout"),
    pytest.param(20, 3, "7,11", 30, id="first-check-longer-than-first-step"),
    pytest.param(20, 7, "1,2", 1, id="short-steps"),
    pytest.param(45, 4, "13", 13, id="steps-straddle-the-deadline"),
]


@pytest.mark.parametrize(("timeout", "period", "backoff", "first"), SCHEDULES)
def test_delivered_messages_end_delivered_and_never_final_ones_terminated_after_the_deadline(
    settings_env: Any,
    gateway: ClockedGateway,
    timeout: int,
    period: int,
    backoff: str,
    first: int,
) -> None:
    settings_env(
        SMS_TERMINATE_AFTER_SECONDS=timeout,
        SMS_STATUS_POLL_SECONDS=period,
        SMS_RETRY_BACKOFF_SECONDS=1,
        SMS_STATUS_CHECK_BACKOFF=backoff,
        SMS_STATUS_FIRST_CHECK_SECONDS=first,
    )
    fast = submit(gateway, delivered_after=min(3, timeout - 1))
    last_second = submit(gateway, delivered_after=timeout - 1)
    never = submit(gateway, delivered_after=None)
    submitted = row(never).submitted_at
    assert submitted is not None
    deadline = submitted + dt.timedelta(seconds=timeout)
    step = min(first, int(backoff.split(",")[0]), timeout)
    for message_id in (fast, last_second, never):
        # The first check comes no later than the first step, and never after the deadline.
        next_check = row(message_id).next_check_at
        assert next_check is not None
        assert next_check <= row(message_id).submitted_at + dt.timedelta(seconds=step)  # type: ignore[operator]
        assert next_check <= deadline

    run_sweeps(gateway, submitted, period, deadline + dt.timedelta(seconds=3 * period))

    assert row(fast).gateway_status == "Delivered"
    assert row(last_second).gateway_status == "Delivered"
    ended = row(never)
    assert ended.gateway_status == "Terminated"
    assert ended.final_at is not None and ended.final_at >= deadline
    # Terminated on the fact: the gateway was asked at or after the deadline.
    assert ended.last_checked_at is not None and ended.last_checked_at >= deadline
    assert any(asked >= deadline for asked in gateway.asked[ended.gateway_id or ""])


def test_the_first_check_comes_after_the_configured_first_step(
    settings_env: Any, gateway: ClockedGateway
) -> None:
    settings_env(SMS_STATUS_FIRST_CHECK_SECONDS=4, SMS_STATUS_CHECK_BACKOFF="30,60")
    message_id = submit(gateway, delivered_after=2)
    submitted = row(message_id).submitted_at
    assert submitted is not None
    assert row(message_id).next_check_at == submitted + dt.timedelta(seconds=4)
    run_sweeps(gateway, submitted, 2, submitted + dt.timedelta(seconds=4))
    assert row(message_id).gateway_status == "Delivered"
    assert gateway.asked["g1"] == [submitted + dt.timedelta(seconds=4)]


def test_a_message_whose_checks_keep_failing_is_not_terminated_until_the_gateway_answers(
    settings_env: Any, gateway: ClockedGateway
) -> None:
    settings_env(SMS_TERMINATE_AFTER_SECONDS=20, SMS_STATUS_CHECK_BACKOFF="5")
    message_id = submit(gateway, delivered_after=19)
    submitted = row(message_id).submitted_at
    assert submitted is not None
    gateway.failing = True
    run_sweeps(gateway, submitted, 2, submitted + dt.timedelta(seconds=60))
    assert row(message_id).gateway_status == "Accepted"  # asked, never answered: still moving
    assert row(message_id).last_checked_at is None
    gateway.failing = False
    run_sweeps(
        gateway, submitted + dt.timedelta(seconds=62), 2, submitted + dt.timedelta(seconds=70)
    )
    assert row(message_id).gateway_status == "Delivered"


def test_a_message_without_a_gateway_id_ends_at_the_deadline(
    settings_env: Any, gateway: ClockedGateway
) -> None:
    settings_env(SMS_TERMINATE_AFTER_SECONDS=20)
    message_id = submit(gateway, delivered_after=None)
    with session_scope() as session:
        found = session.get(SmsLog, message_id)
        assert found is not None
        found.gateway_id = None
    submitted = row(message_id).submitted_at
    assert submitted is not None
    deadline = submitted + dt.timedelta(seconds=20)
    before = deadline - dt.timedelta(seconds=1)
    assert status.sweep_statuses(inline=True, now=before).terminated == 0
    assert status.sweep_statuses(inline=True, now=deadline).terminated == 0  # not past it yet
    later = deadline + dt.timedelta(milliseconds=1)
    assert status.sweep_statuses(inline=True, now=later).terminated == 1
    assert row(message_id).gateway_status == "Terminated"
    assert gateway.asked == {}


def test_an_answer_before_the_deadline_never_counts_as_the_last_check(
    settings_env: Any, gateway: ClockedGateway
) -> None:
    """The old proxy: a check whose NEXT check lies past the deadline is no last check."""
    settings_env(SMS_TERMINATE_AFTER_SECONDS=20, SMS_STATUS_CHECK_BACKOFF="600")
    message_id = submit(gateway, delivered_after=None)
    submitted = row(message_id).submitted_at
    assert submitted is not None
    deadline = submitted + dt.timedelta(seconds=20)
    with session_scope() as session:
        found = session.get(SmsLog, message_id)
        assert found is not None
        found.next_check_at = deadline + dt.timedelta(minutes=10)
        found.last_checked_at = deadline - dt.timedelta(seconds=1)
    result = status.sweep_statuses(inline=True, now=deadline + dt.timedelta(minutes=1))
    assert result.terminated == 0
    assert row(message_id).gateway_status == "Accepted"


# --- the issue's reproduction, against the real simulator on loopback ---------------------

NEVER_FINAL = "+380931234505"


@pytest.fixture
def clocked_simulator(settings_env: Any) -> Iterator[Any]:
    clock = [1000.0]
    server = SimulatorServer(
        SimulatorConfig(port=0, login="demo", password="demo", enroute_after=1, deliver_after=3)
    )
    server.start()
    server.state.clock = lambda: clock[0]
    settings_env(
        IP2SMS_SEND_URL=server.send_url,
        IP2SMS_STATUS_URL=server.status_url,
        IP2SMS_LOGIN="demo",
        IP2SMS_PASSWORD="demo",
        SMS_TERMINATE_AFTER_SECONDS=20,
        SMS_STATUS_POLL_SECONDS=2,
        SMS_RETRY_BACKOFF_SECONDS=1,
        IP2SMS_READ_TIMEOUT=5,
    )
    try:
        yield server, clock
    finally:
        server.stop()


@pytest.mark.parametrize("deliver_after", [3, 19])
def test_issue_configuration_against_the_simulator_delivered_ends_delivered(
    clocked_simulator: Any, monkeypatch: pytest.MonkeyPatch, deliver_after: float
) -> None:
    server, clock = clocked_simulator
    server.state.deliver_after = deliver_after
    monkeypatch.setattr(outbox, "publish", lambda dispatches: 0)
    delivered = enqueue_sms("+380931234567", "hello", "text")
    never = enqueue_sms(NEVER_FINAL, "hello", "text")
    assert attempt_send(delivered).outcome == "submitted"
    assert attempt_send(never).outcome == "submitted"
    start = row(never).submitted_at
    assert start is not None
    deadline = start + dt.timedelta(seconds=20)
    for tick in range(0, 31):  # beat every 2 s for 60 s, the simulator on the same clock
        clock[0] = 1000.0 + 2 * tick
        now = start + dt.timedelta(seconds=2 * tick)
        status.sweep_statuses(inline=True, now=now)
        ended = row(never)
        if ended.gateway_status == "Terminated":
            assert now >= deadline
    assert row(delivered).gateway_status == "Delivered"
    ended = row(never)
    assert ended.gateway_status == "Terminated"
    assert ended.final_at is not None and ended.final_at >= deadline
    assert server.state.stats["status_requests"] >= 2

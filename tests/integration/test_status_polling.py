"""Status polling: sweeps, checks, Terminated. Real PostgreSQL, Redis, worker and simulator.

Most tests drive a simulator whose status clock the test moves by hand, so a message is
Accepted, Enroute or Delivered exactly when the test says so (no race with wall time).
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import update

from sms_pipeline import enqueue_sms
from sms_pipeline.db import session_scope
from sms_pipeline.db.models import SendStatus, SmsLog, utcnow
from sms_pipeline.gateway import GatewayStatus, GatewayTimeout, StatusResult
from sms_pipeline.services import outbox, status
from sms_pipeline.services.status import checks as status_checks
from sms_pipeline.simulator import SimulatorConfig, SimulatorServer
from tests.factories import insert_message
from tests.factories import message_row as row
from tests.helpers import SimClock, attempt_send, wait_for

NORMAL = "+380931234567"
NEVER_FINAL = "+380931234505"


class ClockedSimulator:
    """A simulator whose messages turn Enroute at t+10 and Delivered at t+20 of `clock`."""

    def __init__(self, server: SimulatorServer, clock: SimClock) -> None:
        self.server = server
        self.clock = clock

    def advance(self, seconds: float) -> None:
        self.clock.advance(seconds)

    def status_requests(self) -> int:
        return int(self.server.state.stats["status_requests"])


@pytest.fixture
def sim(db: Any, settings_env: Any) -> Iterator[ClockedSimulator]:
    server = SimulatorServer(
        SimulatorConfig(port=0, login="demo", password="demo", enroute_after=10, deliver_after=20)
    )
    server.start()
    clock = SimClock(frozen=True)
    server.state.clock = clock
    settings_env(
        IP2SMS_SEND_URL=server.send_url,
        IP2SMS_STATUS_URL=server.status_url,
        IP2SMS_LOGIN="demo",
        IP2SMS_PASSWORD="demo",
    )
    try:
        yield ClockedSimulator(server, clock)
    finally:
        server.stop()


@pytest.fixture
def worker_sim(worker: Any, sim: ClockedSimulator) -> ClockedSimulator:
    """The clocked simulator with a real worker running (settings point at `sim`)."""
    return sim


def submit(monkeypatch: pytest.MonkeyPatch, number: str = NORMAL) -> uuid.UUID:
    """A message submitted to the gateway (Accepted), sent inline rather than by a worker."""
    with monkeypatch.context() as patch:
        patch.setattr(outbox, "publish", lambda dispatches: 0)
        message_id = enqueue_sms(number, "hello", "text")
    assert attempt_send(message_id).outcome == "submitted"
    return message_id


def make_due(*ids: uuid.UUID) -> None:
    with session_scope() as session:
        session.execute(
            update(SmsLog)
            .where(SmsLog.id.in_(ids))
            .values(next_check_at=utcnow() - dt.timedelta(seconds=1), updated_at=SmsLog.updated_at)
        )


def insert_row(**values: Any) -> uuid.UUID:
    """A text the gateway took two minutes ago, Enroute, its check due."""
    now = utcnow()
    submitted: dict[str, Any] = {
        "send_status": SendStatus.SUBMITTED.value,
        "gateway_id": "42",
        "gateway_status": GatewayStatus.ENROUTE.value,
        "status_changed_at": now - dt.timedelta(minutes=1),
        "submitted_at": now - dt.timedelta(minutes=2),
        "next_check_at": now - dt.timedelta(seconds=1),
        "inserted_at": now - dt.timedelta(minutes=2),
        "updated_at": now - dt.timedelta(minutes=1),
    }
    return insert_message(now, **{**submitted, **values})


class FakeClient:
    """Answers status requests with a fixed status and date (or raises)."""

    def __init__(
        self,
        status: GatewayStatus = GatewayStatus.DELIVERED,
        date: dt.datetime | None = None,
        date_raw: str | None = None,
        error: Exception | None = None,
    ) -> None:
        self.answer = status
        self.date = date
        self.date_raw = date_raw
        self.error = error
        self.asked: list[str] = []

    def status(self, gateway_id: str) -> StatusResult:
        self.asked.append(gateway_id)
        if self.error is not None:
            raise self.error
        return StatusResult(gateway_id, self.answer, self.date, self.date_raw, None, None, b"")


# --- sweeps with the real worker ----------------------------------------------------------


def test_sweeps_walk_a_message_accepted_enroute_delivered(
    worker_sim: ClockedSimulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    message_id = submit(monkeypatch)
    assert row(message_id).gateway_status == "Accepted"

    worker_sim.advance(10)
    make_due(message_id)
    result = status.sweep_statuses()
    assert (result.claimed, result.dispatched, result.broker_messages) == (1, 1, 1)
    enroute = wait_for(message_id, lambda r: r.gateway_status == "Enroute")
    assert enroute.final_at is None and enroute.status_checks == 1

    worker_sim.advance(10)
    make_due(message_id)
    status.sweep_statuses()
    delivered = wait_for(message_id, lambda r: r.gateway_status == "Delivered")
    assert delivered.final_at is not None
    assert delivered.next_check_at is None
    assert delivered.status_changed_at is not None
    assert enroute.status_changed_at is not None
    assert delivered.status_changed_at > enroute.status_changed_at
    assert delivered.updated_at > enroute.updated_at


def test_sweep_fans_out_checks_in_chunks(
    worker_sim: ClockedSimulator, monkeypatch: pytest.MonkeyPatch, settings_env: Any
) -> None:
    ids = [submit(monkeypatch) for _ in range(7)]
    settings_env(SMS_STATUS_CHUNK_SIZE=3)
    worker_sim.advance(10)
    make_due(*ids)
    result = status.sweep_statuses()
    assert (result.claimed, result.dispatched, result.broker_messages) == (7, 7, 3)
    for message_id in ids:
        wait_for(message_id, lambda r: r.gateway_status == "Enroute")
    assert worker_sim.status_requests() == 7


# --- checks -----------------------------------------------------------------------------


def test_no_change_means_no_write(sim: ClockedSimulator, monkeypatch: pytest.MonkeyPatch) -> None:
    message_id = submit(monkeypatch, NEVER_FINAL)
    make_due(message_id)
    before = row(message_id)
    result = status.sweep_statuses(inline=True)
    assert [c.outcome for c in result.checks] == [status.CheckOutcome.UNCHANGED]
    after = row(message_id)
    assert after.updated_at == before.updated_at
    assert after.status_changed_at == before.status_changed_at
    assert after.gateway_status == "Accepted"
    # Only the lease moved: the next look is one backoff step away.
    assert after.status_checks == before.status_checks + 1
    assert after.next_check_at is not None and after.next_check_at > utcnow()


def test_backoff_grows_with_each_check(
    sim: ClockedSimulator, monkeypatch: pytest.MonkeyPatch, settings_env: Any
) -> None:
    settings_env(SMS_STATUS_CHECK_BACKOFF="30,60,600")
    message_id = submit(monkeypatch, NEVER_FINAL)
    gaps = []
    for _ in range(4):
        make_due(message_id)
        started = utcnow()
        status.sweep_statuses(inline=True)
        next_check = row(message_id).next_check_at
        assert next_check is not None
        gaps.append((next_check - started).total_seconds())
    assert [round(g, -1) for g in gaps] == [30, 60, 600, 600]


def test_unreadable_gateway_date_is_logged_and_status_kept(
    db: Any, caplog: pytest.LogCaptureFixture
) -> None:
    message_id = insert_row()
    client = FakeClient(GatewayStatus.DELIVERED, date=None, date_raw="Blursday, 99 Foo")
    before = utcnow()
    with caplog.at_level(logging.WARNING, logger="sms_pipeline.services.status"):
        result = status.check_status(message_id, client=client)
    assert result.outcome is status.CheckOutcome.CHANGED
    assert str(message_id) in caplog.text and "Blursday" in caplog.text
    after = row(message_id)
    assert after.gateway_status == "Delivered"
    assert after.status_changed_at is not None and after.status_changed_at >= before
    assert after.final_at is not None


def test_gateway_date_is_stored_in_utc(db: Any) -> None:
    message_id = insert_row()
    kyiv = dt.timezone(dt.timedelta(hours=3))
    when = dt.datetime(2024, 5, 25, 17, 29, 56, tzinfo=kyiv)
    status.check_status(message_id, client=FakeClient(GatewayStatus.DELIVERED, date=when))
    stored = row(message_id).status_changed_at
    assert stored == when and stored is not None and stored.hour == 14


def test_backwards_status_is_ignored_and_counted(db: Any) -> None:
    message_id = insert_row(gateway_status="Enroute")
    before = row(message_id)
    # Counted from what the check returns (the check_statuses task counts its outcomes).
    seen = [status.check_status(message_id, client=FakeClient(GatewayStatus.ACCEPTED))]
    result = seen[0]
    assert result.outcome is status.CheckOutcome.BACKWARDS
    assert [(r.outcome, r.old_status, r.new_status) for r in seen] == [
        (status.CheckOutcome.BACKWARDS, "Enroute", "Accepted")
    ]
    after = row(message_id)
    assert (after.gateway_status, after.updated_at) == ("Enroute", before.updated_at)


def test_final_status_is_never_overwritten(db: Any) -> None:
    message_id = insert_row(gateway_status="Delivered", final_at=utcnow())
    client = FakeClient(GatewayStatus.ENROUTE)
    result = status.check_status(message_id, client=client)
    assert result.outcome is status.CheckOutcome.NOT_MOVING
    assert client.asked == []
    assert row(message_id).gateway_status == "Delivered"


def test_transient_gateway_failure_leaves_the_message_for_the_next_sweep(db: Any) -> None:
    message_id = insert_row()
    before = row(message_id)
    client = FakeClient(error=GatewayTimeout("read timeout"))
    result = status.check_status(message_id, client=client)
    assert result.outcome is status.CheckOutcome.GATEWAY_ERROR
    after = row(message_id)
    assert (after.gateway_status, after.updated_at) == ("Enroute", before.updated_at)


def test_message_without_gateway_id_is_not_polled(db: Any) -> None:
    message_id = insert_row(gateway_id=None)
    result = status.sweep_statuses(inline=True)
    assert (result.claimed, result.dispatched, result.checks) == (1, 0, ())
    assert status.check_status(message_id, client=FakeClient()).outcome is (
        status.CheckOutcome.NO_GATEWAY_ID
    )
    assert row(message_id).gateway_status == "Enroute"


def test_a_sweep_that_finds_nothing_due_claims_nothing(db: Any) -> None:
    insert_row(next_check_at=utcnow() + dt.timedelta(minutes=5))
    result = status.sweep_statuses(inline=True)
    assert (result.terminated, result.claimed, result.dispatched) == (0, 0, 0)


# --- Terminated ---------------------------------------------------------------------------


def test_message_moving_after_timeout_is_terminated_once(db: Any) -> None:
    now = utcnow()
    # The gateway answered a check sent after its deadline (a minute ago): still moving.
    old = insert_row(
        submitted_at=now - dt.timedelta(minutes=31),
        gateway_status="Accepted",
        next_check_at=now + dt.timedelta(minutes=5),
        last_checked_at=now - dt.timedelta(seconds=30),
    )
    young = insert_row(submitted_at=now - dt.timedelta(minutes=29))
    first = status.sweep_statuses(inline=True)
    assert first.terminated == 1
    ended = row(old)
    assert ended.gateway_status == "Terminated"
    assert ended.final_at is not None and ended.final_at >= now
    assert ended.status_changed_at is not None and ended.status_changed_at >= now
    assert ended.next_check_at is None
    assert row(young).gateway_status == "Enroute"
    assert status.sweep_statuses(inline=True).terminated == 0
    assert row(old).final_at == ended.final_at


def test_message_delivered_just_before_the_deadline_gets_a_last_check_not_terminated(
    db: Any, monkeypatch: pytest.MonkeyPatch, settings_env: Any
) -> None:
    settings_env(SMS_STATUS_CHECK_BACKOFF="600")
    now = utcnow()
    # Submitted 29 minutes ago and due now: the 600 s step would jump past the deadline.
    message_id = insert_row(submitted_at=now - dt.timedelta(minutes=29), next_check_at=now)
    fake = FakeClient(GatewayStatus.ENROUTE)
    monkeypatch.setattr(status_checks, "get_gateway_client", lambda settings=None: fake)
    status.sweep_statuses(inline=True, now=now)
    deadline = now - dt.timedelta(minutes=29) + dt.timedelta(minutes=30)
    assert row(message_id).next_check_at == deadline
    # Delivered at minute 29:30; at minute 31 the sweep must ask once more, not terminate.
    fake.answer = GatewayStatus.DELIVERED
    later = now + dt.timedelta(minutes=2)
    result = status.sweep_statuses(inline=True, now=later)
    assert result.terminated == 0
    assert row(message_id).gateway_status == "Delivered"
    assert status.sweep_statuses(inline=True, now=later).terminated == 0


def test_moving_message_checked_after_its_deadline_is_terminated_at_the_next_sweep(
    db: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    now = utcnow()
    # Its last check was capped at the deadline, a minute ago, and has not run yet.
    message_id = insert_row(
        submitted_at=now - dt.timedelta(minutes=31), next_check_at=now - dt.timedelta(minutes=1)
    )
    fake = FakeClient(GatewayStatus.ENROUTE)
    monkeypatch.setattr(status_checks, "get_gateway_client", lambda settings=None: fake)
    assert status.sweep_statuses(inline=True, now=now).terminated == 0
    assert fake.asked == ["42"]
    assert status.sweep_statuses(inline=True, now=now).terminated == 1
    assert row(message_id).gateway_status == "Terminated"


def test_delivered_message_is_never_terminated(db: Any) -> None:
    long_ago = utcnow() - dt.timedelta(hours=2)
    message_id = insert_row(
        submitted_at=long_ago, gateway_status="Delivered", final_at=long_ago, next_check_at=None
    )
    before = row(message_id)
    assert status.sweep_statuses(inline=True).terminated == 0
    after = row(message_id)
    assert (after.gateway_status, after.updated_at) == ("Delivered", before.updated_at)


def test_terminate_timeout_is_configurable(db: Any, settings_env: Any) -> None:
    settings_env(SMS_TERMINATE_AFTER_SECONDS=60)
    message_id = insert_row(
        submitted_at=utcnow() - dt.timedelta(minutes=2),
        next_check_at=utcnow() + dt.timedelta(minutes=1),
        last_checked_at=utcnow() - dt.timedelta(seconds=30),
    )
    assert status.sweep_statuses(inline=True).terminated == 1
    assert row(message_id).gateway_status == "Terminated"


# --- overlapping sweeps ---------------------------------------------------------------------


def test_two_racing_sweeps_check_each_message_once(
    sim: ClockedSimulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    ids = [submit(monkeypatch, NEVER_FINAL) for _ in range(40)]
    sim.advance(10)
    make_due(*ids)
    asked_before = sim.status_requests()
    barrier = threading.Barrier(2)
    results: list[status.SweepResult] = []

    def sweep() -> None:
        barrier.wait()
        results.append(status.sweep_statuses(inline=True))

    threads = [threading.Thread(target=sweep) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    checked = [c.message_id for r in results for c in r.checks]
    assert len(results) == 2
    assert sorted(checked) == sorted(ids)  # every message once, none twice
    assert sim.status_requests() - asked_before == len(ids)
    assert all(row(i).gateway_status == "Enroute" for i in ids)


# --- CLI ----------------------------------------------------------------------------------


def test_cli_sweep_once_checks_in_process(
    sim: ClockedSimulator, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from sms_pipeline.cli import main

    message_id = submit(monkeypatch)
    sim.advance(20)
    make_due(message_id)
    assert main(["sweep", "--once"]) == 0
    out = capsys.readouterr().out
    assert "claimed 1" in out and "changed 1" in out
    assert row(message_id).gateway_status == "Delivered"

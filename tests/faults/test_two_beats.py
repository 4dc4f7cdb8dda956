"""Two beat processes started by mistake: nothing is sent twice, nothing checked twice."""

from __future__ import annotations

import collections
import threading
from typing import Any

import pytest
from sqlalchemy import select

from sms_pipeline import enqueue_sms
from sms_pipeline.db import session_scope
from sms_pipeline.db.models import SmsLog
from tests.faults.conftest import (
    lost_of,
    phone,
    pipeline_env,
    record_figure,
    settle,
    sim_snapshot,
    wait_until,
)

MESSAGES = 300


@pytest.mark.slow
def test_two_beats_send_nothing_twice_and_check_nothing_twice(
    db: Any, clean_broker: str, start_sim: Any, procs: Any
) -> None:
    sim = start_sim(enroute_after=1.0, deliver_after=4.0)
    # Count status requests per gateway id at the gateway itself.
    checks: collections.Counter[str] = collections.Counter()
    lock = threading.Lock()
    real_status = sim.state.status

    def counting_status(gateway_id: str) -> Any:
        with lock:
            checks[gateway_id] += 1
        return real_status(gateway_id)

    sim.state.status = counting_status
    # Aggressive clocks so the two beats' ticks overlap all the time.
    env = pipeline_env(
        SMS_OUTBOX_SWEEP_SECONDS=0.5,
        SMS_OUTBOX_GRACE_SECONDS=1,
        SMS_STATUS_POLL_SECONDS=0.5,
        SMS_STATUS_CHECK_BACKOFF="1",
    )
    procs.beat(env, name="beat-a")
    procs.beat(env, name="beat-b")
    procs.worker(env)
    ids = [enqueue_sms(phone(i), f"two beats {i}", "text") for i in range(MESSAGES)]
    counts, _ = settle(ids, timeout=120)

    def all_delivered() -> bool:
        with session_scope() as session:
            statuses = session.scalars(select(SmsLog.gateway_status).where(SmsLog.id.in_(ids)))
            return all(s == "Delivered" for s in statuses)

    wait_until(all_delivered, 120, "every message Delivered by status polling")
    snap = sim_snapshot(sim.state)
    with session_scope() as session:
        rows = session.execute(
            select(SmsLog.uniq_key, SmsLog.gateway_id, SmsLog.status_checks).where(
                SmsLog.id.in_(ids)
            )
        ).all()
    with lock:
        asked = dict(checks)
    sent_twice = sum(1 for r in rows if snap["attempts"].get("u:" + r.uniq_key, 0) != 1)
    # Every check is preceded by one claim, which counts in status_checks and moves the
    # next check a backoff step on: a message asked about more often than it was claimed
    # was checked twice in one sweep window.
    checked_twice = sum(1 for r in rows if asked.get(r.gateway_id, 0) > r.status_checks)
    record_figure(
        "two_beats",
        messages=MESSAGES,
        lost=lost_of(ids, counts),
        sent_twice=sent_twice,
        gateway_duplicates=snap["stats"].get("duplicates", 0),
        checked_twice_in_one_window=checked_twice,
        status_requests=sum(asked.values()),
    )
    assert counts == {"SUBMITTED": MESSAGES}, counts
    assert sent_twice == 0
    assert snap["stats"].get("duplicates", 0) == 0
    assert sum(asked.values()) >= MESSAGES  # the status polling did run
    assert checked_twice == 0

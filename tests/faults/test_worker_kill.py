"""A worker killed (kill -9 of its process group) three times during a 2,000-message run."""

from __future__ import annotations

import time
import uuid
from typing import Any

import pytest
from sqlalchemy import select

from sms_pipeline import enqueue_sms
from sms_pipeline.db import session_scope
from sms_pipeline.db.models import SendStatus, SmsLog
from tests.faults.conftest import (
    lost_of,
    phone,
    pipeline_env,
    record_figure,
    settle,
    sim_snapshot,
    tally,
    wait_until,
)

MESSAGES = 2000
KILL_AT = (300, 800, 1300)  # submitted messages at which the worker is killed


def _submitted() -> int:
    return tally().get(SendStatus.SUBMITTED.value, 0)


def _in_flight() -> list[uuid.UUID]:
    with session_scope() as session:
        return list(
            session.scalars(select(SmsLog.id).where(SmsLog.send_status == SendStatus.SENDING.value))
        )


def _all_final(ids: list[uuid.UUID]) -> bool:
    if not ids:
        return True
    with session_scope() as session:
        return not session.scalar(
            select(SmsLog.id)
            .where(
                SmsLog.id.in_(ids),
                SmsLog.send_status.in_([SendStatus.QUEUED.value, SendStatus.SENDING.value]),
            )
            .limit(1)
        )


@pytest.mark.slow
def test_worker_killed_three_times_loses_nothing_and_sends_nothing_twice(
    db: Any, clean_broker: str, start_sim: Any, procs: Any
) -> None:
    # 40 ms per gateway answer keeps the run long enough to kill the worker mid-way.
    sim = start_sim(latency_ms=40)
    env = pipeline_env()
    procs.beat(env)
    worker = procs.worker(env, name="worker-0")
    ids = [enqueue_sms(phone(i), f"kill test {i}", "text") for i in range(MESSAGES)]

    recoveries: list[float] = []
    in_flight_at_kill: list[int] = []
    for kill_number, threshold in enumerate(KILL_AT, start=1):

        def submitted(t: int = threshold) -> bool:
            return _submitted() >= t

        wait_until(submitted, 120, f"{threshold} submitted")
        worker.kill()
        killed_at = time.monotonic()
        caught = _in_flight()
        in_flight_at_kill.append(len(caught))
        worker = procs.worker(env, name=f"worker-{kill_number}")

        # The claims of the dead worker are released by the sweeper once their lease ends.
        def claims_ended(c: list[uuid.UUID] = caught) -> bool:
            return _all_final(c)

        wait_until(claims_ended, 90, "the killed worker's claims to end")
        recoveries.append(round(time.monotonic() - killed_at, 1))

    counts, _ = settle(ids, timeout=120)
    snap = sim_snapshot(sim.state)
    lost = lost_of(ids, counts)
    with session_scope() as session:
        rows = session.execute(
            select(SmsLog.uniq_key, SmsLog.gateway_id, SmsLog.send_status).where(SmsLog.id.in_(ids))
        ).all()
    accepted_keys = snap["accepted_keys"]
    resubmitted = sum(1 for r in rows if snap["attempts"].get("u:" + r.uniq_key, 0) > 1)
    accepted_twice = snap["stats"].get("accepted", 0) - len(accepted_keys)
    # A submitted row must match the gateway's one acceptance of its uniq_key.
    mismatched = [
        r
        for r in rows
        if r.send_status == SendStatus.SUBMITTED.value
        and (
            r.uniq_key not in accepted_keys
            or (r.gateway_id is not None and r.gateway_id != accepted_keys[r.uniq_key])
        )
    ]
    id_lost = sum(1 for r in rows if r.send_status == "SUBMITTED" and r.gateway_id is None)
    record_figure(
        "worker_kill",
        messages=MESSAGES,
        kills=len(KILL_AT),
        lost=lost,
        final_not_submitted=sum(counts.values()) - counts.get("SUBMITTED", 0),
        in_flight_at_kills=in_flight_at_kill,
        resubmitted_messages=resubmitted,
        gateway_duplicates_refused=snap["stats"].get("duplicates", 0),
        accepted_twice=accepted_twice,
        submitted_gateway_id_unknown=id_lost,
        recovery_seconds_max=max(recoveries),
        recovery_seconds=recoveries,
    )
    assert lost == 0, counts
    assert counts == {SendStatus.SUBMITTED.value: MESSAGES}, counts
    assert accepted_twice == 0
    assert mismatched == []
    assert worker.alive()

"""Redis and PostgreSQL restarted mid-run: nothing lost, nothing left half-sent."""

from __future__ import annotations

import time
from typing import Any

import pytest

from sms_pipeline import enqueue_sms
from sms_pipeline.db.models import SendStatus
from tests.faults.conftest import (
    outcome,
    phone,
    pipeline_env,
    record_figure,
    settle,
    tally,
    wait_until,
)

MESSAGES = 400


def _submitted(ids: list[Any]) -> int:
    return tally(ids).get(SendStatus.SUBMITTED.value, 0)


@pytest.mark.slow
def test_redis_restart_mid_run_loses_nothing(
    db: Any, start_sim: Any, own_redis: Any, use_broker: Any, procs: Any
) -> None:
    sim = start_sim(latency_ms=20)
    use_broker(own_redis.url)
    env = pipeline_env(SMS_BROKER_URL=own_redis.url)
    procs.beat(env)
    worker = procs.worker(env)
    ids = [enqueue_sms(phone(i), f"redis test {i}", "text") for i in range(MESSAGES)]
    wait_until(lambda: _submitted(ids) >= MESSAGES // 4, 120, "a quarter submitted")

    own_redis.kill()  # no persistence: every queued task is gone
    # Enqueue while the broker is down: the rows commit, the publish fails, the sweeper
    # publishes them later.
    ids += [enqueue_sms(phone(MESSAGES + i), f"redis down {i}", "text") for i in range(5)]
    time.sleep(2)  # the outage under test: two seconds without a broker
    own_redis.start()
    back_at = time.monotonic()
    ids += [enqueue_sms(phone(MESSAGES + 5 + i), f"redis back {i}", "text") for i in range(50)]

    result = outcome(sim, ids, timeout=150)
    counts = result["counts"]
    record_figure(
        "redis_restart",
        messages=len(ids),
        lost=result["lost"],
        final_not_submitted=sum(counts.values()) - counts.get("SUBMITTED", 0),
        gateway_duplicates_refused=result["duplicates_refused"],
        accepted_twice=result["accepted_twice"],
        recovery_seconds=round(time.monotonic() - back_at, 1),
    )
    assert result["lost"] == 0, counts
    assert counts == {SendStatus.SUBMITTED.value: len(ids)}, counts
    assert result["accepted_twice"] == 0
    assert worker.alive(), "the worker died with the broker"


@pytest.mark.slow
def test_redis_lost_while_a_late_ack_task_runs_the_worker_reconnects_and_sends_on(
    db: Any, start_sim: Any, own_redis: Any, use_broker: Any, procs: Any
) -> None:
    """Redis goes while a status check (late ack) waits on the gateway and the consumer's
    BRPOP is in flight. kombu 5.7 then restored the unacked task through a transport celery
    had already closed: "Unrecoverable error: AttributeError(... 'hostname')", and the
    worker, still alive, consumed nothing more (sms_pipeline/broker/redis_transport.py)."""
    sim = start_sim(latency_ms=1500)  # every gateway request takes 1.5 s
    use_broker(own_redis.url)
    env = pipeline_env(
        SMS_BROKER_URL=own_redis.url,
        SMS_STATUS_POLL_SECONDS="1",
        SMS_STATUS_FIRST_CHECK_SECONDS="1",
    )
    procs.beat(env)
    worker = procs.worker(env)
    ids = [enqueue_sms(phone(i), f"late ack {i}", "text") for i in range(3)]
    wait_until(lambda: _submitted(ids) == len(ids), 60, "the first messages submitted")
    # Nothing is left to send: a request now in flight is a status check.
    wait_until(lambda: sim.state.in_flight > 0, 60, "a status check waiting on the gateway")

    own_redis.kill()
    time.sleep(1)  # the outage under test
    own_redis.start()
    ids += [enqueue_sms(phone(100 + i), f"after {i}", "text") for i in range(3)]

    counts, _ = settle(ids, timeout=60)
    log = worker.log_text()
    assert "Unrecoverable error" not in log, log[-4000:]
    assert counts == {SendStatus.SUBMITTED.value: len(ids)}, counts
    assert worker.alive()


@pytest.mark.slow
def test_postgres_restart_mid_run_loses_nothing_and_leaves_nothing_sending(
    clean_broker: str, start_sim: Any, own_postgres: Any, settings_env: Any, procs: Any
) -> None:
    from sms_pipeline.db import dispose_engines, get_engine, migrate

    settings_env(SMS_DATABASE_URL=own_postgres.url)
    try:
        migrate.upgrade(get_engine())
        sim = start_sim(latency_ms=20)
        env = pipeline_env(SMS_DATABASE_URL=own_postgres.url)
        procs.beat(env)
        worker = procs.worker(env)
        ids = [enqueue_sms(phone(i), f"pg test {i}", "text") for i in range(MESSAGES)]
        wait_until(lambda: _submitted(ids) >= MESSAGES // 4, 120, "a quarter submitted")

        own_postgres.stop("immediate")  # a crash, as far as clients can tell
        time.sleep(3)  # the outage under test: three seconds without a database
        own_postgres.start()
        back_at = time.monotonic()

        result = outcome(sim, ids, timeout=150)
        counts = result["counts"]
        record_figure(
            "postgres_restart",
            messages=len(ids),
            lost=result["lost"],
            still_sending=counts.get(SendStatus.SENDING.value, 0),
            final_not_submitted=sum(counts.values()) - counts.get("SUBMITTED", 0),
            gateway_duplicates_refused=result["duplicates_refused"],
            accepted_twice=result["accepted_twice"],
            # Send tasks that died on the outage; their rows stayed QUEUED for the sweeper.
            tasks_failed_on_outage=worker.log_text().count("raised unexpected: OperationalError"),
            recovery_seconds=round(time.monotonic() - back_at, 1),
        )
        assert result["lost"] == 0, counts
        assert counts.get(SendStatus.SENDING.value, 0) == 0
        assert counts == {SendStatus.SUBMITTED.value: len(ids)}, counts
        assert result["accepted_twice"] == 0
        assert worker.alive(), "the worker died with the database"
    finally:
        procs.kill_all()
        dispose_engines()

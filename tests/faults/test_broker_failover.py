"""Brokers that survive losing a node: Redis Sentinel failover and a RabbitMQ restart, under
load (more than 1,000 messages in flight), with a real worker and beat on PostgreSQL.

Each test counts what the gateway simulator accepted per uniq_key: 0 lost, 0 accepted
twice. Drains hand over every 2 s (SMS_DRAIN_MAX_SECONDS), so sending goes on only while
the broker carries the next kick: "sends resume" measures the broker path, not a drain
that happened to be running.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event
from sqlalchemy.orm import Session

from sms_pipeline import enqueue_many, enqueue_sms
from sms_pipeline.broker.app import ALL_QUEUES
from sms_pipeline.db.models import SendStatus
from sms_pipeline.simulator.rules import DEFAULT_RULES
from tests.faults.broker_servers import (
    MASTER_NAME,
    MASTER_PASSWORD,
    RabbitCluster,
    RabbitNode,
    SentinelGroup,
    declare_queues,
    start_rabbit_cluster,
    start_rabbit_node,
    start_sentinel_group,
)
from tests.faults.conftest import (
    Procs,
    outcome,
    phone,
    pipeline_env,
    record_figure,
    tally,
    wait_until,
)

MESSAGES = 1500
LOAD = {
    # 20 messages per gateway round trip of 200 ms: ~100 sends/s, so the batch is still
    # mostly waiting when the broker goes.
    "SMS_SEND_BATCH_SIZE": "20",
    "SMS_DRAIN_MAX_SECONDS": "2",
    "SMS_DRAIN_LINGER_MS": "0",
    "SMS_DRAIN_LINGER_BULK_MS": "0",
}
RESUME_BOUND_SECONDS = 30  # the bound: sends resume within 30 s of the recovery


@pytest.fixture
def sentinel_group(procs: Procs, tmp_path: Path) -> SentinelGroup:
    return start_sentinel_group(procs, tmp_path)


@pytest.fixture
def rabbit_node(procs: Procs, tmp_path: Path) -> RabbitNode:
    return start_rabbit_node(procs, tmp_path)


@pytest.fixture
def rabbit_cluster(procs: Procs, tmp_path: Path) -> RabbitCluster:
    return start_rabbit_cluster(procs, tmp_path)


def _attempts(ids: list[uuid.UUID]) -> list[int]:
    from sqlalchemy import select

    from sms_pipeline.db import session_scope
    from sms_pipeline.db.models import SmsLog

    with session_scope() as session:
        return sorted(session.scalars(select(SmsLog.attempts).where(SmsLog.id.in_(ids))))


def _submitted(ids: list[uuid.UUID]) -> int:
    return tally(ids).get(SendStatus.SUBMITTED.value, 0)


def _enqueue(count: int, start: int = 0, label: str = "load") -> list[uuid.UUID]:
    ids: list[uuid.UUID] = []
    for first in range(start, start + count, 100):
        batch = range(first, min(first + 100, start + count))
        ids += enqueue_many(
            [{"phone_number": phone(i), "body": f"{label} {i}", "type": "text"} for i in batch]
        )
    return ids


def _nothing_lost_nor_twice(
    figure: str, ids: list[uuid.UUID], in_flight: int, result: dict[str, Any], **timings: float
) -> None:
    """Record the run's figures, then the verdict every fault under load must meet."""
    record_figure(
        figure,
        messages=len(ids),
        in_flight_at_kill=in_flight,
        lost=result["lost"],
        accepted_twice=result["accepted_twice"],
        submitted_twice=result["submitted_twice"],
        gateway_duplicates_refused=result["duplicates_refused"],
        **timings,
    )
    assert in_flight >= 1000
    assert result["lost"] == 0, result["counts"]
    assert result["counts"] == {SendStatus.SUBMITTED.value: len(ids)}, result["counts"]
    assert result["accepted_twice"] == 0


@dataclass
class _Fault:
    ids: list[uuid.UUID]  # the load and the 100 enqueued after the fault
    in_flight: int  # not yet submitted when the fault struck
    struck: float  # monotonic
    recovered: float  # monotonic: the fault call returned (promotion seen, node back)
    resumed: float  # monotonic: sends going on


def _fault_under_load(
    ids: list[uuid.UUID], fault: Callable[[], object], after: str, more: int = 0
) -> _Fault:
    """The fault struck under load, 100 messages enqueued after it, then the wait (within
    the issue's bound) for sends to go on: `more` than were submitted when it recovered."""
    in_flight = len(ids) - _submitted(ids)
    struck = time.monotonic()
    fault()
    recovered = time.monotonic()
    before = _submitted(ids)
    ids = ids + _enqueue(100, start=MESSAGES, label=after)
    wait_until(
        lambda: _submitted(ids) > before + more, RESUME_BOUND_SECONDS, f"sends to go on {after}"
    )
    return _Fault(ids, in_flight, struck, recovered, time.monotonic())


@pytest.mark.slow
def test_sentinel_failover_under_load_loses_nothing_and_sends_nothing_twice(
    db: Any,
    start_sim: Any,
    sentinel_group: Any,
    settings_env: Any,
    use_broker: Any,
    procs: Any,
) -> None:
    sim = start_sim(latency_ms=200)
    settings_env(SMS_BROKER_MASTER_NAME=MASTER_NAME)
    use_broker(sentinel_group.url)
    env = pipeline_env(
        SMS_BROKER_URL=sentinel_group.url, SMS_BROKER_MASTER_NAME=MASTER_NAME, **LOAD
    )
    procs.beat(env)
    # The worker starts once every message is queued: the load in flight at the fault does
    # not depend on how fast this process enqueues next to a busy machine.
    ids = _enqueue(MESSAGES)
    worker = procs.worker(env)
    wait_until(lambda: _submitted(ids) >= 60, 60, "sending under way")

    masters: list[str] = []

    def kill_the_master() -> None:  # kill -9: no shutdown, no last write
        masters.append(sentinel_group.kill_master())
        masters.append(sentinel_group.wait_promotion(masters[0]))

    # Producers go on through the Sentinels: those after it reach the promoted master.
    run = _fault_under_load(ids, kill_the_master, "after promotion")
    old_master, new_master = masters
    result = outcome(sim, run.ids, timeout=120)
    _nothing_lost_nor_twice(
        "sentinel_failover",
        run.ids,
        run.in_flight,
        result,
        promotion_seconds=round(run.recovered - run.struck, 1),
        resume_after_promotion_seconds=round(run.resumed - run.recovered, 1),
        all_final_after_promotion_seconds=round(time.monotonic() - run.recovered, 1),
    )
    assert new_master != old_master
    assert worker.alive(), "the worker died with the master"
    assert "Unrecoverable error" not in worker.log_text()
    for name, text in procs.logs().items():  # masked in every URL of the list, everywhere
        assert MASTER_PASSWORD not in text, name


@pytest.mark.slow
def test_rabbitmq_node_restarted_under_load_loses_nothing_and_sends_nothing_twice(
    db: Any,
    start_sim: Any,
    rabbit_node: Any,
    own_redis: Any,
    settings_env: Any,
    use_broker: Any,
    procs: Any,
) -> None:
    sim = start_sim(latency_ms=200)
    # The production shape: RabbitMQ carries the tasks, a Redis the kick flags (one pending
    # kick per queue class, not one per producer) and the rate limits.
    settings_env(SMS_REDIS_URL=own_redis.url)
    rabbit_node.provision(use_broker(rabbit_node.url))
    env = pipeline_env(SMS_BROKER_URL=rabbit_node.url, SMS_REDIS_URL=own_redis.url, **LOAD)
    procs.beat(env)
    # The worker starts once every message is queued: the load in flight at the fault does
    # not depend on how fast this process enqueues next to a busy machine.
    ids = _enqueue(MESSAGES)
    worker = procs.worker(env)
    wait_until(lambda: _submitted(ids) >= 60, 60, "sending under way")

    def crash_and_restart() -> None:
        rabbit_node.kill()  # kill -9 of the node: a crash
        time.sleep(1)  # the outage under test
        rabbit_node.start()

    run = _fault_under_load(ids, crash_and_restart, "after restart")
    # Every queue of the pipeline is a durable quorum queue, there again after the crash.
    types = rabbit_node.queue_types()
    for name in ALL_QUEUES:
        assert types.get(name) == "quorum durable=true", types

    result = outcome(sim, run.ids, timeout=120)
    _nothing_lost_nor_twice(
        "rabbitmq_restart",
        run.ids,
        run.in_flight,
        result,
        node_down_seconds=round(run.recovered - run.struck, 1),
        resume_after_restart_seconds=round(run.resumed - run.recovered, 1),
        all_final_after_restart_seconds=round(time.monotonic() - run.recovered, 1),
    )
    assert worker.alive(), "the worker died with the node"
    assert "delayed delivery" not in worker.log_text()  # no countdowns, no such exchanges


@pytest.mark.slow
def test_rabbitmq_one_node_of_three_killed_under_load_loses_nothing_and_sends_nothing_twice(
    db: Any,
    start_sim: Any,
    rabbit_cluster: Any,
    own_redis: Any,
    settings_env: Any,
    use_broker: Any,
    procs: Any,
) -> None:
    """Three nodes, quorum queues with a member on each; every client is given the three
    URLs and starts on the first node, which is then killed and not restarted."""
    sim = start_sim(latency_ms=200)
    settings_env(SMS_REDIS_URL=own_redis.url)
    declare_queues(use_broker(rabbit_cluster.url))
    env = pipeline_env(SMS_BROKER_URL=rabbit_cluster.url, SMS_REDIS_URL=own_redis.url, **LOAD)
    procs.beat(env)
    # The worker starts once every message is queued: the load in flight at the fault does
    # not depend on how fast this process enqueues next to a busy machine.
    ids = _enqueue(MESSAGES)
    worker = procs.worker(env)
    wait_until(lambda: _submitted(ids) >= 60, 60, "sending under way")

    # A drain already running sends at most ~200 more (2 s at ~100/s) without the broker:
    # 300 more means kicks went through the two nodes left.
    run = _fault_under_load(
        ids,
        rabbit_cluster.nodes[0].kill,  # kill -9 of the node every client is connected to
        "through the other two nodes",
        more=300,
    )
    members = rabbit_cluster.members()  # the dead node's members are still listed
    for name in ALL_QUEUES:
        assert members.get(name) == 3, members  # a member on every node

    result = outcome(sim, run.ids, timeout=120)
    _nothing_lost_nor_twice(
        "rabbitmq_cluster_node_killed",
        run.ids,
        run.in_flight,
        result,
        going_again_after_kill_seconds=round(run.resumed - run.struck, 1),
        all_final_after_kill_seconds=round(time.monotonic() - run.struck, 1),
    )
    assert worker.alive(), "the worker died with the node"


@pytest.mark.slow
def test_rabbitmq_lost_between_commit_and_publish_the_sweeper_delivers(
    db: Any,
    start_sim: Any,
    rabbit_node: Any,
    use_broker: Any,
    procs: Any,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The producer's rows commit, then the broker dies before the kick is published: the
    publish fails (logged, nothing raised to the caller) and the outbox sweeper, once the
    node is back, kicks the rows. Also: a retry on RabbitMQ, with no broker countdown,
    is sent again by the sweeper once due."""
    sim = start_sim(latency_ms=20, rules=DEFAULT_RULES)
    rabbit_node.provision(use_broker(rabbit_node.url))
    # No SMS_REDIS_URL: no kick flags, every producer publishes its kick (the degraded path).
    env = pipeline_env(SMS_BROKER_URL=rabbit_node.url)
    procs.beat(env)
    procs.worker(env)
    # Numbers ending 01: HTTP 503 at the first attempt, accepted at the second.
    retried = [enqueue_sms(f"+380931234{i}01", f"retry {i}", "text") for i in range(3)]
    _lose_the_broker_between_commit_and_publish(
        sim, rabbit_node.kill, rabbit_node.start, "rabbitmq_lost_publish", caplog
    )
    wait_until(lambda: _submitted(retried) == len(retried), 60, "the retried messages sent")
    assert _attempts(retried) == [2, 2, 2]


@pytest.mark.slow
def test_sentinel_master_lost_between_commit_and_publish_the_sweeper_delivers(
    db: Any,
    start_sim: Any,
    sentinel_group: Any,
    settings_env: Any,
    use_broker: Any,
    procs: Any,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The same on Sentinel: the master dies between the commit and the publish; the publish
    fails before the Sentinels have promoted the replica, and the sweeper delivers."""
    sim = start_sim(latency_ms=20)
    settings_env(SMS_BROKER_MASTER_NAME=MASTER_NAME)
    use_broker(sentinel_group.url)
    env = pipeline_env(SMS_BROKER_URL=sentinel_group.url, SMS_BROKER_MASTER_NAME=MASTER_NAME)
    procs.beat(env)
    procs.worker(env)
    old_master: list[int] = []
    _lose_the_broker_between_commit_and_publish(
        sim,
        lambda: old_master.append(sentinel_group.kill_master()),
        lambda: sentinel_group.wait_promotion(old_master[0]),
        "sentinel_lost_publish",
        caplog,
    )


def _lose_the_broker_between_commit_and_publish(
    sim: Any,
    kill: Any,
    restore: Any,
    figure: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    warm = _enqueue(5, label="warm")
    wait_until(lambda: _submitted(warm) == len(warm), 60, "the pipeline sending")

    killed: list[bool] = []

    def kill_broker_after_commit(session: Session) -> None:
        if not killed:
            killed.append(True)
            kill()

    # insert=True: runs before the outbox's own after_commit publish.
    event.listen(Session, "after_commit", kill_broker_after_commit, insert=True)
    try:
        ids = _enqueue(50, start=100, label="lost publish")
    finally:
        event.remove(Session, "after_commit", kill_broker_after_commit)
    assert killed, "the broker was not killed between commit and publish"
    assert "send kick failed" in caplog.text  # the caller saw no error

    restore()
    back_at = time.monotonic()
    result = outcome(sim, ids, timeout=60)
    record_figure(
        figure,
        messages=len(ids),
        lost=result["lost"],
        accepted_twice=result["accepted_twice"],
        delivered_after_recovery_seconds=round(time.monotonic() - back_at, 1),
    )
    assert result["counts"] == {SendStatus.SUBMITTED.value: len(ids)}, result["counts"]
    assert result["accepted_twice"] == 0


@pytest.mark.slow
def test_rate_limits_and_kick_flags_follow_the_promoted_master(
    db: Any, sentinel_group: Any, settings_env: Any
) -> None:
    """SMS_REDIS_URL as a Sentinel list: the abuse limits (`limits` storage) and the kick
    flags' client reach the master through the Sentinels, and the promoted one after a
    failover, with the counts it had (WAIT: replicated before the kill)."""
    from sms_pipeline.broker import redis_store
    from sms_pipeline.services.accounts import quotas

    settings = settings_env(
        SMS_REDIS_URL=sentinel_group.url,
        SMS_REDIS_MASTER_NAME=MASTER_NAME,
        SMS_API_KEY_RATE_PER_MINUTE=3,
    )
    key = f"k-{uuid.uuid4().hex[:8]}"
    assert [quotas.check_api_key(key, "fault", settings) for _ in range(3)] == [None] * 3
    refused = quotas.check_api_key(key, "fault", settings)
    assert refused is not None and refused.limit == quotas.KEY_RATE
    flags = redis_store.client(settings)
    assert flags is not None
    flags.set("sms_pipeline:fault-probe", b"1")
    assert flags.execute_command("WAIT", 1, 5000) == 1  # on the replica too

    old_master = sentinel_group.kill_master()
    sentinel_group.wait_promotion(old_master)

    # The same clients, no restart: the next command finds the promoted master.
    wait_until(lambda: flags.get("sms_pipeline:fault-probe") == b"1", 30, "the flag client")
    again = quotas.check_api_key(key, "fault", settings)
    assert again is not None and again.limit == quotas.KEY_RATE  # the count survived
    assert quotas.check_api_key(f"{key}-other", "fault", settings) is None

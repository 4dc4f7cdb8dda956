"""Scale-out: one worker process, then two, draining the same queues of one database.

Both runs send the same backlog (half urgent, half bulk, all due at one moment) through a
gateway simulator of its own process (100 ms per answer). The figures are the send rate of
each run and the share of each worker; the assertion is that with two workers nothing
reaches the gateway twice (claims are row locks in the database, not broker state).
"""

from __future__ import annotations

import datetime as dt
import re
import uuid
from typing import Any

import pytest
import requests
from sqlalchemy import func, select, update

from sms_pipeline import enqueue_many
from sms_pipeline.db import session_scope
from sms_pipeline.db.models import SendStatus, SmsLog
from sms_pipeline.supervise import CLI
from tests.faults.conftest import (
    GATEWAY_LOGIN,
    GATEWAY_PASSWORD,
    Procs,
    phone,
    pipeline_env,
    record_figure,
    settle,
    tally,
    wait_until,
)
from tests.support import free_port

MESSAGES = 2000
LATENCY_MS = 100
# Drains hand over every second, so kicks (one pending per queue class) land on either
# worker; the rest of the clocks as in production.
SCALE_ENV = {"SMS_DRAIN_MAX_SECONDS": "1", "SMS_WORKER_CONCURRENCY": "16"}
_SUBMITTED = re.compile(r"send drain of \w+: .*?(\d+) submitted")


def _start_gateway(procs: Procs, settings_env: Any) -> str:
    """The simulator in a process of its own (the test process stays out of the way)."""
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    settings_env(
        IP2SMS_SEND_URL=f"{base}/ip2sms/",
        IP2SMS_STATUS_URL=f"{base}/ip2sms-request/",
        IP2SMS_LOGIN=GATEWAY_LOGIN,
        IP2SMS_PASSWORD=GATEWAY_PASSWORD,
    )
    argv = [*CLI, "gateway-sim", "--no-faults", "--port", str(port)]
    argv += ["--latency-ms", str(LATENCY_MS), "--enroute-after", "0", "--deliver-after", "0"]
    procs.spawn(f"gateway-{port}", argv, pipeline_env())
    wait_until(lambda: requests.get(f"{base}/_sim/stats", timeout=1).ok, 30, "the simulator")
    return base


def _sent_by(log_text: str) -> int:
    return sum(int(n) for n in _SUBMITTED.findall(log_text))


def _run(procs: Procs, gateway: str, workers: int, offset: int) -> dict[str, Any]:
    requests.post(f"{gateway}/_sim/reset", timeout=5).raise_for_status()
    env = pipeline_env(**SCALE_ENV)
    started = [procs.worker(env, name=f"w{workers}-{n}", concurrency=16) for n in range(workers)]
    for proc in started:
        proc.wait_for_log(r"ready\.", timeout=60)
    # The backlog is stored due in an hour (no kick: the wait is the sweeper's), then made
    # due all at once: the run measures the workers draining it, from that
    # commit to the last submission (the first kick comes with the next sweep, <= 1 s).
    later = dt.datetime.now(dt.UTC) + dt.timedelta(hours=1)
    messages = [
        {
            "phone_number": phone(offset + i),
            "body": f"scale {workers} {i}",
            "type": "verification" if i % 2 else "text",
            "send_at": later,
        }
        for i in range(MESSAGES)
    ]
    ids: list[uuid.UUID] = []
    for first in range(0, MESSAGES, 500):
        ids += enqueue_many(messages[first : first + 500])
    due = dt.datetime.now(dt.UTC)
    with session_scope() as session:
        session.execute(update(SmsLog).where(SmsLog.id.in_(ids)).values(due_at=due))
    counts, _ = settle(ids, timeout=80)
    with session_scope() as session:
        last = session.scalar(select(func.max(SmsLog.submitted_at)).where(SmsLog.id.in_(ids)))
    assert last is not None
    seconds = (last - due).total_seconds()
    stats = requests.get(f"{gateway}/_sim/stats", timeout=5).json()
    # Each drain logs its line when it ends, a moment after its last record: wait for the
    # lines to account for every message (a drain still lingering has not written its own).
    wait_until(
        lambda: sum(_sent_by(p.log_text()) for p in started) >= MESSAGES,
        30,
        f"the drains' log lines to count {MESSAGES} submitted",
    )
    shares = [_sent_by(p.log_text()) for p in started]
    for proc in started:
        proc.kill()
    return {
        "counts": counts,
        "ids": ids,
        "seconds": round(seconds, 2),
        "per_second": round(len(ids) / seconds, 1),
        "shares": shares,
        "submissions": stats.get("submissions", 0),
        "accepted": stats.get("accepted", 0),
        "duplicates": stats.get("duplicates", 0),
    }


@pytest.mark.slow
def test_two_workers_share_the_queues_and_send_nothing_twice(
    db: Any, clean_broker: str, settings_env: Any, procs: Procs
) -> None:
    gateway = _start_gateway(procs, settings_env)
    procs.beat(pipeline_env(**SCALE_ENV))
    one = _run(procs, gateway, workers=1, offset=0)
    two = _run(procs, gateway, workers=2, offset=MESSAGES)
    record_figure(
        "scale_out",
        messages_per_run=MESSAGES,
        gateway_latency_ms=LATENCY_MS,
        one_worker_per_second=one["per_second"],
        two_workers_per_second=two["per_second"],
        speedup=round(two["per_second"] / one["per_second"], 2),
        two_workers_shares="/".join(str(n) for n in two["shares"]),
        two_workers_submissions=two["submissions"],
        two_workers_duplicates_refused=two["duplicates"],
    )
    for run in (one, two):
        assert run["counts"] == {SendStatus.SUBMITTED.value: MESSAGES}, run["counts"]
        # Every message reached the gateway exactly once: nothing sent twice.
        assert run["submissions"] == run["accepted"] == MESSAGES, run
        assert run["duplicates"] == 0
    assert sum(two["shares"]) == MESSAGES
    assert all(share > 0 for share in two["shares"]), two["shares"]  # both drained
    assert tally() == {SendStatus.SUBMITTED.value: 2 * MESSAGES}

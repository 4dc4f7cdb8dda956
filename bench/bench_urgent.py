"""Urgent latency under bulk load: verification codes while a bulk backlog drains.

`bulk` text messages are queued (bulk insert + publish, as in the send benchmark) and a
worker starts draining them; one second later `urgent` verification messages are
enqueued with enqueue_sms (the real path: row, commit, publish to the urgent queue),
spread over `spread` seconds. Latency is sms_log.submitted_at - inserted_at of each
verification; the bulk backlog still waiting when the last one was submitted is reported
to show they did not simply run after it.

    python -m bench urgent --bulk 20000 --urgent 50
"""

from __future__ import annotations

import time
import uuid
from typing import Any

from bench.common import (
    BenchEnv,
    count_where,
    default_account_id,
    insert_rows,
    log,
    message_row,
    percentile,
    phone,
    publish_sends,
    wait_until,
)


def run(
    env: BenchEnv,
    *,
    bulk: int,
    urgent: int,
    spread: float,
    pool: str,
    concurrency: int,
    latency_ms: float,
) -> dict[str, Any]:
    env.truncate()
    simulator = env.start_simulator(latency_ms)
    from sqlalchemy import text

    from sms_pipeline.db import get_engine
    from sms_pipeline.db.models import utcnow
    from sms_pipeline.services.intake.enqueue import enqueue_sms

    account_id = default_account_id()
    rows = [message_row(i, account_id, utcnow()) for i in range(bulk)]
    insert_rows(rows)
    publish_sends(rows)
    worker = env.start_worker(pool=pool, concurrency=concurrency)
    wait_until(lambda: env.queued() < bulk, 60, "the worker to start")
    time.sleep(1.0)
    ids: list[uuid.UUID] = []
    for i in range(urgent):
        ids.append(enqueue_sms(phone(5_000_000 + i), f"Your code: {100000 + i}", "verification"))
        time.sleep(spread / urgent)
    id_list = ", ".join(f"'{i}'" for i in ids)
    wait_until(
        lambda: (
            count_where(
                "SELECT count(*) FROM verification.sms_log "
                f"WHERE id IN ({id_list}) AND send_status = 'SUBMITTED'"
            )
            >= urgent
        ),
        120,
        "every verification submitted",
        0.05,
    )
    bulk_waiting = count_where(
        "SELECT count(*) FROM verification.sms_log WHERE type = 'text' AND send_status = 'QUEUED'"
    )
    env.stop(worker)
    env.stop(simulator)
    with get_engine().connect() as conn:
        latencies = [
            float(v)
            for v in conn.execute(
                text(
                    "SELECT extract(epoch FROM submitted_at - inserted_at) "
                    f"FROM verification.sms_log WHERE id IN ({id_list})"
                )
            ).scalars()
        ]
    result = {
        "bulk_messages": bulk,
        "urgent_messages": urgent,
        "spread_seconds": spread,
        "pool": pool,
        "concurrency": concurrency,
        "gateway_latency_ms": latency_ms,
        "p50_ms": round(percentile(latencies, 0.5) * 1000, 1),
        "p99_ms": round(percentile(latencies, 0.99) * 1000, 1),
        "max_ms": round(max(latencies) * 1000, 1),
        "bulk_still_queued_after": bulk_waiting,
    }
    log(
        f"urgent under bulk load: p50 {result['p50_ms']} ms, p99 {result['p99_ms']} ms, "
        f"max {result['max_ms']} ms ({bulk_waiting:,} bulk messages still queued)"
    )
    return result

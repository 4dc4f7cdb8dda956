"""Replication: verification rows inserted in batches while beat + worker replicate them.

A worker consuming only the maintenance queue runs the replicate task, which beat sends
every second. Verifications go in `batch` rows per transaction at an offered `rate`.
Replicated rows publish their send tasks to the urgent queue like in production (that
publish is part of the measured cost); no sender consumes them, so the bench drops that
queue as it goes to keep our Redis db small. Throughput = rows / (last row replicated -
first row inserted); lag = sms_log.inserted_at - verifications.inserted_at.

    python -m bench replication --count 100000 --rate 5000
"""

from __future__ import annotations

import time
import uuid
from typing import Any

from bench.common import BenchEnv, count_where, log, phone, wait_until

LAG_SQL = (
    "SELECT percentile_cont(ARRAY[0.5, 0.99]) WITHIN GROUP (ORDER BY "
    "extract(epoch FROM s.inserted_at - v.inserted_at)), max(extract(epoch FROM "
    "s.inserted_at - v.inserted_at)) FROM verification.sms_log s "
    "JOIN verification.verifications v ON v.id = s.verification_id"
)


def run(env: BenchEnv, *, count: int, batch: int, rate: float) -> dict[str, Any]:
    env.truncate()
    env.sim_url = env.sim_url or "http://127.0.0.1:9"  # never called: nothing is sent here
    from sqlalchemy import insert, text

    from sms_pipeline.db import get_engine
    from sms_pipeline.db.models import Verification, utcnow

    worker = env.start_worker(
        pool="threads", concurrency=2, queues="maintenance", sms_replication_seconds=1
    )
    beat = env.start_beat(sms_replication_seconds=1)
    engine = get_engine()
    started = time.perf_counter()
    inserted = 0
    while inserted < count:
        n = min(batch, count - inserted)
        rows = [
            {
                "id": uuid.uuid4(),
                "phone_number": phone(inserted + k),
                "code": f"{(inserted + k) % 1_000_000:06d}",
                "status": "new",
                "inserted_at": utcnow(),
                "updated_at": utcnow(),
            }
            for k in range(n)
        ]
        with engine.begin() as conn:
            conn.execute(insert(Verification), rows)
        inserted += n
        env.drop_queue("urgent")
        ahead = started + inserted / rate - time.perf_counter()
        if ahead > 0:
            time.sleep(ahead)
    offered_seconds = time.perf_counter() - started

    def done() -> bool:
        env.drop_queue("urgent")
        return (
            count_where(
                "SELECT count(*) FROM verification.sms_log WHERE verification_id IS NOT NULL"
            )
            >= count
        )

    finished = wait_until(done, 120 + count / 500, "every verification replicated", 0.1)
    env.stop(beat)
    env.stop(worker)
    env.drop_queue("urgent")
    with engine.connect() as conn:
        (p50, p99), worst = conn.execute(text(LAG_SQL)).one()
    seconds = finished - started
    result = {
        "verifications": count,
        "batch": batch,
        "offered_per_second": round(count / offered_seconds, 1),
        "seconds": round(seconds, 3),
        "per_second": round(count / seconds, 1),
        "lag_p50_ms": round(float(p50) * 1000, 1),
        "lag_p99_ms": round(float(p99) * 1000, 1),
        "lag_max_ms": round(float(worst) * 1000, 1),
    }
    log(
        f"replication: {result['per_second']:.0f} rows/s (offered "
        f"{result['offered_per_second']:.0f}/s), lag p50 {result['lag_p50_ms']} ms, "
        f"p99 {result['lag_p99_ms']} ms"
    )
    return result

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

import datetime as dt
import time
import uuid
from typing import Any

from bench.common import BenchEnv, count_where, log, phone, wait_until

LAG_SQL = (
    "SELECT percentile_cont(ARRAY[0.5, 0.99]) WITHIN GROUP (ORDER BY "
    "extract(epoch FROM s.inserted_at - v.inserted_at)), max(extract(epoch FROM "
    "s.inserted_at - v.inserted_at)) FROM verification.sms_log s "
    "JOIN verification.verifications v ON v.id = s.verification_id"
)  # the phone numbers grow with the row index: `WHERE v.phone_number >= ...` picks a phase


def _insert_paced(env: BenchEnv, count: int, batch: int, rate: float, offset: int) -> float:
    """Insert `count` verifications, `batch` per transaction, at `rate`; returns the start."""
    from sqlalchemy import insert

    from sms_pipeline.db import get_engine
    from sms_pipeline.db.models import Verification, utcnow

    engine = get_engine()
    started = time.perf_counter()
    inserted = 0
    while inserted < count:
        n = min(batch, count - inserted)
        rows = [
            {
                "id": uuid.uuid4(),
                "phone_number": phone(offset + inserted + k),
                "code": 100_000 + (inserted + k) % 900_000,
                "check_digit": 0,
                "status": "new",
                "code_expired_at": utcnow() + dt.timedelta(minutes=10),
                "inserted_at": utcnow(),
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
    return started


def _wait_replicated(env: BenchEnv, total: int) -> float:
    def done() -> bool:
        env.drop_queue("urgent")
        return (
            count_where(
                "SELECT count(*) FROM verification.sms_log WHERE verification_id IS NOT NULL"
            )
            >= total
        )

    return wait_until(done, 120 + total / 300, "every verification replicated", 0.1)


def _lag(since_index: int) -> tuple[float, float, float]:
    from sqlalchemy import text

    from sms_pipeline.db import get_engine

    with get_engine().connect() as conn:
        (p50, p99), worst = conn.execute(
            text(LAG_SQL + " WHERE v.phone_number >= :first"),
            {"first": phone(since_index)},
        ).one()
    return float(p50) * 1000, float(p99) * 1000, float(worst) * 1000


def run(
    env: BenchEnv,
    *,
    count: int,
    batch: int,
    rate: float,
    probe: int = 1000,
    probe_rate: float = 100,
) -> dict[str, Any]:
    """Throughput with `count` rows offered at `rate`; then lag with `probe` rows at a
    steady `probe_rate` (what a verification service's traffic looks like)."""
    env.truncate()
    env.sim_url = env.sim_url or "http://127.0.0.1:9"  # never called: nothing is sent here
    worker = env.start_worker(
        pool="threads", concurrency=2, queues="maintenance", sms_replication_seconds=1
    )
    beat = env.start_beat(sms_replication_seconds=1)
    started = _insert_paced(env, count, batch, rate, 0)
    offered_seconds = time.perf_counter() - started
    finished = _wait_replicated(env, count)
    burst_p50, burst_p99, _ = _lag(0)
    _insert_paced(env, probe, max(1, int(probe_rate / 10)), probe_rate, count)
    _wait_replicated(env, count + probe)
    p50, p99, worst = _lag(count)
    env.stop(beat)
    env.stop(worker)
    env.drop_queue("urgent")
    seconds = finished - started
    result = {
        "verifications": count,
        "batch": batch,
        "offered_per_second": round(count / offered_seconds, 1),
        "seconds": round(seconds, 3),
        "per_second": round(count / seconds, 1),
        "burst_lag_p50_ms": round(burst_p50, 1),
        "burst_lag_p99_ms": round(burst_p99, 1),
        "probe_rows": probe,
        "probe_per_second": probe_rate,
        "lag_p50_ms": round(p50, 1),
        "lag_p99_ms": round(p99, 1),
        "lag_max_ms": round(worst, 1),
    }
    log(
        f"replication: {result['per_second']:.0f} rows/s (offered "
        f"{result['offered_per_second']:.0f}/s; lag p99 in that burst {burst_p99:.0f} ms); "
        f"at a steady {probe_rate:g}/s: lag p50 {p50:.0f} ms, p99 {p99:.0f} ms"
    )
    return result

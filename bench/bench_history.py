"""Scaling with history: the status sweep and the report with a small vs a large sms_log.

The same live data in both phases: `pending` moving messages due for a check and
`recent` final ones inserted in the last 24 h (the report's window). History is final
(Delivered) rows inserted 2-60 days ago, loaded with COPY: `small`, then grown to
`large`, each followed by VACUUM ANALYZE (a table in service has statistics). Each phase
times `sweep_statuses()` (Terminated + claim + fan-out to the broker; the pending rows
are made due again before each repetition) and `build_report(since=24h)`; the median of
`reps` runs is kept. No worker runs: the published chunks are dropped from our Redis db.

    python -m bench history --large 1000000
"""

from __future__ import annotations

import datetime as dt
import io
import statistics
import time
import uuid
from typing import Any

from bench.common import BenchEnv, default_account_id, insert_rows, log, message_row

_COLUMNS = (
    "id, phone_number, type, body, gateway_id, gateway_status, status_changed_at, "
    "updated_at, inserted_at, account_id, priority, due_at, attempts, send_status, "
    "submitted_at, flash, segments, encoding, status_checks, final_at"
)


def copy_history(env: BenchEnv, count: int, account_id: int, start_index: int) -> float:
    """COPY `count` final rows inserted 2-60 days ago; returns rows/s."""
    import psycopg

    now = dt.datetime.now(dt.UTC)
    dsn = env.pg_url.replace("postgresql+psycopg://", "postgresql://")
    started = time.perf_counter()
    with psycopg.connect(dsn) as conn, conn.cursor() as cur:
        with cur.copy(f"COPY verification.sms_log ({_COLUMNS}) FROM STDIN") as copy:
            buf = io.StringIO()
            for n in range(count):
                i = start_index + n
                at = now - dt.timedelta(days=2, seconds=(i * 4.97) % (58 * 86400))
                ts = at.isoformat()
                done = (at + dt.timedelta(seconds=7)).isoformat()
                buf.write(
                    f"{uuid.uuid4()}\t+38093{i % 10_000_000:07d}\ttext\tHistory message {i}\t"
                    f"{10**15 + i}\tDelivered\t{done}\t{done}\t{ts}\t{account_id}\t0\t{ts}\t1\t"
                    f"SUBMITTED\t{ts}\tf\t1\tGSM-7\t1\t{done}\n"
                )
                if n % 20000 == 19999:
                    copy.write(buf.getvalue())
                    buf = io.StringIO()
            copy.write(buf.getvalue())
        conn.commit()
    return count / (time.perf_counter() - started)


def _measure(env: BenchEnv, pending_ids: list[uuid.UUID], reps: int) -> dict[str, float]:
    from sqlalchemy import update

    from sms_pipeline.db import get_engine
    from sms_pipeline.db.models import SmsLog, utcnow
    from sms_pipeline.metrics.report import build_report
    from sms_pipeline.services.status import sweep_statuses

    engine = get_engine()
    sweeps: list[float] = []
    reports: list[float] = []
    claimed = 0
    for _ in range(reps + 1):  # the first run warms caches and is not counted
        with engine.begin() as conn:
            conn.execute(
                update(SmsLog)
                .where(SmsLog.id.in_(pending_ids))
                .values(next_check_at=utcnow() - dt.timedelta(seconds=1), status_checks=0)
            )
        t0 = time.perf_counter()
        result = sweep_statuses()
        t1 = time.perf_counter()
        build_report(engine, since=dt.timedelta(hours=24))
        t2 = time.perf_counter()
        claimed = result.claimed
        sweeps.append(t1 - t0)
        reports.append(t2 - t1)
        env.drop_queue("status")
    return {
        "sweep_ms": round(statistics.median(sweeps[1:]) * 1000, 1),
        "report_ms": round(statistics.median(reports[1:]) * 1000, 1),
        "claimed_per_sweep": claimed,
    }


def run(
    env: BenchEnv, *, small: int, large: int, pending: int, recent: int, reps: int
) -> dict[str, Any]:
    env.truncate()
    from sms_pipeline.db.models import utcnow

    account_id = default_account_id()
    now = utcnow()
    live = [
        message_row(
            i,
            account_id,
            now - dt.timedelta(minutes=5),
            send_status="SUBMITTED",
            gateway_id=str(9 * 10**15 + i),
            gateway_status="Accepted",
            status_changed_at=now,
            submitted_at=now,
            next_check_at=now,
        )
        for i in range(pending)
    ]
    for i in range(recent):
        at = now - dt.timedelta(seconds=(i * 17.3) % 86000)
        live.append(
            message_row(
                pending + i,
                account_id,
                at,
                send_status="SUBMITTED",
                gateway_id=str(8 * 10**15 + i),
                gateway_status="Delivered",
                status_changed_at=at + dt.timedelta(seconds=5),
                submitted_at=at,
                final_at=at + dt.timedelta(seconds=5),
            )
        )
    insert_rows(live)
    pending_ids = [r["id"] for r in live[:pending]]

    copy_small = copy_history(env, small, account_id, 0)
    env.vacuum_analyze()
    at_small = _measure(env, pending_ids, reps)
    log(f"history {small:,}: sweep {at_small['sweep_ms']} ms, report {at_small['report_ms']} ms")

    copy_rate = copy_history(env, large - small, account_id, small)
    env.vacuum_analyze()
    at_large = _measure(env, pending_ids, reps)
    log(f"history {large:,}: sweep {at_large['sweep_ms']} ms, report {at_large['report_ms']} ms")

    result = {
        "pending": pending,
        "recent_in_report_window": recent,
        "small_history": small,
        "large_history": large,
        "small": at_small,
        "large": at_large,
        "sweep_ratio": round(at_large["sweep_ms"] / at_small["sweep_ms"], 3),
        "report_ratio": round(at_large["report_ms"] / at_small["report_ms"], 3),
        "copy_rows_per_second": round(max(copy_small, copy_rate), 0),
    }
    log(
        f"history scaling: sweep × {result['sweep_ratio']:.2f}, report × "
        f"{result['report_ratio']:.2f} ({small:,} → {large:,} rows)"
    )
    return result

"""Scaling with history: the status sweep and the report with a small vs a large sms_log.

The same live data in both phases: `pending` moving messages due for a check and
`recent` final ones inserted in the last 24 h (the report's window). History is final
(Delivered) rows inserted 2-60 days ago, loaded with COPY: `small` rows in the bench's
database, `large` in a second one, each followed by VACUUM ANALYZE (a table in service
has statistics). Rounds alternate between the two databases, each timing
`sweep_statuses()` (Terminated + claim + fan-out to the broker; the pending rows are made
due again first) and `build_report(since=24h)`; the median of `reps` rounds is kept. No
worker runs: the published chunks are dropped from our Redis db.

    python -m bench history --large 1000000
"""

from __future__ import annotations

import datetime as dt
import statistics
import time
import uuid
from typing import Any

from bench.common import (
    BenchEnv,
    copy_delivered_rows,
    default_account_id,
    insert_rows,
    log,
    message_row,
)


def copy_history(env: BenchEnv, count: int, account_id: int, start_index: int) -> float:
    """COPY `count` final rows inserted 2-60 days ago; returns rows/s."""
    return copy_delivered_rows(
        env,
        count,
        account_id,
        age_days=2,
        spread_days=58,
        step_seconds=4.97,
        start_index=start_index,
    )


def _measure_once(env: BenchEnv, pending_ids: list[uuid.UUID]) -> tuple[float, float]:
    """One sweep and one report on the database in use; their seconds."""
    from sqlalchemy import update

    from sms_pipeline.db import get_engine
    from sms_pipeline.db.models import SmsLog, utcnow
    from sms_pipeline.metrics.report import build_report
    from sms_pipeline.services.status import sweep_statuses

    engine = get_engine()
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
    env.drop_queue("status")
    assert result.claimed == len(pending_ids), result
    return t1 - t0, t2 - t1


def _live_rows(pending: int, recent: int, account_id: int) -> list[dict[str, Any]]:
    """`pending` moving messages due for a check, `recent` final ones in the last 24 h."""
    from sms_pipeline.db.models import utcnow

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
    return live


def _load(env: BenchEnv, live: list[dict[str, Any]], history: int) -> float:
    """The live rows and `history` final rows into the database in use; COPY rows/s."""
    account_id = default_account_id()
    insert_rows([{**row, "account_id": account_id} for row in live])
    rate = copy_history(env, history, account_id, 0)
    env.vacuum_analyze()
    return rate


def run(
    env: BenchEnv, *, small: int, large: int, pending: int, recent: int, reps: int
) -> dict[str, Any]:
    env.truncate()
    live = _live_rows(pending, recent, default_account_id())
    pending_ids = [r["id"] for r in live[:pending]]
    copy_small = _load(env, live, small)
    with env.second_database("large") as large_url:
        with env.using_database(large_url):
            copy_rate = _load(env, live, large)
        # Interleaved (small, large, small, ...): the machine's speed drifts by a third
        # over minutes here, and timing the two phases minutes apart measured that drift.
        times: dict[str, list[tuple[float, float]]] = {"small": [], "large": []}
        for rep in range(reps + 1):  # the first round warms caches and is not counted
            times["small"].append(_measure_once(env, pending_ids))
            with env.using_database(large_url):
                times["large"].append(_measure_once(env, pending_ids))
            if rep == 0:
                times = {"small": [], "large": []}

    def medians(pairs: list[tuple[float, float]]) -> dict[str, float]:
        return {
            "sweep_ms": round(statistics.median(p[0] for p in pairs) * 1000, 1),
            "report_ms": round(statistics.median(p[1] for p in pairs) * 1000, 1),
            "claimed_per_sweep": pending,
        }

    at_small, at_large = medians(times["small"]), medians(times["large"])
    log(f"history {small:,}: sweep {at_small['sweep_ms']} ms, report {at_small['report_ms']} ms")
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
        "interleaved_rounds": reps,
    }
    log(
        f"history scaling: sweep × {result['sweep_ratio']:.2f}, report × "
        f"{result['report_ratio']:.2f} ({small:,} → {large:,} rows)"
    )
    return result

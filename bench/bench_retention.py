"""Retention purge of a large history, and send throughput while it runs (docs/privacy.md).

`rows` final messages inserted 100-130 days ago are loaded with COPY (past the default
90-day retention), then VACUUM ANALYZE. Two send phases of `send` messages each go through
a real `sms-pipeline worker` subprocess and the simulator (0 ms), as bench_send does:
1. without a purge (the reference);
2. with `purge_expired_rows` deleting the whole history in this process at the same time,
   one batch per transaction (SMS_RETENTION_BATCH_SIZE), each batch timed.
Reported: purge rows/s, batch p50/p99/max, send msg/s in each phase and their ratio.

    python -m bench.bench_retention --rows 1000000 --send 5000
"""

from __future__ import annotations

import argparse
import threading
import time
from typing import Any

from bench.common import (
    BenchEnv,
    copy_delivered_rows,
    count_where,
    default_account_id,
    insert_rows,
    log,
    message_row,
    percentile,
    publish_sends,
    save_results,
    wait_until,
)

DONE_SQL = (
    "SELECT count(*) FROM verification.sms_log WHERE send_status = 'SUBMITTED' "
    "AND inserted_at > now() - interval '1 day'"
)


def copy_old_history(env: BenchEnv, count: int, account_id: int) -> float:
    """COPY `count` final rows inserted 100-130 days ago; returns rows/s."""
    return copy_delivered_rows(
        env,
        count,
        account_id,
        age_days=100,
        spread_days=30,
        step_seconds=2.59,
        types=("text", "verification"),
    )


def _send_phase(env: BenchEnv, count: int, offset: int, during: Any = None) -> dict[str, Any]:
    from sms_pipeline.db.models import utcnow

    account_id = default_account_id()
    before = count_where(DONE_SQL)
    rows = [message_row(offset + i, account_id, utcnow()) for i in range(count)]
    insert_rows(rows)
    publish_sends(rows)
    worker = env.start_worker(pool="threads", concurrency=16)
    thread = None
    if during is not None:
        thread = threading.Thread(target=during, daemon=True)
        thread.start()
    started = wait_until(lambda: env.queued() < count, 60, "the worker to start")
    finished = wait_until(
        lambda: count_where(DONE_SQL) - before >= count, 120 + count / 10, "sends", 0.05
    )
    env.stop(worker)
    seconds = finished - started
    return {
        "messages": count,
        "seconds": round(seconds, 2),
        "per_second": round(count / seconds, 1),
    }


def run(env: BenchEnv, *, rows: int, send: int, batch: int) -> dict[str, Any]:
    env.truncate()
    from sms_pipeline.services.privacy import purge_expired_rows

    simulator = env.start_simulator(0.0)
    account_id = default_account_id()
    copy_rate = copy_old_history(env, rows, account_id)
    env.vacuum_analyze()
    log(f"retention: {rows:,} old final rows loaded ({copy_rate:,.0f} rows/s)")

    reference = _send_phase(env, send, 0)
    log(f"send without purge: {reference['per_second']} msg/s")

    batches: list[float] = []
    purge: dict[str, Any] = {}

    def purge_all() -> None:
        started = time.perf_counter()
        total = 0
        while True:
            t0 = time.perf_counter()
            done = purge_expired_rows(batch_size=batch, max_batches=1).messages
            if not done:
                break
            batches.append(time.perf_counter() - t0)
            total += done
        purge.update(seconds=time.perf_counter() - started, messages=total)

    during = _send_phase(env, send, send, during=purge_all)
    wait_until(lambda: "seconds" in purge, 3600, "the purge", 0.2)
    env.stop(simulator)
    left = count_where(
        "SELECT count(*) FROM verification.sms_log WHERE inserted_at < now() - interval '90 days'"
    )
    rolled = count_where("SELECT coalesce(sum(messages), 0) FROM verification.sms_daily_rollup")
    result = {
        "history_rows": rows,
        "batch_size": batch,
        "purged": purge["messages"],
        "left_behind": left,
        "rollup_messages": rolled,
        "purge_seconds": round(purge["seconds"], 1),
        "purge_rows_per_second": round(purge["messages"] / purge["seconds"], 0),
        "batch_ms_p50": round(percentile(batches, 0.5) * 1000, 1),
        "batch_ms_p99": round(percentile(batches, 0.99) * 1000, 1),
        "batch_ms_max": round(max(batches) * 1000, 1) if batches else 0.0,
        "send_without_purge_per_second": reference["per_second"],
        "send_during_purge_per_second": during["per_second"],
        "send_ratio": round(during["per_second"] / reference["per_second"], 3),
        "send_during_purge_seconds": during["seconds"],
    }
    log(
        f"retention: {result['purged']:,} rows in {result['purge_seconds']} s "
        f"({result['purge_rows_per_second']:,.0f} rows/s; batch p50 {result['batch_ms_p50']} ms, "
        f"max {result['batch_ms_max']} ms); send {reference['per_second']} → "
        f"{during['per_second']} msg/s during the purge (× {result['send_ratio']})"
    )
    return result


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.bench_retention", description=__doc__)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--send", type=int, default=5000)
    parser.add_argument("--batch", type=int, default=5000)
    args = parser.parse_args()
    with BenchEnv() as env:
        result = run(env, rows=args.rows, send=args.send, batch=args.batch)
    save_results({"retention": result})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

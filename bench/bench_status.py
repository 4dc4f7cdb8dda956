"""Status checks: N moving messages → every one checked once, by the real beat + worker.

The messages are first submitted to the simulator (a separate process) over raw HTTP, so
each has a gateway id the simulator knows, then written to sms_log as SUBMITTED/Accepted
and due for a check. The simulator runs with --deliver-after 0, so every check gets
Delivered and writes it: each check is the full path (read, gateway call, conditional
write, metrics), never the cheaper "unchanged" answer. Beat runs the status sweep every
second (claim up to SMS_STATUS_BATCH_LIMIT, fan out in chunks of SMS_STATUS_CHUNK_SIZE);
time runs from the first claimed row to the last Delivered one.

    python -m bench status --count 50000 [--profile 10]
"""

from __future__ import annotations

import asyncio
import datetime as dt
import re
import time
from pathlib import Path
from typing import Any

from bench.bench_mix import COMMITS_SQL
from bench.bench_simulator import _Conn
from bench.common import (
    BenchEnv,
    WorkerProfile,
    count_where,
    default_account_id,
    insert_rows,
    log,
    message_row,
    phone,
    wait_until,
)

_ID = re.compile(rb'id="([^"]+)"')


async def _submit_all(base_url: str, count: int, concurrency: int = 32) -> list[str]:
    """Submit `count` messages straight to the simulator; their gateway ids, in order."""
    from sms_pipeline.gateway.codec import build_send_xml

    host, port = base_url.removeprefix("http://").rsplit(":", 1)
    ids: list[str] = [""] * count
    next_index = 0
    tag = f"{time.monotonic_ns():x}"

    async def worker() -> None:
        nonlocal next_index
        conn = _Conn(host, int(port))
        try:
            while next_index < count:
                i = next_index
                next_index += 1
                payload = build_send_xml(
                    phone(i), f"bench {i}", source="BENCH", uniq_key=f"{tag}-{i}"
                )
                status, answer = await conn.post("/ip2sms/", payload)
                match = _ID.search(answer)
                if status != 200 or match is None:
                    raise RuntimeError(f"simulator refused a submission: {status}")
                ids[i] = match.group(1).decode()
        finally:
            conn.close()

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return ids


def run(
    env: BenchEnv,
    *,
    count: int,
    pool: str,
    concurrency: int,
    baseline: dict[str, Any],
    send_rate: float | None = None,
    profile_seconds: float = 0.0,
    profile_out: Path | None = None,
) -> dict[str, Any]:
    env.truncate()
    simulator = env.start_simulator(0.0)

    t0 = time.perf_counter()
    gateway_ids = asyncio.run(_submit_all(env.sim_url, count))
    preload_seconds = time.perf_counter() - t0
    from sms_pipeline.db.models import utcnow

    account_id = default_account_id()
    now = utcnow()
    due = now - dt.timedelta(seconds=1)
    rows = [
        message_row(
            i,
            account_id,
            now,
            send_status="SUBMITTED",
            gateway_id=gid,
            gateway_status="Accepted",
            status_changed_at=now,
            submitted_at=now,
            next_check_at=due,
            dispatched_at=now,
        )
        for i, gid in enumerate(gateway_ids)
    ]
    insert_rows(rows)
    env.vacuum_analyze()

    profile = WorkerProfile(profile_seconds, profile_out)
    worker = env.start_worker(
        pool=pool, concurrency=concurrency, sms_status_poll_seconds=1, **profile.env
    )
    cpu0 = worker.cpu_seconds()
    sim_cpu0 = simulator.cpu_seconds()
    commits0 = count_where(COMMITS_SQL)
    beat = env.start_beat(sms_status_poll_seconds=1)
    profile.start()
    started = wait_until(
        lambda: (
            count_where(
                "SELECT count(*) FROM (SELECT 1 FROM verification.sms_log "
                "WHERE status_checks > 0 LIMIT 1) s"
            )
            > 0
        ),
        60,
        "the first status sweep",
        0.01,
    )
    finished = wait_until(
        lambda: (
            count_where(
                "SELECT count(*) FROM verification.sms_log WHERE gateway_status = 'Delivered'"
            )
            >= count
        ),
        60 + count / 20,
        "every message checked",
        0.1,
    )
    rss = worker.rss_mib()
    cpu = worker.cpu_seconds() - cpu0
    sim_cpu = simulator.cpu_seconds() - sim_cpu0
    time.sleep(1.1)  # backends report their counts at most once a second
    # Every statement of the worker is its own transaction (the bench's polls add a few).
    commits = count_where(COMMITS_SQL) - commits0
    profile.wait()
    env.stop(beat)
    env.stop(worker)
    env.stop(simulator)
    double_checked = count_where(
        "SELECT count(*) FROM verification.sms_log WHERE status_checks > 1"
    )
    seconds = finished - started
    ours = count / seconds
    result: dict[str, Any] = {
        "messages": count,
        "pool": pool,
        "concurrency": concurrency,
        "seconds": round(seconds, 3),
        "per_second": round(ours, 1),
        "baseline_per_second": baseline["per_second"],
        "ratio": round(ours / baseline["per_second"], 3),
        "send_per_second": send_rate,
        "ratio_to_send": round(ours / send_rate, 2) if send_rate else None,
        "checked_more_than_once": double_checked,
        "preload_submissions_per_second": round(count / preload_seconds, 1),
        "worker_cpu_ms_per_check": round(1000 * cpu / count, 3),
        "simulator_cpu_ms_per_check": round(1000 * sim_cpu / count, 3),
        "commits_per_check": round(commits / count, 3),
        "worker_rss_mib": rss,
    }
    log(
        f"status checks ({pool} c={concurrency}): {ours:.0f} checks/s vs baseline "
        f"{baseline['per_second']:.0f}/s → ratio {result['ratio']:.2f}"
        + (f"; {result['ratio_to_send']:.2f} × the send rate" if send_rate else "")
        + f"; worker CPU {result['worker_cpu_ms_per_check']} ms per check (simulator "
        f"{result['simulator_cpu_ms_per_check']} ms); {result['commits_per_check']} commits/check"
    )
    return result

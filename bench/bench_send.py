"""End to end, as a new user measures it: one producer calling `enqueue_sms` in a loop.

A real `sms-pipeline worker` subprocess (threads) and the simulator (a separate process,
`--latency-ms` per answer) run first; then this process calls `enqueue_sms` `count` times
as fast as it can. Time runs from the first call to the moment the last row holds a
gateway id. The baseline, measured in the same run on the same Redis with the same pool
and concurrency, is raw Celery with its defaults (`bench.raw_celery`): one producer
calling `noop.delay(i)` `count` times, from the first publish to an empty queue.

    python -m bench send --count 10000 [--latency-ms 100] [--workers 2]
"""

from __future__ import annotations

import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

from bench.common import BenchEnv, count_where, log, phone, wait_until

DONE_SQL = "SELECT count(*) FROM verification.sms_log WHERE gateway_id IS NOT NULL"
BODY = "Reminder: your appointment is tomorrow at 10:00. Reply STOP to opt out."


def _profile_done(profiler: subprocess.Popen[bytes] | None, seconds: float) -> None:
    """Let py-spy write its profile (it records for `seconds`), or stop it."""
    if profiler is None:
        return
    try:
        profiler.wait(seconds + 30)
    except subprocess.TimeoutExpired:
        profiler.kill()


def _profile(pid: int, seconds: float, out: Path) -> subprocess.Popen[bytes] | None:
    py_spy = Path(sys.executable).parent / "py-spy"
    if not py_spy.exists():
        log("py-spy not installed (.venv/bin/pip install py-spy): no profile")
        return None
    argv = [str(py_spy), "record", "--pid", str(pid), "--duration", str(int(seconds))]
    argv += ["--rate", "200", "--gil", "--format", "raw", "--nonblocking", "-o", str(out)]
    return subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def raw_baseline(env: BenchEnv, *, count: int, pool: str, concurrency: int) -> dict[str, Any]:
    """Raw Celery defaults: no-op tasks/s from one producer (`noop.delay(i)` in a loop)."""
    env.redis().flushdb()
    argv = [sys.executable, "-m", "celery", "-A", "bench.raw_celery", "worker"]
    argv += [f"--pool={pool}", f"--concurrency={concurrency}", "--loglevel=WARNING"]
    argv += [f"--hostname=raw-{uuid.uuid4().hex[:6]}@%h"]
    worker = env.spawn("raw-celery", argv, env.pipeline_env(concurrency))
    from bench.raw_celery import app, noop

    deadline = time.monotonic() + 60
    while not app.control.ping(timeout=0.5):
        if time.monotonic() > deadline or not worker.alive():
            raise RuntimeError(f"raw worker did not start:\n{worker.log_text()[-2000:]}")
    cpu0 = worker.cpu_seconds()
    started = time.perf_counter()
    for i in range(count):
        noop.delay(i)
    published = time.perf_counter()
    redis = env.redis()
    finished = wait_until(
        lambda: redis.llen("celery") == 0 and redis.hlen("unacked") == 0,
        300,
        "raw no-op tasks",
        0.005,
    )
    cpu = worker.cpu_seconds() - cpu0
    rss = worker.rss_mib()
    env.stop(worker)
    app.pool.force_close_all()
    seconds = finished - started
    result = {
        "pool": pool,
        "concurrency": concurrency,
        "tasks": count,
        "seconds": round(seconds, 3),
        "per_second": round(count / seconds, 1),
        "publish_per_second": round(count / (published - started), 1),
        "worker_rss_mib": rss,
        "worker_cpu_ms_per_task": round(1000 * cpu / count, 3),
    }
    log(
        f"baseline raw Celery {pool} c={concurrency}: {result['per_second']:.0f} tasks/s "
        f"(producer {result['publish_per_second']:.0f}/s, CPU {result['worker_cpu_ms_per_task']}"
        f" ms/task, RSS {rss} MiB)"
    )
    return result


def run(
    env: BenchEnv,
    *,
    count: int,
    latency_ms: float,
    pool: str,
    concurrency: int,
    baseline: dict[str, Any],
    workers: int = 1,
    profile_seconds: float = 0.0,
    profile_out: Path | None = None,
) -> dict[str, Any]:
    env.truncate()
    simulator = env.start_simulator(latency_ms)
    from sms_pipeline.services.intake.enqueue import enqueue_sms

    enqueue_sms(phone(9_999_999), BODY)  # the default account, connections, compiled SQL
    procs = [
        env.start_worker(pool=pool, concurrency=concurrency, name=f"worker{n}")
        for n in range(workers)
    ]
    wait_until(lambda: count_where(DONE_SQL) >= 1, 60, "the warm-up message")
    env.truncate()
    from sms_pipeline.services.intake.enqueue import forget_accounts

    forget_accounts()
    cpu0 = sum(p.cpu_seconds() for p in procs)
    sim_cpu0 = simulator.cpu_seconds()
    profiler = None
    if profile_seconds > 0 and profile_out is not None:
        profiler = _profile(procs[0].pid, profile_seconds, profile_out)
    started = time.perf_counter()
    for i in range(count):
        enqueue_sms(phone(i), BODY)
    produced = time.perf_counter()
    finished = wait_until(
        lambda: count_where(DONE_SQL) >= count, 120 + count / 20, "every message sent", 0.05
    )
    rss = max(p.rss_mib() for p in procs)
    cpu = sum(p.cpu_seconds() for p in procs) - cpu0
    sim_cpu = simulator.cpu_seconds() - sim_cpu0
    _profile_done(profiler, profile_seconds)
    for p in procs:
        env.stop(p)
    env.stop(simulator)
    submitted = count_where(
        "SELECT count(*) FROM verification.sms_log WHERE send_status = 'SUBMITTED'"
    )
    attempts = count_where("SELECT coalesce(sum(attempts), 0) FROM verification.sms_log")
    seconds = finished - started
    ours = count / seconds
    result = {
        "messages": count,
        "submitted": submitted,
        "attempts": attempts,
        "gateway_latency_ms": latency_ms,
        "pool": pool,
        "concurrency": concurrency,
        "workers": workers,
        "seconds": round(seconds, 3),
        "per_second": round(ours, 1),
        "producer_calls_per_second": round(count / (produced - started), 1),
        "baseline_per_second": baseline["per_second"],
        "ratio": round(ours / baseline["per_second"], 3),
        "worker_rss_mib": rss,
        "baseline_worker_rss_mib": baseline["worker_rss_mib"],
        "worker_cpu_ms_per_message": round(1000 * cpu / count, 3),
        "baseline_worker_cpu_ms_per_task": baseline["worker_cpu_ms_per_task"],
        "simulator_cpu_ms_per_message": round(1000 * sim_cpu / count, 3),
    }
    log(
        f"send end to end ({latency_ms:g} ms gateway, {workers} × {pool} c={concurrency}): "
        f"{ours:.0f} SMS/s vs raw Celery {baseline['per_second']:.0f}/s → ratio "
        f"{result['ratio']:.2f} ({submitted}/{count} SUBMITTED, {attempts} attempts; producer "
        f"{result['producer_calls_per_second']:.0f} calls/s; RSS {rss} MiB; CPU/msg worker "
        f"{result['worker_cpu_ms_per_message']} ms (raw no-op "
        f"{result['baseline_worker_cpu_ms_per_task']}), simulator "
        f"{result['simulator_cpu_ms_per_message']} ms)"
    )
    return result

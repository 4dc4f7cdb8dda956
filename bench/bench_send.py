"""Send throughput: N queued messages → all SUBMITTED, against no-op tasks on the same worker.

The rows are bulk-inserted as enqueue_sms writes them and their send tasks published
with the outbox's own `publish()` (timed separately: `enqueue_*`), all before the worker
starts; then a real `sms-pipeline worker` subprocess drains them through the simulator
(a separate process). Time runs from the first task taken off the broker to the last
row SUBMITTED. The baseline does the same with no-op tasks through `bench.noop_worker`.

    python -m bench send --count 10000 --latency-ms 100 --concurrency 100
"""

from __future__ import annotations

import subprocess
import time
from pathlib import Path
from typing import Any

from bench.common import (
    BenchEnv,
    count_where,
    default_account_id,
    insert_rows,
    log,
    message_row,
    publish_sends,
    wait_until,
)

DONE_SQL = "SELECT count(*) FROM verification.sms_log WHERE send_status NOT IN ('QUEUED','SENDING')"


def _profile(pid: int, seconds: float, out: Path) -> subprocess.Popen[bytes] | None:
    py_spy = Path(__file__).resolve().parents[1] / ".venv" / "bin" / "py-spy"
    if not py_spy.exists():
        log("py-spy not installed (.venv/bin/pip install py-spy): no profile")
        return None
    time.sleep(2.0)  # past the worker's first tasks (engine creation, imports)
    argv = [str(py_spy), "record", "--pid", str(pid), "--duration", str(int(seconds))]
    argv += ["--rate", "200", "--gil", "--format", "raw", "--nonblocking", "-o", str(out)]
    return subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def run(
    env: BenchEnv,
    *,
    count: int,
    latency_ms: float,
    pool: str,
    concurrency: int,
    profile_seconds: float = 0.0,
    profile_out: Path | None = None,
) -> dict[str, Any]:
    env.truncate()
    simulator = env.start_simulator(latency_ms)
    baseline = env.baseline(pool, concurrency, count)
    env.truncate()

    account_id = default_account_id()
    from sms_pipeline.db.models import utcnow

    rows = [message_row(i, account_id, utcnow()) for i in range(count)]
    t0 = time.perf_counter()
    insert_rows(rows)
    t1 = time.perf_counter()
    publish_sends(rows)
    t2 = time.perf_counter()

    worker = env.start_worker(pool=pool, concurrency=concurrency)
    cpu0, sim_cpu0 = worker.cpu_seconds(), simulator.cpu_seconds()
    started = wait_until(lambda: env.queued() < count, 60, "the worker to start")
    profiler = None
    if profile_seconds > 0 and profile_out is not None:
        profiler = _profile(worker.pid, profile_seconds, profile_out)
    finished = wait_until(
        lambda: count_where(DONE_SQL) >= count, 60 + count / 20, "every message sent", 0.05
    )
    rss = worker.rss_mib()
    cpu, sim_cpu = worker.cpu_seconds() - cpu0, simulator.cpu_seconds() - sim_cpu0
    if profiler is not None:
        try:
            profiler.wait(profile_seconds + 30)
        except subprocess.TimeoutExpired:
            profiler.kill()
    env.stop(worker)
    env.stop(simulator)
    submitted = count_where(
        "SELECT count(*) FROM verification.sms_log WHERE send_status = 'SUBMITTED'"
    )
    seconds = finished - started
    ours = count / seconds
    result = {
        "messages": count,
        "submitted": submitted,
        "gateway_latency_ms": latency_ms,
        "pool": pool,
        "concurrency": concurrency,
        "seconds": round(seconds, 3),
        "per_second": round(ours, 1),
        "baseline_per_second": baseline["per_second"],
        "ratio": round(ours / baseline["per_second"], 3),
        "enqueue_insert_rows_per_second": round(count / (t1 - t0), 1),
        "enqueue_publish_per_second": round(count / (t2 - t1), 1),
        "worker_rss_mib": rss,
        "baseline_worker_rss_mib": baseline["worker_rss_mib"],
        # CPU per message: the worker process (all threads) and the simulator process.
        "worker_cpu_ms_per_message": round(1000 * cpu / count, 3),
        "baseline_worker_cpu_ms_per_task": baseline["worker_cpu_ms_per_task"],
        "simulator_cpu_ms_per_message": round(1000 * sim_cpu / count, 3),
    }
    log(
        f"send ({latency_ms:g} ms gateway, {pool} c={concurrency}): {ours:.0f} msg/s vs "
        f"baseline {baseline['per_second']:.0f}/s → ratio {result['ratio']:.2f} "
        f"({submitted}/{count} SUBMITTED; insert {result['enqueue_insert_rows_per_second']:.0f}"
        f" rows/s, publish {result['enqueue_publish_per_second']:.0f}/s; RSS {rss} MiB; CPU/msg "
        f"worker {result['worker_cpu_ms_per_message']} ms (no-op "
        f"{result['baseline_worker_cpu_ms_per_task']}), simulator "
        f"{result['simulator_cpu_ms_per_message']} ms)"
    )
    return result

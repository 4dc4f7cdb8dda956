"""End to end on the production mix, and with a slow minority of gateway requests.

**Mix** (`python -m bench mix [--count N] [--latency-ms L]`): one producer (this process)
calls `enqueue_sms` in a loop over the production mix (half one-time codes, verification
and 2FA; the rest texts and prescription notices; every number its own) while a worker
(threads ×16) sends them to the simulator answering after L ms; time runs from the first
call to the moment the last row holds a gateway id. Printed as a ratio to raw Celery's
no-op rate measured in the same run.

**Slow minority** (`python -m bench slow`): the same producer sends texts, and 40 codes
spread over the run; 1 % of the texts and 2 of the codes go to numbers the simulator
(`bench.slow_simulator`) holds past the read timeout on their first attempt (12 s against
IP2SMS_READ_TIMEOUT=10), everything else is answered after 20 ms. The same workload runs
once against a clean simulator. Printed: the healthy texts' rate against the clean run's,
and the healthy codes' enqueue → submission p99 (target ≤ 2 s): how far a slow minority
holds up the healthy messages behind it.
"""

from __future__ import annotations

import sys
import time
import uuid
from pathlib import Path
from typing import Any

from bench.bench_soak import MIX
from bench.common import (
    BenchEnv,
    WorkerProfile,
    count_where,
    load_average,
    log,
    percentile,
    phone,
    wait_until,
)

DONE_SQL = "SELECT count(*) FROM verification.sms_log WHERE gateway_id IS NOT NULL"
# Transactions committed in the bench's database (producer and worker, read-only ones
# included): each writing one waits for a WAL flush, which sets the producer's pace.
COMMITS_SQL = "SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()"


def commit_ms(rounds: int = 50) -> float:
    """p50 of a one-row INSERT committed alone in the bench database: the WAL flush every
    `enqueue_sms` call waits for (on a busy disk it sets the producer's pace)."""
    from sqlalchemy import text

    from sms_pipeline.db import get_engine

    times = []
    with get_engine().connect() as conn:
        conn.execute(text("CREATE TABLE IF NOT EXISTS bench_commit_probe (i int)"))
        conn.commit()
        for i in range(rounds):
            t0 = time.perf_counter()
            conn.execute(text("INSERT INTO bench_commit_probe VALUES (:i)"), {"i": i})
            conn.commit()
            times.append(time.perf_counter() - t0)
        conn.execute(text("DROP TABLE bench_commit_probe"))
        conn.commit()
    return round(1000 * percentile(times, 0.5), 2)


def _number(i: int, slow: bool, base: int = 0) -> str:
    """A number whose last two digits are 06 (held by the slow simulator) or 07."""
    return phone(base + i * 100 + (6 if slow else 7))


def run_mix(
    env: BenchEnv,
    *,
    count: int,
    latency_ms: float,
    concurrency: int,
    baseline: dict[str, Any],
    profile_seconds: float = 0.0,
    profile_out: Path | None = None,
) -> dict[str, Any]:
    env.truncate()
    env.start_simulator(latency_ms)
    from sms_pipeline.services.intake.enqueue import enqueue_sms, forget_accounts

    enqueue_sms(phone(9_999_999), MIX[1][1])  # the default account, connections, SQL
    profile = WorkerProfile(profile_seconds, profile_out)
    worker = env.start_worker(pool="threads", concurrency=concurrency, **profile.env)
    wait_until(lambda: count_where(DONE_SQL) >= 1, 60, "the warm-up message")
    env.truncate()
    forget_accounts()
    profile.start()
    commit_p50 = commit_ms()
    commits0 = count_where(COMMITS_SQL)
    cpu0 = worker.cpu_seconds()
    producer_cpu0 = time.process_time()
    started = time.perf_counter()
    for i in range(count):
        message_type, body = MIX[i % len(MIX)]
        enqueue_sms(phone(i), body, message_type)
    produced = time.perf_counter()
    producer_cpu = time.process_time() - producer_cpu0
    finished = wait_until(
        lambda: count_where(DONE_SQL) >= count, 120 + count / 20, "every message sent", 0.05
    )
    cpu = worker.cpu_seconds() - cpu0
    rss = worker.rss_mib()
    profile.wait()
    env.stop(worker)
    time.sleep(1.1)  # backends report their counts at most once a second
    commits = count_where(COMMITS_SQL) - commits0
    seconds = finished - started
    result = {
        "messages": count,
        "gateway_latency_ms": latency_ms,
        "concurrency": concurrency,
        "seconds": round(seconds, 3),
        "per_second": round(count / seconds, 1),
        "producer_calls_per_second": round(count / (produced - started), 1),
        "baseline_per_second": baseline["per_second"],
        "ratio": round(count / seconds / baseline["per_second"], 3),
        "worker_cpu_ms_per_message": round(1000 * cpu / count, 3),
        "producer_cpu_ms_per_call": round(1000 * producer_cpu / count, 3),
        "commits_per_message": round(commits / count, 2),
        "commit_ms_p50": commit_p50,
        "worker_rss_mib": rss,
        "load_average": load_average(),
    }
    log(
        f"production mix end to end ({latency_ms:g} ms gateway): {result['per_second']:.0f} "
        f"SMS/s vs raw Celery {baseline['per_second']:.0f}/s → ratio {result['ratio']:.2f} "
        f"(producer {result['producer_calls_per_second']:.0f} calls/s, "
        f"{result['producer_cpu_ms_per_call']} ms CPU/call; worker CPU "
        f"{result['worker_cpu_ms_per_message']} ms/msg; {result['commits_per_message']} "
        f"commits/msg; a commit {commit_p50} ms; load {result['load_average'][0]})"
    )
    return result


def _start_slow_simulator(env: BenchEnv, latency_ms: float) -> Any:
    import os

    import requests

    from sms_pipeline.settings import reset_settings_cache
    from tests.support import free_port

    port = free_port()
    argv = [sys.executable, "-m", "bench.slow_simulator", "--port", str(port)]
    argv += ["--latency-ms", str(latency_ms)]
    proc = env.spawn(f"slow-simulator-{port}", argv, dict(os.environ, **env.base_env()))
    env.sim_url = f"http://127.0.0.1:{port}"

    def up() -> bool:
        try:
            return requests.get(f"{env.sim_url}/_sim/stats", timeout=1).ok
        except requests.RequestException:
            if not proc.alive():
                raise RuntimeError(f"slow simulator:\n{proc.log_text()[-2000:]}") from None
            return False

    wait_until(up, 30, "the slow simulator", 0.1)
    os.environ["IP2SMS_SEND_URL"] = f"{env.sim_url}/ip2sms/"
    os.environ["IP2SMS_STATUS_URL"] = f"{env.sim_url}/ip2sms-request/"
    reset_settings_cache()
    return proc


def _slow_once(
    env: BenchEnv, *, texts: int, codes: int, slow: bool, concurrency: int, latency_ms: float
) -> dict[str, Any]:
    env.truncate()
    simulator = _start_slow_simulator(env, latency_ms) if slow else env.start_simulator(latency_ms)
    from sms_pipeline.services.intake.enqueue import enqueue_sms, forget_accounts

    worker = env.start_worker(pool="threads", concurrency=concurrency)
    forget_accounts()
    hung_texts = {i for i in range(texts) if slow and i % 100 == 50}
    hung_codes = {codes // 4, codes // 2} if slow else set()
    every = max(1, texts // codes)
    healthy_codes: list[uuid.UUID] = []
    started = time.perf_counter()
    code = 0
    for i in range(texts):
        enqueue_sms(_number(i, i in hung_texts), MIX[1][1], "text")
        if i % every == 0 and code < codes:
            number = _number(code, code in hung_codes, base=5_000_000)
            message_id = enqueue_sms(number, MIX[0][1], "verification")
            if code not in hung_codes:
                healthy_codes.append(message_id)
            code += 1
    healthy = texts - len(hung_texts)
    ids = ", ".join(f"'{i}'" for i in healthy_codes)
    healthy_sql = (
        "SELECT count(*) FROM verification.sms_log WHERE gateway_id IS NOT NULL "
        "AND type = 'text' AND phone_number NOT LIKE '%06'"
    )
    finished = wait_until(
        lambda: count_where(healthy_sql) >= healthy, 300, "every healthy text sent", 0.05
    )
    wait_until(
        lambda: (
            count_where(
                f"SELECT count(*) FROM verification.sms_log WHERE id IN ({ids}) "
                "AND submitted_at IS NOT NULL"
            )
            >= len(healthy_codes)
        ),
        120,
        "every healthy code sent",
        0.05,
    )
    from sqlalchemy import text

    from sms_pipeline.db import get_engine

    with get_engine().connect() as conn:
        waits = [
            float(w)
            for (w,) in conn.execute(
                text(
                    "SELECT extract(epoch FROM submitted_at - inserted_at) FROM "
                    f"verification.sms_log WHERE id IN ({ids})"
                )
            )
        ]
    env.stop(worker)
    env.stop(simulator)
    env.sim_url = ""
    return {
        "texts": texts,
        "hung_texts": len(hung_texts),
        "codes": codes,
        "hung_codes": len(hung_codes),
        "healthy_texts_per_second": round(healthy / (finished - started), 1),
        "healthy_codes_p50_s": round(percentile(waits, 0.5), 3),
        "healthy_codes_p99_s": round(percentile(waits, 0.99), 3),
        "healthy_codes_max_s": round(max(waits), 3),
    }


def run_slow(
    env: BenchEnv,
    *,
    texts: int,
    concurrency: int,
    baseline: dict[str, Any] | None,
    latency_ms: float = 20.0,
) -> dict[str, Any]:
    clean = _slow_once(
        env, texts=texts, codes=40, slow=False, concurrency=concurrency, latency_ms=latency_ms
    )
    slow = _slow_once(
        env, texts=texts, codes=40, slow=True, concurrency=concurrency, latency_ms=latency_ms
    )
    result: dict[str, Any] = {
        "clean": clean,
        "slow": slow,
        "healthy_rate_ratio": round(
            slow["healthy_texts_per_second"] / clean["healthy_texts_per_second"], 3
        ),
    }
    if baseline is not None:
        result["baseline_per_second"] = baseline["per_second"]
        result["ratio"] = round(slow["healthy_texts_per_second"] / baseline["per_second"], 3)
    log(
        f"slow minority (1 % of {texts} texts and 2 of 40 codes hung once past the read "
        f"timeout): healthy texts {slow['healthy_texts_per_second']:.0f}/s vs clean "
        f"{clean['healthy_texts_per_second']:.0f}/s = {result['healthy_rate_ratio']:.2f}; "
        f"healthy codes enqueue→submission p99 {slow['healthy_codes_p99_s']} s (clean "
        f"{clean['healthy_codes_p99_s']} s)"
        + (f"; healthy texts / raw Celery {result['ratio']}" if baseline is not None else "")
    )
    return result

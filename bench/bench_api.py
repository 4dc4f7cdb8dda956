"""The HTTP API on the production mix: 1 and 8 concurrent keep-alive clients.

`sms-pipeline api` runs as a subprocess exactly as documented (docs/api.md: `sms-pipeline
api --host 127.0.0.1 --port P`, its defaults for workers, loop, HTTP implementation and
access log), with the per-key limits off (SMS_API_KEY_RATE_PER_MINUTE=0: the bench
measures the API, not its 429s). The clients are threads of this process, each holding one
keep-alive connection (`http.client`), posting the production mix: half one-time codes
(verification, 2FA), the rest texts and prescription notices, each to a number of its own.

Printed against the same run's `enqueue_sms` (the call the API wraps, in this process on
the same mix) and raw Celery's no-op rate:

    python -m bench api [--count 2000]
"""

from __future__ import annotations

import http.client
import json
import os
import threading
import time
from pathlib import Path
from typing import Any

from bench.common import BenchEnv, log, percentile, phone
from sms_pipeline.supervise import CLI
from tests.support import free_port

# The production mix: half one-time codes, the rest texts and prescription notices.
MIX = (
    ("verification", "Your verification code is 482913. It expires in 5 minutes."),
    ("text", "Reminder: your appointment is tomorrow at 10:00. Reply STOP to opt out."),
    ("2FA", "Your login code is 731905. Do not share it with anyone."),
    ("medication_request", "Your prescription is ready for collection at the pharmacy."),
)


def mix(i: int) -> tuple[str, str]:
    return MIX[i % len(MIX)]


def _client(port: int) -> http.client.HTTPConnection:
    return http.client.HTTPConnection("127.0.0.1", port, timeout=30)


def _post(conn: http.client.HTTPConnection, key: str, i: int) -> int:
    message_type, body = mix(i)
    payload = json.dumps({"phone_number": phone(i), "body": body, "type": message_type})
    conn.request(
        "POST",
        "/v1/messages",
        body=payload,
        headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"},
    )
    answer = conn.getresponse()
    answer.read()
    return answer.status


def _wait_up(port: int, proc: Any) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            conn = _client(port)
            conn.request("GET", "/openapi.json")
            conn.getresponse().read()
            conn.close()
            return
        except OSError:
            if not proc.alive():
                break
            time.sleep(0.1)
    raise RuntimeError(f"the API did not start:\n{proc.log_text()[-3000:]}")


def single_client(port: int, key: str, count: int, offset: int) -> dict[str, Any]:
    conn = _client(port)
    times: list[float] = []
    errors = 0
    for i in range(count):
        t0 = time.perf_counter()
        status = _post(conn, key, offset + i)
        times.append(time.perf_counter() - t0)
        errors += status != 201
    conn.close()
    return {
        "requests": count,
        "errors": errors,
        "p50_ms": round(percentile(times, 0.5) * 1000, 2),
        "p99_ms": round(percentile(times, 0.99) * 1000, 2),
        "per_second": round(count / sum(times), 1),
    }


def concurrent_clients(
    port: int, key: str, clients: int, seconds: float, offset: int
) -> dict[str, Any]:
    counts = [0] * clients
    errors = [0] * clients
    latencies: list[list[float]] = [[] for _ in range(clients)]
    start = threading.Barrier(clients + 1)
    stop_at = [0.0]

    def run(n: int) -> None:
        conn = _client(port)
        start.wait()
        i = offset + n * 1_000_000
        while time.perf_counter() < stop_at[0]:
            t0 = time.perf_counter()
            try:
                status = _post(conn, key, i)
            except (OSError, http.client.HTTPException):
                status = 0
                conn.close()
                conn = _client(port)
            latencies[n].append(time.perf_counter() - t0)
            counts[n] += 1
            errors[n] += status != 201
            i += 1
        conn.close()

    threads = [threading.Thread(target=run, args=(n,)) for n in range(clients)]
    for thread in threads:
        thread.start()
    stop_at[0] = time.perf_counter() + seconds
    began = time.perf_counter()
    start.wait()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - began
    every = [x for one in latencies for x in one]
    return {
        "clients": clients,
        "requests": sum(counts),
        "errors": sum(errors),
        "seconds": round(elapsed, 2),
        "per_second": round(sum(counts) / elapsed, 1),
        "p50_ms": round(percentile(every, 0.5) * 1000, 2),
        "p99_ms": round(percentile(every, 0.99) * 1000, 2),
    }


def enqueue_mix(count: int, offset: int) -> dict[str, Any]:
    """The call the API wraps, in this process, on the same mix (own transaction)."""
    from sms_pipeline.services.intake.enqueue import enqueue_sms

    times: list[float] = []
    for i in range(count):
        message_type, body = mix(offset + i)
        t0 = time.perf_counter()
        enqueue_sms(phone(offset + i), body, message_type)
        times.append(time.perf_counter() - t0)
    return {
        "p50_ms": round(percentile(times, 0.5) * 1000, 2),
        "p99_ms": round(percentile(times, 0.99) * 1000, 2),
        "per_second": round(count / sum(times), 1),
    }


def run(
    env: BenchEnv,
    *,
    count: int,
    seconds: float,
    baseline: dict[str, Any] | None,
    workers: int | None = None,
    profile_seconds: float = 0.0,
    profile_out: Path | None = None,
) -> dict[str, Any]:
    env.truncate()
    from sms_pipeline.db import session_scope
    from sms_pipeline.services.accounts.api_keys import create_api_key

    with session_scope() as session:
        key = create_api_key(session, f"bench-{os.getpid()}-{time.monotonic_ns()}", None).key
    if not env.sim_url:
        env.start_simulator()
    port = free_port()
    argv = [*CLI, "api", "--host", "127.0.0.1", "--port", str(port)]
    if workers:
        argv += ["--workers", str(workers)]
    overrides = {
        "SMS_API_KEY_RATE_PER_MINUTE": 0,
        "SMS_API_KEY_DAILY_CAP": 0,
    }
    api_env = env.pipeline_env(1, **overrides)
    api_env.pop("SMS_WORKER_CONCURRENCY")  # the API's pool as deployed (its default size)
    proc = env.spawn("api", argv, api_env)
    try:
        _wait_up(port, proc)
        conn = _client(port)
        for i in range(50):  # warm up: connections, compiled statements, the key's cache
            _post(conn, key, 9_000_000 + i)
        conn.close()
        env.vacuum_analyze()  # a production table has statistics
        cpu0 = proc.cpu_seconds()
        one = single_client(port, key, count, 0)
        profiler = None
        if profile_seconds > 0 and profile_out is not None:
            from bench.bench_send import _profile

            profiler = _profile(proc.pid, profile_seconds, profile_out)
        eight = concurrent_clients(port, key, 8, seconds, 2_000_000)
        if profiler is not None:
            from bench.bench_send import _profile_done

            _profile_done(profiler, profile_seconds)
        cpu = proc.cpu_seconds() - cpu0
        rss = proc.rss_mib()
    finally:
        env.stop(proc)
    wrapped = enqueue_mix(count, 20_000_000)
    env.drop_queue("bulk")
    env.drop_queue("urgent")
    served = one["requests"] + eight["requests"]
    result: dict[str, Any] = {
        "workers": workers or 1,
        "single": one,
        "eight": eight,
        "enqueue_sms": wrapped,
        "single_p50_over_enqueue_p50": round(one["p50_ms"] / wrapped["p50_ms"], 2),
        "api_cpu_ms_per_request": round(1000 * cpu / served, 3),
        "api_rss_mib": rss,
    }
    if baseline is not None:
        result["baseline_per_second"] = baseline["per_second"]
        result["ratio"] = round(eight["per_second"] / baseline["per_second"], 2)
    log(
        f"API (production mix, {workers or 1} worker(s)): 1 client p50 {one['p50_ms']} ms / "
        f"p99 {one['p99_ms']} ms ({one['per_second']:.0f} req/s, {one['errors']} errors); "
        f"8 clients {eight['per_second']:.0f} req/s, p99 {eight['p99_ms']} ms, "
        f"{eight['errors']} errors; enqueue_sms p50 {wrapped['p50_ms']} ms (API "
        f"{result['single_p50_over_enqueue_p50']} ×); API CPU "
        f"{result['api_cpu_ms_per_request']} ms/request"
        + (
            f"; 8 clients / raw Celery {result['ratio']} ({baseline['per_second']:.0f} tasks/s)"
            if baseline
            else ""
        )
    )
    return result

"""enqueue_sms latency: with its own transaction, and inside a caller's session.

Runs in this process against the bench database and Redis db (the publish after commit
goes to the broker; no worker consumes it here, the queue is dropped at the end).
"With a caller session" times what the caller sees: open a session, enqueue_sms(...,
session=s), commit (which publishes).

    python -m bench enqueue --count 2000
"""

from __future__ import annotations

import time
from typing import Any

from bench.common import BenchEnv, log, percentile, phone


def run(env: BenchEnv, *, count: int) -> dict[str, Any]:
    env.truncate()
    from sms_pipeline.db import session_scope
    from sms_pipeline.services.intake.enqueue import enqueue_sms

    body = "Reminder: your appointment is tomorrow at 10:00. Reply STOP to opt out."
    for i in range(50):  # warm up: connections, compiled statements, default account
        enqueue_sms(phone(9_000_000 + i), body)
    own: list[float] = []
    for i in range(count):
        t0 = time.perf_counter()
        enqueue_sms(phone(i), body)
        own.append(time.perf_counter() - t0)
    caller: list[float] = []
    for i in range(count):
        t0 = time.perf_counter()
        with session_scope() as session:
            enqueue_sms(phone(count + i), body, session=session)
        caller.append(time.perf_counter() - t0)
    from sms_pipeline.services.intake.enqueue import enqueue_many

    batch = 1000
    many_rows = max(count * 5, batch)
    messages = [{"phone_number": phone(i), "body": body} for i in range(many_rows)]
    t0 = time.perf_counter()
    for start in range(0, many_rows, batch):
        enqueue_many(messages[start : start + batch])
    many_seconds = time.perf_counter() - t0
    env.drop_queue("bulk")

    def figures(values: list[float]) -> dict[str, float]:
        return {
            "p50_ms": round(percentile(values, 0.5) * 1000, 2),
            "p99_ms": round(percentile(values, 0.99) * 1000, 2),
            "per_second": round(len(values) / sum(values), 1),
        }

    result: dict[str, Any] = {
        "calls": count,
        "own_session": figures(own),
        "caller_session": figures(caller),
        "many": {"batch": batch, "rows_per_second": round(many_rows / many_seconds, 1)},
    }
    log(
        f"enqueue_sms: own session p50 {result['own_session']['p50_ms']} ms / p99 "
        f"{result['own_session']['p99_ms']} ms; caller session p50 "
        f"{result['caller_session']['p50_ms']} ms / p99 {result['caller_session']['p99_ms']} ms; "
        f"enqueue_many {result['many']['rows_per_second']:.0f} rows/s"
    )
    return result

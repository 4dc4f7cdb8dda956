"""enqueue_sms latency per message type: with its own transaction, and inside a caller's session.

Runs in this process against the bench database and Redis db (the publish after commit
goes to the broker; no worker consumes it here, the queue is dropped at the end).
Every type is timed the same way (`count` calls each, in its own transaction): text,
medication_request, verification and 2FA. The codes go to a number that already has a
waiting code one call in two (the supersede path ends it), as a patient asking again does.
"With a caller session" times what the caller sees for a text: open a session,
enqueue_sms(..., session=s), commit (which publishes).

    python -m bench enqueue --count 2000
"""

from __future__ import annotations

import time
from typing import Any

from bench.common import BenchEnv, log, percentile, phone

TYPES = ("text", "medication_request", "verification", "2FA")
BODIES = {
    "text": "Reminder: your appointment is tomorrow at 10:00. Reply STOP to opt out.",
    "medication_request": "Your prescription is ready for collection at the pharmacy.",
    "verification": "Your verification code is 482913. It expires in 5 minutes.",
    "2FA": "Your login code is 731 905. Do not share it with anyone.",
}


def figures(values: list[float]) -> dict[str, float]:
    return {
        "p50_ms": round(percentile(values, 0.5) * 1000, 2),
        "p99_ms": round(percentile(values, 0.99) * 1000, 2),
        "per_second": round(len(values) / sum(values), 1),
    }


def time_types(count: int, offset: int = 0) -> dict[str, dict[str, float]]:
    """p50/p99 of `count` enqueue_sms calls per type, interleaved by round (the machine's
    drift spreads over every type alike)."""
    from sms_pipeline.services.intake.enqueue import enqueue_sms

    timings: dict[str, list[float]] = {t: [] for t in TYPES}
    for i in range(count):
        for n, message_type in enumerate(TYPES):
            # Codes: every other call to the number of the previous call (supersede).
            number = phone(offset + n * 1_000_000 + (i // 2 if n >= 2 else i))
            t0 = time.perf_counter()
            enqueue_sms(number, BODIES[message_type], message_type)
            timings[message_type].append(time.perf_counter() - t0)
    return {t: figures(v) for t, v in timings.items()}


def run(env: BenchEnv, *, count: int) -> dict[str, Any]:
    env.truncate()
    from sms_pipeline.db import session_scope
    from sms_pipeline.services.intake.enqueue import enqueue_many, enqueue_sms

    body = BODIES["text"]
    time_types(25, offset=8_000_000)  # warm up: connections, compiled statements, account
    # A production table has statistics: without them the planner finds a code's older
    # codes through the urgent outbox index (every waiting code of the account).
    env.vacuum_analyze()
    by_type = time_types(count)
    caller: list[float] = []
    for i in range(count):
        t0 = time.perf_counter()
        with session_scope() as session:
            enqueue_sms(phone(5_000_000 + i), body, session=session)
        caller.append(time.perf_counter() - t0)

    batch = 1000
    many_rows = max(count * 5, batch)
    messages = [{"phone_number": phone(i), "body": body} for i in range(many_rows)]
    t0 = time.perf_counter()
    for start in range(0, many_rows, batch):
        enqueue_many(messages[start : start + batch])
    many_seconds = time.perf_counter() - t0
    env.drop_queue("bulk")
    env.drop_queue("urgent")

    result: dict[str, Any] = {
        "calls": count,
        "by_type": by_type,
        "own_session": by_type["text"],
        "caller_session": figures(caller),
        "many": {"batch": batch, "rows_per_second": round(many_rows / many_seconds, 1)},
    }
    per_type = "; ".join(
        f"{t} p50 {f['p50_ms']} / p99 {f['p99_ms']} ms" for t, f in by_type.items()
    )
    log(
        f"enqueue_sms own transaction: {per_type}; caller session (text) p50 "
        f"{result['caller_session']['p50_ms']} ms / p99 {result['caller_session']['p99_ms']} ms; "
        f"enqueue_many {result['many']['rows_per_second']:.0f} rows/s"
    )
    return result

"""A soak: the production mix at a steady rate for minutes; does the worker's memory stay flat?

One producer (this process) calls `enqueue_sms` at `rate` messages/s on the production mix
(half one-time codes, the rest texts and prescription notices; every number new) for
`minutes`, against a worker (threads ×16) and beat with their status checks on
(SMS_STATUS_POLL_SECONDS=1), and the simulator answering after `latency_ms` and
delivering every message. Every 10 s the bench samples the RSS of worker and beat, the
backlog (rows not yet final) and the messages enqueued so far.

Bytes of RSS growth per message = the least-squares slope of worker RSS against messages
enqueued, over the samples after warm-up (the first `warmup` fraction of the run, at
least a minute). At the end: every message final, the backlog 0 (or what was left).
The ratio printed is to raw Celery's worker RSS (its no-op worker at rest, measured in the
same run when the baseline ran).

    python -m bench soak --minutes 30 [--rate 40] [--latency-ms 20]
"""

from __future__ import annotations

import time
from typing import Any

from bench.common import REPO, BenchEnv, count_where, log, phone

# The production mix (the API bench posts the same).
MIX = (
    ("verification", "Your verification code is 482913. It expires in 5 minutes."),
    ("text", "Reminder: your appointment is tomorrow at 10:00. Reply STOP to opt out."),
    ("2FA", "Your login code is 731905. Do not share it with anyone."),
    ("medication_request", "Your prescription is ready for collection at the pharmacy."),
)
SAMPLE_SECONDS = 10.0


def slope(xs: list[float], ys: list[float]) -> float | None:
    """Least-squares slope of ys against xs (None for fewer than 3 points)."""
    if len(xs) < 3:
        return None
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    var = sum((x - mx) ** 2 for x in xs)
    if var == 0:
        return None
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / var


def _not_final() -> int:
    return count_where("SELECT count(*) FROM verification.sms_log WHERE final_at IS NULL")


def run(
    env: BenchEnv,
    *,
    minutes: float,
    rate: float,
    latency_ms: float,
    concurrency: int,
    warmup: float = 0.2,
    baseline: dict[str, Any] | None = None,
    trace: bool = False,
) -> dict[str, Any]:
    env.truncate()
    env.start_simulator(latency_ms)
    from sms_pipeline.services.intake.enqueue import enqueue_sms

    # Status checks and the sweeper on, as in production (the bench's default is off).
    traced = REPO / ".sms_pipeline" / "soak-tracemalloc.txt"
    worker = env.start_worker(
        pool="threads", concurrency=concurrency, sms_status_poll_seconds=1,
        sms_outbox_sweep_seconds=5, sms_status_first_check_seconds=1, traced=trace,
        sms_trace_out=traced,
    )  # fmt: skip
    if trace:
        log(f"soak: the worker runs under tracemalloc (growth written to {traced})")
    beat = env.start_beat(
        sms_status_poll_seconds=1, sms_outbox_sweep_seconds=5, sms_status_first_check_seconds=1
    )
    samples: list[dict[str, float]] = []
    seconds = minutes * 60
    started = time.monotonic()
    next_sample = started
    sent = 0
    errors = 0
    interval = 1.0 / rate
    while True:
        now = time.monotonic()
        if now - started >= seconds:
            break
        if now >= next_sample:
            samples.append(
                {
                    "t": round(now - started, 1),
                    "messages": sent,
                    "worker_rss_mib": worker.rss_mib(),
                    "beat_rss_mib": beat.rss_mib(),
                    "not_final": _not_final(),
                }
            )
            next_sample += SAMPLE_SECONDS
            log(
                f"soak t={samples[-1]['t']:.0f}s: {sent} messages, worker RSS "
                f"{samples[-1]['worker_rss_mib']} MiB, beat {samples[-1]['beat_rss_mib']} "
                f"MiB, not final {samples[-1]['not_final']}"
            )
        message_type, body = MIX[sent % len(MIX)]
        try:
            enqueue_sms(phone(sent), body, message_type)
        except Exception as exc:  # counted: a soak reports what failed, it does not stop
            errors += 1
            log(f"soak: enqueue failed: {type(exc).__name__}")
        sent += 1
        # A steady rate: the next call at its slot (a late call does not bunch the next).
        delay = started + sent * interval - time.monotonic()
        if delay > 0:
            time.sleep(delay)
    ended = time.monotonic()
    deadline = ended + 120
    while _not_final() and time.monotonic() < deadline:
        time.sleep(1.0)
    backlog = _not_final()
    final_rss = worker.rss_mib()
    after = [s for s in samples if s["t"] >= max(60.0, warmup * seconds)]
    per_message = slope([s["messages"] for s in after], [s["worker_rss_mib"] for s in after])
    beat_slope = slope([s["messages"] for s in after], [s["beat_rss_mib"] for s in after])
    env.stop(beat)
    env.stop(worker)
    result: dict[str, Any] = {
        "minutes": minutes,
        "rate": rate,
        "gateway_latency_ms": latency_ms,
        "messages": sent,
        "enqueue_errors": errors,
        "offered_per_second": round(sent / (ended - started), 1),
        "backlog_after_2_min": backlog,
        "worker_rss_start_mib": after[0]["worker_rss_mib"] if after else None,
        "worker_rss_end_mib": final_rss,
        "beat_rss_end_mib": samples[-1]["beat_rss_mib"] if samples else None,
        "worker_bytes_per_message": (
            round(per_message * 1024 * 1024, 1) if per_message is not None else None
        ),
        "beat_bytes_per_message": (
            round(beat_slope * 1024 * 1024, 1) if beat_slope is not None else None
        ),
        "samples": samples,
    }
    if baseline is not None:
        result["baseline_worker_rss_mib"] = baseline["worker_rss_mib"]
        result["rss_ratio"] = round(final_rss / baseline["worker_rss_mib"], 2)
    log(
        f"soak {minutes:g} min at {result['offered_per_second']} msg/s ({latency_ms:g} ms "
        f"gateway): {sent} messages, {errors} enqueue errors, backlog {backlog}; worker RSS "
        f"{result['worker_rss_start_mib']} → {final_rss} MiB after warm-up = "
        f"{result['worker_bytes_per_message']} bytes/message; beat "
        f"{result['beat_bytes_per_message']} bytes/message"
        + (
            f"; worker RSS / raw Celery worker {result['rss_ratio']}"
            if baseline is not None
            else ""
        )
    )
    return result

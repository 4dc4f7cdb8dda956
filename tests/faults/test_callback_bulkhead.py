"""Slow callback receivers hold nobody else (issue 27, item 1).

50 callbacks go to tarpit receivers on loopback (25 http, 25 https with a self-signed
certificate) that drip one byte per second. The worker, the callbacks worker and beat run
as `sms-pipeline` subprocesses, as `up` and docker-compose run them. While every callback
thread is held, verification codes are sent and status-checked through to Delivered, and
each receiver is cut off at the callback deadline, TLS included.
"""

from __future__ import annotations

import statistics
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from sms_pipeline import enqueue_sms
from sms_pipeline.db import session_scope
from sms_pipeline.db.models import SmsLog
from sms_pipeline.supervise import CLI
from tests.faults.conftest import phone, pipeline_env, record_figure, wait_until
from tests.loopback_peers import DripServer, OpenConnections, self_signed

HANGING = 50
CODES = 20
DEADLINE = 15  # SMS_CALLBACK_TIMEOUT_SECONDS
CALLBACK_THREADS = 4


def _send_codes(first: int) -> list[uuid.UUID]:
    ids = []
    for i in range(CODES):
        ids.append(enqueue_sms(phone(first + i), f"code {100000 + i}", "verification"))
        time.sleep(0.1)  # codes spread over the run, as producers send them
    return ids


def _delivered(ids: list[uuid.UUID]) -> bool:
    with session_scope() as session:
        statuses = session.scalars(select(SmsLog.gateway_status).where(SmsLog.id.in_(ids)))
        return sum(s == "Delivered" for s in statuses) == len(ids)


def _waits(ids: list[uuid.UUID]) -> list[float]:
    """Enqueue-to-submission seconds of each message."""
    with session_scope() as session:
        rows = session.execute(
            select(SmsLog.inserted_at, SmsLog.submitted_at).where(SmsLog.id.in_(ids))
        ).all()
    return sorted((r.submitted_at - r.inserted_at).total_seconds() for r in rows)


def _p99(values: list[float]) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[98]


@pytest.mark.slow
def test_fifty_hanging_callbacks_hold_no_send_and_no_status_check(
    db: Any, clean_broker: str, start_sim: Any, procs: Any, tmp_path: Path, settings_env: Any
) -> None:
    start_sim(enroute_after=0.2, deliver_after=0.4)
    with self_signed(tmp_path) as (tls, cert):
        both = OpenConnections()
        plain = DripServer(1.0, connections=both)
        secure = DripServer(1.0, tls=tls, connections=both)
        try:
            settings_env(SMS_CALLBACK_ALLOW_PRIVATE="true", SMS_CALLBACK_SECRET="bulkhead")
            env = pipeline_env(
                SSL_CERT_FILE=cert,
                SMS_STATUS_POLL_SECONDS=0.5,
                SMS_STATUS_CHECK_BACKOFF="1",
                SMS_STATUS_FIRST_CHECK_SECONDS=1,
                SMS_CALLBACK_SWEEP_SECONDS=0.5,
                SMS_CALLBACK_TIMEOUT_SECONDS=DEADLINE,
                SMS_CALLBACK_CONCURRENCY=CALLBACK_THREADS,
            )
            worker = procs.worker(env)  # every queue but callbacks (the default)
            callbacks = procs.spawn(
                "callbacks",
                [*CLI, "worker", "--queues=callbacks", "--hostname=callbacks@%h"],
                env,
            )
            procs.beat(env)
            worker.wait_for_log(r"worker@\S+ ready", 60)
            callbacks.wait_for_log(r"callbacks@\S+ ready", 60)

            baseline = _send_codes(0)
            wait_until(lambda: _delivered(baseline), 60, "baseline codes Delivered")

            hooks = [
                enqueue_sms(phone(1000 + i), "hi", callback_url=(plain, secure)[i % 2].url)
                for i in range(HANGING)
            ]
            wait_until(lambda: _delivered(hooks), 60, "the callback messages Delivered")
            wait_until(
                lambda: plain.open_now + secure.open_now >= CALLBACK_THREADS,
                30,
                "every callback thread held by a tarpit",
            )
            held_codes = _send_codes(2000)
            wait_until(lambda: _delivered(held_codes), 60, "codes Delivered while callbacks hang")
            still_hanging = plain.open_now + secure.open_now
            wait_until(lambda: plain.held and secure.held, 3 * DEADLINE, "a receiver cut off")
        finally:
            plain.close()
            secure.close()
    normal, during = _waits(baseline), _waits(held_codes)
    record_figure(
        "callback_bulkhead",
        hanging_callbacks=HANGING,
        callback_threads=CALLBACK_THREADS,
        callbacks_in_tarpits_when_codes_done=still_hanging,
        # Seen by the receivers, which notice a cut-off connection up to a drip later.
        most_receivers_held_at_once=both.most,
        code_submit_p50_normal=round(statistics.median(normal), 3),
        code_submit_p99_normal=round(_p99(normal), 3),
        code_submit_p50_during=round(statistics.median(during), 3),
        code_submit_p99_during=round(_p99(during), 3),
        http_receiver_held_max_s=round(max(plain.held), 1),
        https_receiver_held_max_s=round(max(secure.held), 1),
        deadline_s=DEADLINE,
    )
    # Every code went through send and status checks while the callback threads were held.
    assert still_hanging >= CALLBACK_THREADS
    # Cut at the deadline (plus at most one drip interval to notice), https as http.
    assert max(plain.held) < DEADLINE + 5 and max(secure.held) < DEADLINE + 5

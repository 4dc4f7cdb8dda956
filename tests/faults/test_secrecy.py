"""A full run (worker + beat subprocesses, a mix of messages and faults): no body, code, full
phone number or gateway password in any log line, broker message or task event."""

from __future__ import annotations

import base64
import contextlib
import json
import re
import threading
import time
from typing import Any

import pytest
import redis

from sms_pipeline import enqueue_sms
from sms_pipeline.db import session_scope
from sms_pipeline.db.models import SmsLog
from sms_pipeline.simulator.rules import DEFAULT_RULES
from tests.faults.conftest import (
    GATEWAY_LOGIN,
    GATEWAY_PASSWORD,
    pipeline_env,
    record_figure,
    settle,
    wait_until,
)
from tests.helpers import decode_broker_value, redis_texts

# (number, type, code): normal, transient once, reject, malformed, 429 once.
MIX = [
    ("+380671112233", "verification", "739154"),
    ("+380671112201", "2FA", "552916"),
    ("+380671112204", "text", "884213"),
    ("+380671112207", "medication_request", "613370"),
    ("+380671112209", "verification", "290457"),
    ("+380671112288", "2FA", "471806"),
]

BODY = re.compile(r'body\\?": ?\\?"([A-Za-z0-9+/=]{8,})')


class Monitor:
    """Every command the broker receives (Redis MONITOR), decoded."""

    def __init__(self, url: str) -> None:
        self.client = redis.Redis.from_url(url)
        self.lines: list[str] = []
        self.bodies: list[str] = []
        self.stop = threading.Event()
        self.ready = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()
        self.ready.wait(5)

    def _run(self) -> None:
        with self.client.monitor() as monitor:  # type: ignore[no-untyped-call]  # redis-py
            self.ready.set()
            connection = monitor.connection
            assert connection is not None
            while not self.stop.is_set():
                if not connection.can_read(timeout=0.2):
                    continue
                command = monitor.next_command()["command"]
                self.lines += decode_broker_value(command.encode("utf-8", "surrogateescape"))
                # A published task's body is base64 inside the quoted JSON argument.
                for found in BODY.finditer(command):
                    decoded = base64.b64decode(found.group(1)).decode("utf-8", "replace")
                    self.bodies.append(decoded)
                    self.lines.append(decoded)

    def close(self) -> None:
        self.stop.set()
        self.thread.join(5)


@pytest.mark.slow
def test_no_secret_in_logs_broker_messages_or_task_events(
    db: Any, start_sim: Any, own_redis: Any, use_broker: Any, procs: Any
) -> None:
    start_sim(rules=DEFAULT_RULES)
    app = use_broker(own_redis.url)
    monitor = Monitor(own_redis.url)
    events: list[dict[str, Any]] = []
    receiver_stop = threading.Event()

    def receive() -> None:
        # itercapture ends at its first quiet half second: capture again until told to stop.
        while not receiver_stop.is_set():
            with contextlib.suppress(Exception), app.connection() as conn:
                receiver = app.events.Receiver(conn, handlers={"*": events.append})
                receiver.should_stop = False
                for _ in receiver.itercapture(limit=None, timeout=0.5, wakeup=False):
                    if receiver_stop.is_set():
                        break

    thread = threading.Thread(target=receive, daemon=True)
    thread.start()
    env = pipeline_env(
        SMS_BROKER_URL=own_redis.url,
        SMS_LOG_LEVEL="DEBUG",
        SMS_TASK_EVENTS="true",  # off by default; on here so their content can be checked
        SMS_STATUS_POLL_SECONDS=0.5,
        SMS_STATUS_CHECK_BACKOFF="1",
    )
    try:
        procs.beat(env)
        procs.worker(env)
        ids = [enqueue_sms(number, f"Your code is {code}", kind) for number, kind, code in MIX]
        counts, _ = settle(ids, timeout=90)
        assert sum(counts.values()) == len(ids) and "QUEUED" not in counts, counts

        def polled() -> bool:
            with session_scope() as session:
                rows = [session.get(SmsLog, i) for i in ids]
                return any(r is not None and r.gateway_status == "Delivered" for r in rows)

        wait_until(polled, 60, "a status check to deliver a message")
        time.sleep(1)  # the last events and log lines
        broker_keys = redis_texts(redis.Redis.from_url(own_redis.url))
    finally:
        receiver_stop.set()
        monitor.close()
        thread.join(5)
    logs = procs.logs()
    log_lines = [line for text in logs.values() for line in text.splitlines()]
    event_texts = [json.dumps(e, default=str) for e in events]

    auth = base64.b64encode(f"{GATEWAY_LOGIN}:{GATEWAY_PASSWORD}".encode()).decode()
    secrets = [GATEWAY_PASSWORD, auth, "Your code is"]
    for number, _, code in MIX:
        secrets += [code, number, number[1:]]
    places = {
        "log line": log_lines,
        "broker command": monitor.lines,
        "broker key or value": broker_keys,
        "task event": event_texts,
    }
    # A secret counts where it stands alone: a code inside a longer run of digits is a
    # timestamp's microseconds or part of an id (seen: "1764…622.884213" in a task event).
    patterns = [re.compile(rf"(?<![0-9.]){re.escape(secret)}(?![0-9])") for secret in secrets]
    leaks = [
        (place, pattern.pattern, text[:200])
        for place, texts in places.items()
        for text in texts
        for pattern in patterns
        if pattern.search(text)
    ]
    alone = re.compile(rf"(?<![0-9.]){MIX[2][2]}(?![0-9])")
    assert alone.search(f"Your code is {MIX[2][2]}") and not alone.search(f"1764.{MIX[2][2]}")
    # The capture worked: ids did go through each place.
    assert any(str(ids[0]) in t for t in monitor.bodies)
    assert any(str(ids[0]) in t for t in event_texts), (len(events), event_texts[:3])
    assert any(str(ids[0]) in t for t in log_lines)
    record_figure(
        "secrecy",
        messages=len(ids),
        log_lines=len(log_lines),
        broker_commands=len(monitor.lines),
        task_bodies_decoded=len(monitor.bodies),
        task_events=len(events),
        leaks=len(leaks),
    )
    assert leaks == []

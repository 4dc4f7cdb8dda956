"""Small helpers shared by the integration tests."""

from __future__ import annotations

import base64
import contextlib
import json
import threading
import time
import uuid
from collections.abc import Callable, Collection
from types import TracebackType
from typing import Any

import redis

from sms_pipeline.db import session_scope
from sms_pipeline.db.models import SendStatus, SmsLog

NORMAL = "+380931234567"


def wait_for(
    message_id: uuid.UUID, done: Callable[[SmsLog], bool], timeout: float = 30.0
) -> SmsLog:
    """Poll the message's row until `done(row)` holds; fail with the row after `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        with session_scope() as session:
            row = session.get(SmsLog, message_id)
            if row is not None and done(row):
                return row
        if time.monotonic() > deadline:
            raise AssertionError(f"message {message_id} did not settle: {row!r}")
        time.sleep(0.1)


def is_final(row: SmsLog) -> bool:
    return SendStatus(row.send_status).is_final


class SimClock:
    """A gateway simulator's clock (`SimState.clock`) that a test moves forward: messages
    accepted before `advance(s)` are `s` seconds older, so their statuses and auto-replies
    come without the test sleeping. Real time still runs underneath."""

    def __init__(self) -> None:
        self.offset = 0.0

    def __call__(self) -> float:
        return time.monotonic() + self.offset

    def advance(self, seconds: float) -> None:
        self.offset += seconds


class TaskWatch:
    """Celery tasks published and run in this process while the block is open.

    The test worker runs in this process (tests/conftest.py `worker`), so its threads send
    Celery's signals here: `settled()` holds once every watched task published since the
    block opened (by the test or by a task) has run, countdowns included. It replaces
    sleeping "long enough for anything more to happen" with waiting for exactly that.
    """

    def __init__(self, names: Collection[str]) -> None:
        self.names = set(names)
        self.published: set[str] = set()
        self.finished: set[str] = set()
        self._lock = threading.Lock()

    def _on_publish(self, sender: Any = None, headers: Any = None, **_: Any) -> None:
        if sender in self.names and headers:
            with self._lock:
                self.published.add(headers["id"])

    def _on_finish(self, task_id: Any = None, task: Any = None, **_: Any) -> None:
        if getattr(task, "name", None) in self.names:
            with self._lock:
                self.finished.add(task_id)

    def settled(self) -> bool:
        with self._lock:
            return self.published <= self.finished

    def __enter__(self) -> TaskWatch:
        from celery.signals import after_task_publish, task_postrun

        after_task_publish.connect(self._on_publish, weak=False)
        task_postrun.connect(self._on_finish, weak=False)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        from celery.signals import after_task_publish, task_postrun

        after_task_publish.disconnect(self._on_publish)
        task_postrun.disconnect(self._on_finish)


def decode_broker_value(value: bytes) -> list[str]:
    """A broker value as text, plus kombu's base64 JSON body when it is one."""
    text = value.decode("utf-8", "replace")
    out = [text]
    with contextlib.suppress(ValueError, AttributeError, TypeError):
        envelope = json.loads(text)
        if isinstance(envelope, list) and len(envelope) == 2:  # unacked hash: [message, ...]
            envelope = envelope[0]
        if isinstance(envelope, dict | list):
            out.append(json.dumps(envelope))
        if isinstance(envelope, dict) and isinstance(envelope.get("body"), str):
            out.append(base64.b64decode(envelope["body"]).decode("utf-8", "replace"))
    return out


def redis_texts(client: redis.Redis) -> list[str]:
    """Every key and value in a Redis db, decoded (for secrecy scans)."""
    texts: list[str] = []
    for key in client.scan_iter():
        texts.append(key.decode("utf-8", "replace"))
        kind = client.type(key)
        values: list[bytes] = []
        if kind == b"list":
            values = client.lrange(key, 0, -1)
        elif kind == b"hash":
            values = list(client.hvals(key))
        elif kind == b"string":
            values = [client.get(key) or b""]
        elif kind == b"zset":
            values = [m for m, _ in client.zrange(key, 0, -1, withscores=True)]
        elif kind == b"set":
            values = list(client.smembers(key))
        for value in values:
            texts += decode_broker_value(value)
    return texts

"""Small helpers shared by the integration tests."""

from __future__ import annotations

import base64
import contextlib
import datetime as dt
import json
import subprocess
import threading
import time
import uuid
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import Future
from pathlib import Path
from types import TracebackType
from typing import Any

import pytest
import redis

from sms_pipeline.db import session_scope
from sms_pipeline.db.models import SendStatus, SmsLog
from sms_pipeline.gateway import IP2SMSClient
from sms_pipeline.metrics.catalogue import Kind as MetricKind
from sms_pipeline.metrics.catalogue import MetricSpec
from sms_pipeline.services.sending import AttemptResult, Outcome
from sms_pipeline.settings import Settings
from sms_pipeline.supervise import CLI
from tests.support import wait_until

NORMAL = "+380931234567"


def run_cli(
    args: Sequence[str],
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    *,
    stdin: str | None = None,
    timeout: float = 120,
) -> subprocess.CompletedProcess[str]:
    """`sms-pipeline ARGS` as a subprocess, as an operator runs it (in the test process's
    environment unless `env` is given); the caller reads the exit code and the output."""
    return subprocess.run(
        [*CLI, *args],
        env=dict(env) if env is not None else None,
        cwd=cwd,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


@contextlib.contextmanager
def repeating(step: Callable[[], object], threads: int) -> Iterator[list[BaseException]]:
    """`step` run over and over on `threads` threads for the block, as a busy beat runs a
    periodic task (several beats: several at once); yields the errors they met (others
    may add theirs), stops and joins them on the way out."""
    stop = threading.Event()
    errors: list[BaseException] = []

    def loop() -> None:
        try:
            while not stop.is_set():
                step()
                time.sleep(0.02)  # back to back, with a breath for the other threads
        except BaseException as exc:
            errors.append(exc)

    running = [threading.Thread(target=loop) for _ in range(threads)]
    for t in running:
        t.start()
    try:
        yield errors
    finally:
        stop.set()
        for t in running:
            t.join(60)


class AnswersAtOnce:
    """For a fake gateway client with `send_many`/`status_many`: the window's non-blocking
    interface (`start_send`, `start_status`, `deadline`), every future settled at once."""

    def start_send(self, batch: Any) -> list[Future[Any]]:
        return [_settled(a) for a in self.send_many(batch)]  # type: ignore[attr-defined]

    def start_status(self, gateway_ids: Any) -> list[Future[Any]]:
        return [_settled(a) for a in self.status_many(gateway_ids)]  # type: ignore[attr-defined]

    def deadline(self, op: str, requests: int) -> float:
        return 60.0


def _settled(answer: Any) -> Future[Any]:
    future: Future[Any] = Future()
    future.set_result(answer)
    return future


def wait_for(
    message_id: uuid.UUID, done: Callable[[SmsLog], bool], timeout: float = 30.0
) -> SmsLog:
    """Poll the message's row until `done(row)` holds; fail with the row after `timeout`."""
    seen: list[SmsLog | None] = [None]

    def settled() -> bool:
        with session_scope() as session:
            seen[0] = session.get(SmsLog, message_id)
        return seen[0] is not None and done(seen[0])

    wait_until(settled, timeout, lambda: f"message {message_id} to settle: {seen[0]!r}", 0.1)
    assert seen[0] is not None
    return seen[0]


class Published(list[Any]):
    """The dispatches published after commit, in order (`ids`: their message ids)."""

    @property
    def ids(self) -> list[uuid.UUID]:
        return [d.message_id for d in self]


def capture_publishes(monkeypatch: pytest.MonkeyPatch) -> Published:
    """Keep the dispatches enqueue and the sweeps publish in the returned list instead
    of sending them to the broker (so no worker takes the messages)."""
    from sms_pipeline.services import outbox

    published = Published()

    def publish(dispatches: Iterable[Any]) -> int:
        batch = list(dispatches)
        published.extend(batch)
        return len(batch)

    monkeypatch.setattr(outbox, "publish", publish)
    return published


def is_final(row: SmsLog) -> bool:
    return SendStatus(row.send_status).is_final


class SimClock:
    """A gateway simulator's clock (`SimState.clock`) that a test moves forward: messages
    accepted before `advance(s)` are `s` seconds older, so their statuses and auto-replies
    come without the test sleeping. Real time runs underneath unless `frozen`."""

    def __init__(self, *, frozen: bool = False) -> None:
        self.offset = 0.0
        self.frozen_at = time.monotonic() if frozen else None

    def __call__(self) -> float:
        base = time.monotonic() if self.frozen_at is None else self.frozen_at
        return base + self.offset

    def advance(self, seconds: float) -> None:
        self.offset += seconds


class TaskWatch:
    """Celery tasks published and run in this process while the block is open.

    The test worker runs in this process (tests/conftest.py `worker`), so its threads send
    Celery's signals here: `settled()` holds once every watched task published since the
    block opened (by the test or by a task) has run, countdowns included. It replaces
    sleeping "long enough for anything more to happen" with waiting for exactly that.
    Tasks are told apart by id: Celery's own retry (same id) would not count, and the
    pipeline does not use it (a retry is a new countdown publish).
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
        # redis-py types its answers for the sync and the asyncio client at once: Any here.
        values: Any = []
        if kind == b"list":
            values = client.lrange(key, 0, -1)
        elif kind == b"hash":
            values = client.hvals(key)
        elif kind == b"string":
            values = [client.get(key) or b""]
        elif kind == b"zset":
            scored: Any = client.zrange(key, 0, -1, withscores=True)
            values = [m for m, _ in scored]
        elif kind == b"set":
            values = client.smembers(key)
        for value in values:
            texts += decode_broker_value(value)
    return texts


def sample_names(spec: MetricSpec) -> tuple[str, ...]:
    """The sample names the exporter serves for one catalogue entry."""
    if spec.kind is MetricKind.HISTOGRAM:
        return (f"{spec.name}_bucket", f"{spec.name}_sum", f"{spec.name}_count")
    return (spec.name,)


def attempt_send(
    message_id: uuid.UUID,
    *,
    settings: Settings | None = None,
    client: IP2SMSClient | None = None,
    now: dt.datetime | None = None,
) -> AttemptResult:
    """One send attempt for `message_id` alone: `send_batch` (the drain's step) scoped to
    its id; SKIPPED when it is not waiting, not due or claimed elsewhere."""
    from sms_pipeline.services import sending

    batch = sending.send_batch(ids=[message_id], settings=settings, client=client, now=now)
    return batch.results.get(message_id) or AttemptResult(
        Outcome.SKIPPED, detail="not waiting to be sent, not due, or claimed elsewhere"
    )

"""Heartbeats: each worker and beat process sets `sms_heartbeat_timestamp_seconds{role}` to
the current Unix time every HEARTBEAT_SECONDS, so "a worker or beat is gone" is an alert on
a stale value (config/alerts.yml), seen by the exporter like every stored metric.

Stored in `metric_counters` with a set, not an add: the newest beat of any process wins.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Final, cast

from sqlalchemy import Engine, Insert, Table

from sms_pipeline.db.models import MetricCounter, utcnow
from sms_pipeline.db.statements import upsert_insert
from sms_pipeline.metrics import catalogue as c
from sms_pipeline.metrics.store import format_labels

log = logging.getLogger(__name__)

HEARTBEAT_SECONDS: Final = 15.0


def _upsert(engine: Engine) -> Insert:
    table = cast(Table, MetricCounter.__table__)
    stmt = upsert_insert(engine, table)
    # Two processes of one role: keep the later beat whatever order they commit in.
    newer = stmt.excluded.value > table.c.value
    return stmt.on_conflict_do_update(
        index_elements=[table.c.name, table.c.labels],
        set_={"value": stmt.excluded.value, "updated_at": stmt.excluded.updated_at},
        where=newer,
    )


def beat(role: str, engine: Engine | None = None, *, now: float | None = None) -> None:
    """Record that a process of `role` (worker, beat) is alive now."""
    if role not in c.HEARTBEAT_ROLES:
        raise ValueError(f"unknown heartbeat role {role!r}")
    if engine is None:
        from sms_pipeline.db import get_engine

        engine = get_engine()
    row = {
        "name": c.HEARTBEAT,
        "labels": format_labels({"role": role}),
        "value": time.time() if now is None else now,
        "updated_at": utcnow(),
    }
    with engine.begin() as conn:
        conn.execute(_upsert(engine), [row])


class Heartbeat:
    """A daemon thread beating for `role` until stopped."""

    def __init__(
        self,
        role: str,
        *,
        interval: float = HEARTBEAT_SECONDS,
        engine: Callable[[], Engine] | None = None,
    ) -> None:
        self.role = role
        self.interval = interval
        self._engine = engine
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"sms-heartbeat-{role}", daemon=True)
        self._warned = 0.0

    def start(self) -> Heartbeat:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(timeout=5)

    def _run(self) -> None:
        while True:
            try:
                beat(self.role, self._engine() if self._engine else None)
            except Exception as exc:  # the database is away: the alert will say so
                if time.monotonic() - self._warned > 300:
                    self._warned = time.monotonic()
                    log.warning("heartbeat (%s) not recorded: %s", self.role, type(exc).__name__)
            if self._stop.wait(self.interval):
                return


_running: dict[str, Heartbeat] = {}
_lock = threading.Lock()


def start_heartbeat(role: str) -> None:
    """Start this process's heartbeat for `role` (idempotent)."""
    with _lock:
        if role not in _running:
            _running[role] = Heartbeat(role).start()


def stop_heartbeats() -> None:
    with _lock:
        running = list(_running.values())
        _running.clear()
    for heartbeat in running:
        heartbeat.stop()

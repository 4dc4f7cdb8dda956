"""Stored counters: buffered in the process, added to `verification.metric_counters` in bulk.

The hot path (`add`, or `inc` / `observe` for one sample) only adds to a dict under a lock;
a background thread flushes the buffer every `flush_interval` seconds in ONE upsert
statement (`ON CONFLICT (name, labels) DO UPDATE SET value = value + excluded.value`),
which works on PostgreSQL and SQLite. Because every flush *adds*, any number of workers
agree on the totals and a restart loses nothing but an unflushed second; the buffer is
also flushed at worker shutdown (Celery signals) and at interpreter exit.

Rows are written in (name, labels) order so two workers flushing the same series lock
them in the same order and never deadlock. A failed flush puts the increments back to
be retried, up to a bound on distinct series.
"""

from __future__ import annotations

import atexit
import bisect
import functools
import logging
import os
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Final, cast

from sqlalchemy import Engine, Insert, Table, select

from sms_pipeline.db.models import MetricCounter, utcnow
from sms_pipeline.db.statements import upsert_insert

log = logging.getLogger(__name__)

LabelKey = tuple[str, str]  # (name, canonical labels)
Increment = tuple[str, Mapping[str, object] | None, float]  # (name, labels, value)
Observation = tuple[str, Mapping[str, object] | None, float, tuple[float, ...]]  # + buckets
_ROWS_PER_BATCH: Final = 1000
_MAX_PENDING_SERIES: Final = 50_000


def _clean(value: object) -> str:
    # "," and "=" separate the canonical form; a label value never needs them.
    return str(value).replace(",", "_").replace("=", "_").replace("\n", " ")[:100]


def format_labels(labels: Mapping[str, object] | None) -> str:
    """Canonical label text: `k=v` pairs sorted by key, joined by `,`."""
    if not labels:
        return ""
    return _canonical(_items(labels))


def parse_labels(text: str) -> dict[str, str]:
    if not text:
        return {}
    return dict(pair.split("=", 1) for pair in text.split(","))


def _le(bound: float) -> str:
    # Prometheus' own spelling of bucket bounds (1.0, 2.5, +Inf).
    return "+Inf" if bound == float("inf") else repr(float(bound))


def _upsert(engine: Engine) -> Insert:
    """One parameterised statement; executed with a list of rows SQLAlchemy batches them
    into multi-row VALUES (insertmanyvalues), compiled once (the engine caches it)."""
    table = cast(Table, MetricCounter.__table__)
    stmt = upsert_insert(engine, table)
    upsert: Insert = stmt.on_conflict_do_update(
        index_elements=[table.c.name, table.c.labels],
        set_={
            "value": table.c.value + stmt.excluded.value,
            "updated_at": stmt.excluded.updated_at,
        },
    )
    return upsert


@functools.lru_cache(maxsize=4096)
def _canonical(items: tuple[tuple[str, str], ...]) -> str:
    return ",".join(f"{_clean(k)}={_clean(v)}" for k, v in items)


@functools.lru_cache(maxsize=1024)
def _histogram_keys(
    name: str, items: tuple[tuple[str, str], ...], buckets: tuple[float, ...]
) -> tuple[tuple[float, ...], tuple[LabelKey, ...], LabelKey, LabelKey]:
    bounds = (*sorted(buckets), float("inf"))
    base = dict(items)
    bucket_keys = tuple(
        (f"{name}_bucket", format_labels({**base, "le": _le(bound)})) for bound in bounds
    )
    text = _canonical(items)
    return bounds, bucket_keys, (f"{name}_sum", text), (f"{name}_count", text)


def _items(labels: Mapping[str, object] | None) -> tuple[tuple[str, str], ...]:
    return tuple(sorted((str(k), str(v)) for k, v in labels.items())) if labels else ()


class MetricsStore:
    """Counters and histograms that add up across processes, stored in the database."""

    def __init__(
        self,
        engine: Engine | Callable[[], Engine] | None = None,
        *,
        flush_interval: float = 1.0,
    ) -> None:
        if engine is None:
            from sms_pipeline.db import get_engine

            engine = get_engine
        self._engine = engine
        self.flush_interval = flush_interval
        self._lock = threading.Lock()
        self._flush_lock = threading.Lock()
        self._pending: dict[LabelKey, float] = {}
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._last_warning = 0.0

    @property
    def engine(self) -> Engine:
        return self._engine if isinstance(self._engine, Engine) else self._engine()

    # --- the hot path ---------------------------------------------------------------------
    def add(
        self, increments: Iterable[Increment] = (), observations: Iterable[Observation] = ()
    ) -> None:
        """Counter increments and histogram observations, all under one lock acquisition
        (a batch of messages records its metrics in one call)."""
        # A batch repeats the same few label sets: sum per distinct set first, so labels are
        # sorted once per set and a histogram's cumulative buckets are written once per
        # set, not once per message (which cost ~10 % of a send worker's CPU).
        counted: dict[tuple[str, tuple[tuple[str, object], ...]], float] = {}
        for name, labels, value in increments:
            raw = (name, tuple(labels.items()) if labels else ())
            counted[raw] = counted.get(raw, 0.0) + value
        keyed: list[tuple[LabelKey, float]] = [
            ((name, _canonical(_items(dict(raw)))), value) for (name, raw), value in counted.items()
        ]
        # Per distinct histogram: how many values fall first into each bucket, their sum.
        seen: dict[Any, tuple[tuple[float, ...], list[float], list[float]]] = {}
        for name, labels, value, buckets in observations:
            hkey = (name, tuple(labels.items()) if labels else (), tuple(buckets))
            found = seen.get(hkey)
            if found is None:
                bounds = _histogram_keys(name, _items(labels), hkey[2])[0]
                found = seen[hkey] = (bounds, [0.0] * len(bounds), [0.0])
            bounds, firsts, total = found
            firsts[bisect.bisect_left(bounds, value)] += 1
            total[0] += value
        for (name, raw, buckets), (_bounds, firsts, total) in seen.items():
            _, bucket_keys, sum_key, count_key = _histogram_keys(name, _items(dict(raw)), buckets)
            # Cumulative: a bucket counts every value whose first bucket is at or below it.
            running = 0.0
            for key, first in zip(bucket_keys, firsts, strict=True):
                running += first
                if running:
                    keyed.append((key, running))
            keyed += [(sum_key, total[0]), (count_key, running)]
        with self._lock:
            pending = self._pending
            for key, value in keyed:
                pending[key] = pending.get(key, 0.0) + value

    def inc(
        self, name: str, labels: Mapping[str, object] | None = None, value: float = 1.0
    ) -> None:
        self.add(increments=((name, labels, value),))

    def observe(
        self,
        name: str,
        labels: Mapping[str, object] | None,
        value: float,
        buckets: Iterable[float],
    ) -> None:
        """One observation of a cumulative histogram."""
        self.add(observations=((name, labels, value, tuple(buckets)),))

    def pending(self) -> dict[LabelKey, float]:
        with self._lock:
            return dict(self._pending)

    # --- writing --------------------------------------------------------------------------
    def flush(self) -> int:
        """Add the buffered increments to the stored totals; returns the rows written.

        On a database error the increments go back into the buffer and the error is raised.
        """
        with self._flush_lock:
            with self._lock:
                batch, self._pending = self._pending, {}
            if not batch:
                return 0
            now = utcnow()
            rows = [
                {"name": name, "labels": labels, "value": value, "updated_at": now}
                for (name, labels), value in sorted(batch.items())
                if value
            ]
            try:
                engine = self.engine
                stmt = _upsert(engine)
                with engine.begin() as conn:
                    for start in range(0, len(rows), _ROWS_PER_BATCH):
                        conn.execute(stmt, rows[start : start + _ROWS_PER_BATCH])
            except Exception:
                self._restore(batch)
                raise
            return len(rows)

    def _restore(self, batch: dict[LabelKey, float]) -> None:
        with self._lock:
            for key, value in batch.items():
                if key in self._pending or len(self._pending) < _MAX_PENDING_SERIES:
                    self._pending[key] = self._pending.get(key, 0.0) + value

    def flush_quietly(self) -> None:
        try:
            self.flush()
        except Exception as exc:
            now = time.monotonic()
            if now - self._last_warning > 60:
                self._last_warning = now
                log.warning("metrics flush failed (will retry): %s", type(exc).__name__)

    # --- the background flusher -----------------------------------------------------------
    def start(self) -> None:
        """Start the flusher thread (idempotent)."""
        with self._lock:
            if self._thread is not None and self._thread.is_alive():
                return
            self._stop.clear()
            self._thread = threading.Thread(
                target=self._run, name="sms-metrics-flusher", daemon=True
            )
            self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.flush_interval):
            self.flush_quietly()

    def stop(self, *, flush: bool = True) -> None:
        self._stop.set()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=5)
        self._thread = None
        if flush:
            self.flush_quietly()

    # --- reading --------------------------------------------------------------------------
    def read(self, prefix: str = "") -> dict[LabelKey, float]:
        """Stored totals (not this process's unflushed increments)."""
        query = select(MetricCounter.name, MetricCounter.labels, MetricCounter.value)
        if prefix:
            query = query.where(MetricCounter.name.startswith(prefix, autoescape=True))
        with self.engine.connect() as conn:
            return {(n, lab): float(v) for n, lab, v in conn.execute(query)}

    def value(self, name: str, labels: Mapping[str, object] | None = None) -> float:
        query = select(MetricCounter.value).where(
            MetricCounter.name == name, MetricCounter.labels == format_labels(labels)
        )
        with self.engine.connect() as conn:
            found = conn.execute(query).scalar()
        return float(found or 0.0)


# --- the process-wide store -----------------------------------------------------------------

_default_lock = threading.Lock()
_default: MetricsStore | None = None


def get_store() -> MetricsStore:
    """This process's store, its flusher started on first use."""
    global _default
    store = _default
    if store is None:
        with _default_lock:
            if _default is None:
                _default = MetricsStore()
                _default.start()
            store = _default
    return store


def shutdown_store() -> None:
    """Flush and stop the process-wide store (worker shutdown, interpreter exit)."""
    global _default
    with _default_lock:
        store, _default = _default, None
    if store is not None:
        store.stop(flush=True)


def _forget_in_child() -> None:
    # A forked child starts empty: the parent flushes what it buffered, the child's copy
    # would be counted twice, and the flusher thread did not survive the fork anyway.
    global _default, _default_lock
    _default = None
    _default_lock = threading.Lock()


os.register_at_fork(after_in_child=_forget_in_child)
atexit.register(shutdown_store)


def _connect_celery_signals() -> None:
    from celery.signals import worker_process_shutdown, worker_shutdown

    def on_shutdown(*_args: object, **_kwargs: object) -> None:
        shutdown_store()

    worker_shutdown.connect(on_shutdown, weak=False)
    worker_process_shutdown.connect(on_shutdown, weak=False)


_connect_celery_signals()

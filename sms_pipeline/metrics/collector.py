"""The Prometheus exporter: a Collector that reads stored counters and `sms_log` at scrape time.

Nothing is kept in the exporter's memory, so any number of exporters agree and a restart
changes nothing. A database that cannot be read gives `sms_metrics_database_up 0` and
empty families rather than a failed scrape.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections import defaultdict
from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector
from sqlalchemy import Connection, Engine, select

from sms_pipeline.db.models import MESSAGE_TYPES, MetricCounter, utcnow
from sms_pipeline.db.pauses import active_pauses
from sms_pipeline.metrics import catalogue as c
from sms_pipeline.metrics import health
from sms_pipeline.metrics import queries as q
from sms_pipeline.metrics.store import parse_labels
from sms_pipeline.settings import Settings, get_settings

log = logging.getLogger(__name__)

DEFAULT_WINDOW = dt.timedelta(hours=1)


def _family(spec: c.MetricSpec) -> Metric:
    labels = list(spec.labels)
    if spec.kind is c.Kind.COUNTER:
        return CounterMetricFamily(spec.family, spec.help, labels=labels)
    if spec.kind is c.Kind.HISTOGRAM:
        return HistogramMetricFamily(spec.name, spec.help, labels=labels)
    return GaugeMetricFamily(spec.name, spec.help, labels=labels)


def _le_key(le: str) -> float:
    return float("inf") if le == "+Inf" else float(le)


class SmsCollector(Collector):
    """Every metric of the catalogue, computed from the database at each scrape."""

    def __init__(
        self,
        engine: Engine | Callable[[], Engine] | None = None,
        *,
        window: dt.timedelta = DEFAULT_WINDOW,
        clock: Callable[[], dt.datetime] = utcnow,
        settings: Settings | None = None,
    ) -> None:
        self._settings = settings
        if engine is None:
            from sms_pipeline.db import get_engine

            engine = get_engine
        self._engine = engine
        self.window = window
        self.clock = clock

    @property
    def settings(self) -> Settings:
        return self._settings or get_settings()

    @property
    def engine(self) -> Engine:
        return self._engine if isinstance(self._engine, Engine) else self._engine()

    def describe(self) -> Iterator[Metric]:
        # Names only, so registering the collector does not touch the database.
        for spec in c.CATALOGUE:
            yield _family(spec)

    def collect(self) -> Iterator[Metric]:
        families: dict[str, Any] = {spec.name: _family(spec) for spec in c.CATALOGUE}
        up = 1.0
        try:
            self._fill(families)
        except Exception as exc:
            log.warning("metrics scrape could not read the database: %s", type(exc).__name__)
            up = 0.0
            families = {spec.name: _family(spec) for spec in c.CATALOGUE}
        families[c.WINDOW_SECONDS].add_metric([], self.window.total_seconds())
        families[c.OTP_VALID_SECONDS].add_metric([], float(self.settings.sms_otp_valid_seconds))
        families[c.DATABASE_UP].add_metric([], up)
        yield from families.values()

    # --- filling the families -----------------------------------------------------------------
    def _fill(self, families: dict[str, Any]) -> None:
        now = self.clock()
        with self.engine.connect() as conn:
            stored = conn.execute(
                select(MetricCounter.name, MetricCounter.labels, MetricCounter.value)
            ).all()
            queues = q.queue_stats(conn, now)
            moving = q.moving_count(conn)
            window = q.window_counts(conn, now - self.window)
        self._stored(families, stored)
        self._gauges(families, now, queues, moving, window)
        self._health(families, now)

    def _health(self, families: dict[str, Any], now: dt.datetime) -> None:
        """The alerts' gauges, each on its own connection: one that fails (the verification
        service's table unreadable, say) leaves its gauge out, not the whole scrape."""

        def paused(conn: Connection) -> None:
            for pause in active_pauses(conn, now):
                families[c.ACCOUNT_PAUSED].add_metric([pause.account, pause.kind], 1.0)

        def sql_queue(conn: Connection) -> None:
            for account, age in sorted(health.sql_queue_oldest(conn, now).items()):
                families[c.SQL_QUEUE_OLDEST_AGE].add_metric([account], age)
            for account, depth in sorted(q.sql_queue_depths(conn).items()):
                families[c.SQL_QUEUE_DEPTH].add_metric([account], depth)

        def replication(conn: Connection) -> None:
            families[c.REPLICATION_LAG].add_metric([], health.replication_lag(conn, now))
            families[c.REPLICATION_WAITING].add_metric([], q.replication_waiting(conn).depth)

        fills: dict[str, Callable[[Connection], None]] = {
            c.ACCOUNT_PAUSED: paused,
            c.STATUS_CHECK_LAG: lambda conn: families[c.STATUS_CHECK_LAG].add_metric(
                [], health.status_check_lag(conn, now)
            ),
            c.REPLICATION_LAG: replication,
            c.SQL_QUEUE_OLDEST_AGE: sql_queue,
            c.GATEWAY_STATE: lambda conn: self._gateways(families, conn),
        }
        for name, fill in fills.items():
            try:
                with self.engine.connect() as conn:
                    fill(conn)
            except Exception as exc:
                log.warning("metrics scrape left out %s: %s", name, type(exc).__name__)

    def _gateways(self, families: dict[str, Any], conn: Connection) -> None:
        from sms_pipeline.db.gateways import read_table

        for route in read_table(conn, self.settings).routes:
            state = route.state if route.active else "disabled"
            for value in c.GATEWAY_STATE_VALUES:
                families[c.GATEWAY_STATE].add_metric([route.name, value], float(value == state))
            families[c.GATEWAY_WEIGHT].add_metric([route.name], float(route.weight))

    def _stored(self, families: dict[str, Any], rows: Any) -> None:
        by_name: dict[str, list[tuple[dict[str, str], float]]] = defaultdict(list)
        for name, labels, value in rows:
            by_name[name].append((parse_labels(labels), float(value)))
        for spec in c.CATALOGUE:
            if spec.source is not c.Source.STORED:
                continue
            family = families[spec.name]
            if spec.kind is c.Kind.GAUGE:  # set by its writers (heartbeats): the value as is
                for labels, value in sorted(by_name.get(spec.name, []), key=lambda r: str(r[0])):
                    family.add_metric([labels.get(k, "") for k in spec.labels], value)
            elif spec.kind is c.Kind.COUNTER:
                for labels, value in sorted(
                    by_name.get(spec.name, []), key=lambda r: sorted(r[0].items())
                ):
                    family.add_metric([labels.get(k, "") for k in spec.labels], value)
            else:
                self._histogram(family, spec, by_name)

    @staticmethod
    def _histogram(
        family: Metric, spec: c.MetricSpec, by_name: dict[str, list[tuple[dict[str, str], float]]]
    ) -> None:
        allowed = {repr(float(b)) for b in spec.buckets} | {"+Inf"}
        series: dict[tuple[str, ...], dict[str, Any]] = defaultdict(
            lambda: {"buckets": {}, "sum": 0.0}
        )
        for labels, value in by_name.get(f"{spec.name}_bucket", []):
            le = labels.pop("le", None)
            if le in allowed:  # a bucket dropped from the catalogue is not shown
                series[tuple(labels.get(k, "") for k in spec.labels)]["buckets"][le] = value
        for labels, value in by_name.get(f"{spec.name}_sum", []):
            series[tuple(labels.get(k, "") for k in spec.labels)]["sum"] = value
        for key in sorted(series):
            data = series[key]
            if "+Inf" not in data["buckets"]:
                continue
            buckets = sorted(data["buckets"].items(), key=lambda item: _le_key(item[0]))
            assert isinstance(family, HistogramMetricFamily)
            family.add_metric(list(key), buckets, data["sum"])

    def _gauges(
        self,
        families: dict[str, Any],
        now: dt.datetime,
        queues: dict[tuple[str, str], q.QueueStat],
        moving: int,
        window: dict[tuple[str, str], int],
    ) -> None:
        for (queue, priority), stat in sorted(queues.items()):
            families[c.QUEUE_DEPTH].add_metric([queue, priority], stat.depth)
            age = (now - stat.oldest_due).total_seconds() if stat.oldest_due else 0.0
            families[c.QUEUE_OLDEST_AGE].add_metric([queue, priority], max(0.0, age))
        families[c.MESSAGES_MOVING].add_metric([], moving)

        rated: dict[str, int] = defaultdict(int)
        delivered: dict[str, int] = defaultdict(int)
        terminated = exhausted = 0
        for (message_type, outcome), count in sorted(window.items()):
            families[c.MESSAGES_WINDOW].add_metric([message_type, outcome], count)
            if not q.counts_in_rates(outcome):
                continue
            rated[message_type] += count
            delivered[message_type] += count if outcome == "Delivered" else 0
            terminated += count if outcome == "Terminated" else 0
            exhausted += count if outcome == "RETRYCOUNT EXCEEDED" else 0
        for message_type in MESSAGE_TYPES:
            if rated[message_type]:
                families[c.DELIVERY_RATIO].add_metric(
                    [message_type], delivered[message_type] / rated[message_type]
                )
        total = sum(rated.values())
        if total:
            families[c.TERMINATED_RATIO].add_metric([], terminated / total)
            families[c.RETRYCOUNT_EXCEEDED_RATIO].add_metric([], exhausted / total)


def build_registry(collector: SmsCollector | None = None) -> CollectorRegistry:
    """A registry with only our collector (no process/platform metrics of the exporter)."""
    registry = CollectorRegistry(auto_describe=True)
    registry.register(collector or SmsCollector())
    return registry


def serve(
    host: str = "127.0.0.1", port: int = 9808, registry: CollectorRegistry | None = None
) -> tuple[Any, Any]:
    """Serve /metrics in a daemon thread; returns (server, thread). `port=0` picks one."""
    from prometheus_client import start_http_server

    return start_http_server(port, addr=host, registry=registry or build_registry())

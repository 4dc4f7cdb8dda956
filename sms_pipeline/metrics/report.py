"""The channel report's figures (long: each is a query written for both databases).

How stable, reliable and fast the channel was over a window, from `sms_log` (messages
enqueued in [since, until), by the indexed `inserted_at`) and the stored gateway counters,
in a constant number of queries whatever the log's size: volume per time bucket × type ×
status (one GROUP BY; the bucket follows the data's span); time to Delivered (PostgreSQL:
`percentile_cont` with GROUPING SETS and `width_bucket`; SQLite: one bounded, ordered fetch
with the same interpolation here); the gateway counters since they began. `report_text`
renders it as tables, `plot` as a chart.
"""

from __future__ import annotations

import bisect
import datetime as dt
import json
import math
import re
from collections import defaultdict
from dataclasses import asdict, dataclass, field
from typing import Any, Final

from sqlalchemy import Connection, Engine, case, func, select

from sms_pipeline.db import epoch_seconds, has_percentiles, table_name
from sms_pipeline.db.models import MESSAGE_TYPES, MetricCounter, utcnow
from sms_pipeline.metrics import catalogue as c
from sms_pipeline.metrics import queries as q
from sms_pipeline.metrics.store import parse_labels

PERCENTILES: Final = (0.5, 0.95, 0.99)
# Chart bucket sizes, in seconds; the smallest that keeps the window within MAX_BUCKETS.
BUCKET_SIZES: Final = (1, 5, 10, 30, 60, 300, 900, 3600, 6 * 3600, 86400, 7 * 86400)
MAX_BUCKETS: Final = 60
SHORT_TYPE_NAMES: Final = {"medication_request": "medication"}  # narrow table headers
LATENCY_EDGES: Final = c.SUBMIT_TO_DELIVERED_BUCKETS
SQLITE_LATENCY_LIMIT: Final = 1_000_000
ALL: Final = "all"


@dataclass
class TypeReport:
    type: str
    total: int = 0
    final: int = 0  # in a final state, whatever it is
    finished: int = 0  # final, and the channel's doing (not opted out / invalid input)
    by_status: dict[str, int] = field(default_factory=dict)
    delivered: int = 0
    delivery_rate: float | None = None
    terminated_share: float | None = None
    retrycount_exceeded_share: float | None = None
    latency_count: int = 0
    latency_p50: float | None = None
    latency_p95: float | None = None
    latency_p99: float | None = None


@dataclass
class GatewayReport:
    operation: str
    requests: int
    by_outcome: dict[str, int]
    error_rate: float | None


@dataclass
class ChannelReport:
    since: dt.datetime
    until: dt.datetime
    generated_at: dt.datetime
    types: list[TypeReport]
    overall: TypeReport
    gateway: list[GatewayReport]
    # (bucket start, {status: count}) in time order, from the first message's bucket to the
    # last one's (the whole window when it has none), empty buckets included.
    timeline: list[tuple[dt.datetime, dict[str, int]]]
    # (upper bound in seconds or None for the last open bin, count): bisect_right bins.
    latency_histogram: list[tuple[float | None, int]]
    latency_sample_truncated: bool = False
    bucket_seconds: int = 3600
    # Data protection (stored counters, since they began): redacted, purged, erased.
    privacy: dict[str, int] = field(default_factory=dict)
    # Messages of the window accepted (or held) by each gateway (sms_log.gateway), and every
    # gateway state change in the window (docs/gateways.md).
    by_gateway: dict[str, int] = field(default_factory=dict)
    gateway_switches: list[dict[str, str]] = field(default_factory=list)
    # Codes sent once more via another gateway (SMS_OTP_FALLBACK_SECONDS): the copies
    # enqueued in the window, and how many of them were Delivered.
    otp_fallbacks: dict[str, int] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["timeline"] = [{"start": b.isoformat(), "by_status": s} for b, s in self.timeline]
        data["latency_histogram"] = [
            {"below": edge, "count": n} for edge, n in self.latency_histogram
        ]
        for key in ("since", "until", "generated_at"):
            data[key] = getattr(self, key).isoformat()
        return data

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)


# --- helpers ---------------------------------------------------------------------------------

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw]?)\s*$")
_UNIT_SECONDS: Final = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_duration(value: str) -> dt.timedelta:
    """`90s`, `30m`, `24h`, `7d`, `2w` (a bare number is seconds)."""
    match = _DURATION.match(value.lower())
    if not match or float(match.group(1)) <= 0:
        raise ValueError(f"not a duration: {value!r} (use e.g. 30m, 24h, 7d)")
    return dt.timedelta(seconds=float(match.group(1)) * _UNIT_SECONDS[match.group(2)])


def percentile_cont(ordered: list[float], fraction: float) -> float | None:
    """PostgreSQL's percentile_cont (linear interpolation) over an ascending list."""
    if not ordered:
        return None
    position = fraction * (len(ordered) - 1)
    low = math.floor(position)
    high = math.ceil(position)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def _ratio(part: int, whole: int) -> float | None:
    return part / whole if whole else None


def bucket_seconds_for(window: dt.timedelta) -> int:
    """The chart's bucket: seconds for a short run, minutes, hours, then days."""
    seconds = max(1.0, window.total_seconds())
    for size in BUCKET_SIZES:
        if seconds / size <= MAX_BUCKETS:
            return size
    return BUCKET_SIZES[-1]


def _bucket_start(value: dt.datetime, size: int) -> dt.datetime:
    epoch = math.floor(value.timestamp() / size) * size
    return dt.datetime.fromtimestamp(epoch, dt.UTC)


# --- the queries -----------------------------------------------------------------------------


def _bucket_counts(
    conn: Connection, since: dt.datetime, until: dt.datetime, size: int
) -> dict[tuple[dt.datetime, str, str], int]:
    # The bucket number (seconds since 1970 // size); `size` is ours, an int.
    bucket = f"{epoch_seconds(conn, 'inserted_at')} / {int(size)}"
    log_table = table_name(conn, "sms_log")
    rows = conn.execute(
        q.timed(
            f"SELECT {bucket} AS bucket, type, send_status, gateway_status, count(*) "
            f"FROM {log_table} WHERE inserted_at >= :since AND inserted_at < :until "
            f"GROUP BY 1, 2, 3, 4",
            "since",
            "until",
        ),
        {"since": since, "until": until},
    ).all()
    out: dict[tuple[dt.datetime, str, str], int] = defaultdict(int)
    for number, message_type, send_status, gateway_status, count in rows:
        when = dt.datetime.fromtimestamp(int(number) * size, dt.UTC)
        out[(when, message_type, q.outcome_of(send_status, gateway_status))] += int(count)
    return out


def _data_span(
    conn: Connection, since: dt.datetime, until: dt.datetime, extra: list[dt.datetime]
) -> tuple[dt.datetime, dt.datetime]:
    """The first and last enqueue time within [since, until) (the whole window if none)."""
    found = conn.execute(
        q.timed(
            f"SELECT min(inserted_at), max(inserted_at) FROM {table_name(conn, 'sms_log')} "
            f"WHERE inserted_at >= :since AND inserted_at < :until",
            "since",
            "until",
        ),
        {"since": since, "until": until},
    ).one()
    moments = [m for m in (q.as_utc(found[0]), q.as_utc(found[1]), *extra) if m is not None]
    if not moments:
        return since, until - dt.timedelta(microseconds=1)
    return max(since, min(moments)), min(until - dt.timedelta(microseconds=1), max(moments))


@dataclass
class _Latency:
    percentiles: dict[str, tuple[int, list[float | None]]]  # type or ALL → (n, p50/95/99)
    bins: list[int]
    truncated: bool = False


def _latency_in_sql(conn: Connection, since: dt.datetime, until: dt.datetime) -> _Latency:
    where = (
        "gateway_status = 'Delivered' AND submitted_at IS NOT NULL "
        "AND status_changed_at IS NOT NULL AND inserted_at >= :since AND inserted_at < :until"
    )
    seconds = "greatest(0, extract(epoch FROM status_changed_at - submitted_at))::float8"
    fractions = ", ".join(repr(p) for p in PERCENTILES)
    rows = conn.execute(
        q.timed(
            f"SELECT type, count(*), percentile_cont(ARRAY[{fractions}]) "
            f"WITHIN GROUP (ORDER BY {seconds}) "
            f"FROM verification.sms_log WHERE {where} GROUP BY GROUPING SETS ((type), ())",
            "since",
            "until",
        ),
        {"since": since, "until": until},
    ).all()
    percentiles = {
        (message_type if message_type is not None else ALL): (int(n), list(values))
        for message_type, n, values in rows
        if n
    }
    edges = ", ".join(repr(float(e)) for e in LATENCY_EDGES)
    bins = [0] * (len(LATENCY_EDGES) + 1)
    for index, count in conn.execute(
        q.timed(
            f"SELECT width_bucket({seconds}, ARRAY[{edges}]::float8[]), count(*) "
            f"FROM verification.sms_log WHERE {where} GROUP BY 1",
            "since",
            "until",
        ),
        {"since": since, "until": until},
    ):
        bins[int(index)] += int(count)
    return _Latency(percentiles, bins)


def _latency_in_python(conn: Connection, since: dt.datetime, until: dt.datetime) -> _Latency:
    rows = conn.execute(
        q.timed(
            "SELECT type, submitted_at, status_changed_at FROM sms_log "
            "WHERE gateway_status = 'Delivered' AND submitted_at IS NOT NULL "
            "AND status_changed_at IS NOT NULL AND inserted_at >= :since AND inserted_at < :until "
            "ORDER BY inserted_at DESC LIMIT :limit",
            "since",
            "until",
        ),
        {"since": since, "until": until, "limit": SQLITE_LATENCY_LIMIT + 1},
    ).all()
    truncated = len(rows) > SQLITE_LATENCY_LIMIT
    values: dict[str, list[float]] = defaultdict(list)
    for message_type, submitted, changed in rows[:SQLITE_LATENCY_LIMIT]:
        start, end = q.as_utc(submitted), q.as_utc(changed)
        assert start is not None and end is not None
        took = max(0.0, (end - start).total_seconds())
        values[message_type].append(took)
        values[ALL].append(took)
    percentiles: dict[str, tuple[int, list[float | None]]] = {}
    bins = [0] * (len(LATENCY_EDGES) + 1)
    for key, seq in values.items():
        seq.sort()
        percentiles[key] = (len(seq), [percentile_cont(seq, p) for p in PERCENTILES])
        if key == ALL:
            for took in seq:
                bins[bisect.bisect_right(LATENCY_EDGES, took)] += 1
    return _Latency(percentiles, bins, truncated)


def _gateway(conn: Connection) -> list[GatewayReport]:
    rows = conn.execute(
        select(MetricCounter.labels, MetricCounter.value).where(
            MetricCounter.name == c.GATEWAY_REQUESTS_TOTAL
        )
    ).all()
    by_op: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for labels, value in rows:
        parsed = parse_labels(labels)
        by_op[parsed.get("operation", "")][parsed.get("outcome", "")] += round(value)
    out = []
    for operation in sorted(by_op):
        outcomes = dict(sorted(by_op[operation].items()))
        total = sum(outcomes.values())
        errors = total - outcomes.get("ok", 0)
        out.append(GatewayReport(operation, total, outcomes, _ratio(errors, total)))
    return out


def _gateways(
    conn: Connection, since: dt.datetime, until: dt.datetime
) -> tuple[dict[str, int], list[dict[str, str]]]:
    from sms_pipeline.db.models import GatewayEvent, SmsLog

    counts = conn.execute(
        select(SmsLog.gateway, func.count())
        .where(
            SmsLog.inserted_at >= since,
            SmsLog.inserted_at < until,
            SmsLog.gateway.is_not(None),
        )
        .group_by(SmsLog.gateway)
    ).all()
    events = conn.execute(
        select(GatewayEvent)
        .where(GatewayEvent.at >= since, GatewayEvent.at < until)
        .order_by(GatewayEvent.at, GatewayEvent.id)
    ).all()
    switches = [
        {
            "at": e.at.isoformat(),
            "gateway": e.gateway,
            "from": e.from_state,
            "to": e.to_state,
            "reason": e.reason,
        }
        for e in events
    ]
    return {str(g): int(n) for g, n in sorted(counts)}, switches


def _fallbacks(conn: Connection, since: dt.datetime, until: dt.datetime) -> dict[str, int]:
    from sms_pipeline.db.models import SmsLog

    copies, delivered = conn.execute(
        select(
            func.count(),
            func.coalesce(func.sum(case((SmsLog.gateway_status == "Delivered", 1), else_=0)), 0),
        ).where(
            SmsLog.inserted_at >= since,
            SmsLog.inserted_at < until,
            SmsLog.fallback_of.is_not(None),
        )
    ).one()
    return {"copies": int(copies), "delivered": int(delivered)} if copies else {}


def _privacy(conn: Connection) -> dict[str, int]:
    rows = conn.execute(
        select(MetricCounter.labels, MetricCounter.value).where(
            MetricCounter.name == c.PRIVACY_ACTIONS_TOTAL
        )
    ).all()
    out = dict.fromkeys(c.PRIVACY_ACTIONS, 0)
    for labels, value in rows:
        action = parse_labels(labels).get("action", "")
        out[action] = out.get(action, 0) + round(value)
    return out


# --- the report ------------------------------------------------------------------------------


def _type_report(name: str, by_status: dict[str, int]) -> TypeReport:
    rated = sum(n for s, n in by_status.items() if q.counts_in_rates(s))
    delivered = by_status.get("Delivered", 0)
    return TypeReport(
        type=name,
        total=sum(by_status.values()),
        final=sum(n for s, n in by_status.items() if q.is_finished(s)),
        finished=rated,
        by_status=dict(sorted(by_status.items())),
        delivered=delivered,
        delivery_rate=_ratio(delivered, rated),
        terminated_share=_ratio(by_status.get("Terminated", 0), rated),
        retrycount_exceeded_share=_ratio(by_status.get("RETRYCOUNT EXCEEDED", 0), rated),
    )


def build_report(
    engine: Engine | None = None,
    *,
    since: dt.timedelta | dt.datetime = dt.timedelta(hours=24),
    until: dt.datetime | None = None,
) -> ChannelReport:
    """The channel's health for messages enqueued in [since, until) (until = now)."""
    if engine is None:
        from sms_pipeline.db import get_engine

        engine = get_engine()
    now = utcnow()
    until = until or now
    start = until - since if isinstance(since, dt.timedelta) else since
    with engine.connect() as conn:
        # Messages retention already deleted live on as hourly rollups (docs/privacy.md).
        rollups = q.rollup_counts(conn, start, until)
        # The chart covers the data, not the whole window: a 45-second run in a 24-hour
        # window gets 1-second bars, not one hour-wide bar at the right-hand edge.
        first, last = _data_span(conn, start, until, [hour for hour, _t, _o in rollups])
        size = bucket_seconds_for(last - first + dt.timedelta(seconds=1))
        bucket_counts = _bucket_counts(conn, start, until, size)
        for (hour, message_type, outcome), count in rollups.items():
            key = (_bucket_start(hour, size), message_type, outcome)
            bucket_counts[key] = bucket_counts.get(key, 0) + count
        privacy = _privacy(conn)
        if has_percentiles(conn):
            latency = _latency_in_sql(conn, start, until)
        else:
            latency = _latency_in_python(conn, start, until)
        gateway = _gateway(conn)
        by_gateway, switches = _gateways(conn, start, until)
        fallbacks = _fallbacks(conn, start, until)

    per_type: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    per_bucket: dict[dt.datetime, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for (bucket, message_type, outcome), count in bucket_counts.items():
        per_type[message_type][outcome] += count
        per_type[ALL][outcome] += count
        per_bucket[bucket][outcome] += count

    def with_latency(report: TypeReport) -> TypeReport:
        n, values = latency.percentiles.get(report.type, (0, [None, None, None]))
        report.latency_count = n
        report.latency_p50, report.latency_p95, report.latency_p99 = values
        return report

    known = [t for t in MESSAGE_TYPES if t in per_type]
    extra = sorted(t for t in per_type if t not in MESSAGE_TYPES and t != ALL)
    types = [with_latency(_type_report(t, per_type[t])) for t in (*known, *extra)]
    overall = with_latency(_type_report(ALL, per_type.get(ALL, {})))

    timeline: list[tuple[dt.datetime, dict[str, int]]] = []
    bucket = _bucket_start(first, size)
    while bucket <= last and bucket < until:
        timeline.append((bucket, dict(sorted(per_bucket.get(bucket, {}).items()))))
        bucket += dt.timedelta(seconds=size)

    edges: list[float | None] = [*LATENCY_EDGES, None]
    return ChannelReport(
        since=start,
        until=until,
        generated_at=now,
        types=types,
        overall=overall,
        gateway=gateway,
        timeline=timeline,
        latency_histogram=list(zip(edges, latency.bins, strict=True)),
        latency_sample_truncated=latency.truncated,
        bucket_seconds=size,
        privacy=privacy,
        by_gateway=by_gateway,
        gateway_switches=switches,
        otp_fallbacks=fallbacks,
    )

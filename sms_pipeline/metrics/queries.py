"""The read-only `sms_log` queries behind the gauges and the report.

Each query is shaped to an index, so its cost follows the pending work or the window,
not the size of the history:
- waiting messages: the partial index ix_sms_log_outbox (send_status QUEUED/SENDING);
- moving messages: the partial index ix_sms_log_moving (moving gateway statuses);
- a time window: ix_sms_log_inserted_at.
The IN lists are written literally (constants from our code) so PostgreSQL can match the
partial indexes' predicates whatever the plan.
"""

from __future__ import annotations

import datetime as dt
import enum
from collections import defaultdict
from dataclasses import dataclass
from typing import Final

from sqlalchemy import Connection, TextClause, bindparam, text

from sms_pipeline.db import table_name
from sms_pipeline.db.models import MOVING_STATUS_VALUES, PENDING_SEND_STATUSES, SendStatus
from sms_pipeline.db.models.base import UTCDateTime
from sms_pipeline.dispatch import queue_class_of
from sms_pipeline.gateway.statuses import FINAL_STATUSES, GatewayStatus

FINAL_GATEWAY: Final = frozenset(s.value for s in FINAL_STATUSES)


class Unfinished(enum.StrEnum):
    """The outcome word of a message that is not final yet."""

    PENDING = "pending"  # not yet with the gateway
    MOVING = "moving"  # with the gateway, not final


_UNFINISHED: Final = frozenset(u.value for u in Unfinished)
# Not the channel's doing: kept out of the rates' denominators (still counted and shown).
NOT_ATTEMPTED: Final = frozenset(
    s.value
    for s in (
        SendStatus.OPTED_OUT,
        SendStatus.NUMBER_INVALID,
        SendStatus.DATA1_INVALID,
        SendStatus.SEND_AT_INVALID,
        SendStatus.PRIORITY_INVALID,
        SendStatus.SUPERSEDED,
    )
)


def sql_in(column: str, values: tuple[str, ...] | frozenset[str]) -> str:
    quoted = ", ".join("'" + v.replace("'", "''") + "'" for v in sorted(values))
    return f"{column} IN ({quoted})"


def outcome_of(send_status: str, gateway_status: str | None) -> str:
    """One status word per message: its final gateway status, its final send status, or
    `pending` (not yet with the gateway) / `moving` (with the gateway, not final)."""
    if send_status == SendStatus.REJECTED:
        return GatewayStatus.REJECTED.value
    if gateway_status in FINAL_GATEWAY:
        return str(gateway_status)
    if send_status in PENDING_SEND_STATUSES:
        return Unfinished.PENDING.value
    if send_status == SendStatus.SUBMITTED:
        # A submission known only from "uniq_key dupe" has no gateway id: never polled.
        return Unfinished.MOVING.value if gateway_status is not None else SendStatus.SUBMITTED.value
    return send_status


def is_finished(outcome: str) -> bool:
    return outcome not in _UNFINISHED


def counts_in_rates(outcome: str) -> bool:
    """Finished and the channel's doing: the denominator of delivery/Terminated rates."""
    return is_finished(outcome) and outcome not in NOT_ATTEMPTED


def queue_of(message_type: str) -> str:
    return queue_class_of(message_type).value


def priority_label(priority: int) -> str:
    # Callers choose priorities freely: bound the label to the broker's 10 steps.
    if priority < 0:
        return "<0"
    if priority > 9:
        return ">9"
    return str(priority)


def as_utc(value: object) -> dt.datetime | None:
    """A timestamp from a raw text() query, aware UTC on either database."""
    if value is None:
        return None
    if isinstance(value, str):  # SQLite returns text for expressions
        value = dt.datetime.fromisoformat(value)
    assert isinstance(value, dt.datetime)
    return value.replace(tzinfo=dt.UTC) if value.tzinfo is None else value.astimezone(dt.UTC)


@dataclass(frozen=True)
class QueueStat:
    depth: int
    oldest_due: dt.datetime | None  # the oldest waiting message's enqueue (or send-at) time


def queue_stats(conn: Connection, now: dt.datetime) -> dict[tuple[str, str], QueueStat]:
    """(queue, priority label) → waiting messages and the oldest waiting one's ready time.

    Ready = enqueued, or the requested send time when later: never `due_at`, which a pause,
    a retry's backoff or a send window moves forward (a paused account's messages then
    looked 0 s old while they waited minutes)."""
    log_table = table_name(conn, "sms_log")
    ready = "CASE WHEN send_after > inserted_at THEN send_after ELSE inserted_at END"
    rows = conn.execute(
        timed(
            f"SELECT type, priority, count(*), "
            f"min(CASE WHEN {ready} <= :now THEN {ready} END) "
            f"FROM {log_table} WHERE {sql_in('send_status', PENDING_SEND_STATUSES)} "
            f"GROUP BY type, priority",
            "now",
        ),
        {"now": now},
    ).all()
    depth: dict[tuple[str, str], int] = defaultdict(int)
    oldest: dict[tuple[str, str], dt.datetime] = {}
    for message_type, priority, count, due in rows:
        key = (queue_of(message_type), priority_label(int(priority)))
        depth[key] += int(count)
        due_at = as_utc(due)
        if due_at is not None and (key not in oldest or due_at < oldest[key]):
            oldest[key] = due_at
    return {key: QueueStat(depth[key], oldest.get(key)) for key in depth}


def moment(value: object) -> dt.datetime | None:
    # Rows other applications wrote by SQL may hold anything in a time column (SQLite).
    try:
        return as_utc(value)
    except (ValueError, AssertionError):
        return None


def sql_queue_depths(conn: Connection) -> dict[str, int]:
    """Account name → rows waiting in sms_queue: rows stuck behind an inactive account or a
    zero interval show here (their age in health.sql_queue_oldest)."""
    rows = conn.execute(
        text(
            f"SELECT a.name, count(*) FROM {table_name(conn, 'sms_queue')} q "
            f"JOIN {table_name(conn, 'accounts')} a ON a.id = q.account_id GROUP BY a.name"
        )
    ).all()
    return {str(name): int(count) for name, count in rows}


def replication_waiting(conn: Connection) -> QueueStat:
    """Verifications with no sms_log row yet (waiting to be replicated) and the oldest."""
    count, oldest = conn.execute(
        text(
            f"SELECT count(*), min(v.inserted_at) FROM {table_name(conn, 'verifications')} v "
            f"WHERE NOT EXISTS (SELECT 1 FROM {table_name(conn, 'sms_log')} l "
            "WHERE l.verification_id = v.id)"
        )
    ).one()
    return QueueStat(int(count), moment(oldest))


def moving_count(conn: Connection) -> int:
    found = conn.execute(
        text(
            f"SELECT count(*) FROM {table_name(conn, 'sms_log')} "
            f"WHERE {sql_in('gateway_status', MOVING_STATUS_VALUES)}"
        )
    ).scalar()
    return int(found or 0)


def window_counts(
    conn: Connection, since: dt.datetime, until: dt.datetime | None = None
) -> dict[tuple[str, str], int]:
    """(type, outcome) → messages enqueued in [since, until)."""
    log_table = table_name(conn, "sms_log")
    where = "inserted_at >= :since" + (" AND inserted_at < :until" if until else "")
    params = {"since": since, "until": until} if until else {"since": since}
    rows = conn.execute(
        timed(
            f"SELECT type, send_status, gateway_status, count(*) FROM {log_table} "
            f"WHERE {where} GROUP BY type, send_status, gateway_status",
            *params,
        ),
        params,
    ).all()
    out: dict[tuple[str, str], int] = defaultdict(int)
    for message_type, send_status, gateway_status, count in rows:
        out[(message_type, outcome_of(send_status, gateway_status))] += int(count)
    return dict(out)


def timed(sql: str, *names: str) -> TextClause:
    """A text() query whose named parameters bind as UTCDateTime (the columns' storage)."""
    return text(sql).bindparams(*(bindparam(n, type_=UTCDateTime()) for n in names))

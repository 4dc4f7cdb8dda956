"""The scrape-time gauges the alerting rules need beyond the queues: status
checks overdue, replication behind, SQL-route rows waiting (config/alerts.yml).

Each query is shaped to an index or a small table: overdue checks through ix_sms_log_moving,
accounts and sms_queue are small (a queue that grows is what the alert is for), the
replication lag through the same window and anti-join replication itself uses.
"""

from __future__ import annotations

import datetime as dt

from sqlalchemy import Connection, inspect, text

from sms_pipeline.db import schema_of, table_name
from sms_pipeline.db.models import MOVING_STATUS_VALUES
from sms_pipeline.metrics.queries import as_utc, moment, replication_waiting, sql_in, timed


def status_check_lag(conn: Connection, now: dt.datetime) -> float:
    """Seconds the most overdue status check of a moving message has been due."""
    oldest = conn.execute(
        timed(
            f"SELECT min(next_check_at) FROM {table_name(conn, 'sms_log')} "
            f"WHERE {sql_in('gateway_status', MOVING_STATUS_VALUES)} AND next_check_at <= :now",
            "now",
        ),
        {"now": now},
    ).scalar()
    due = as_utc(oldest)
    return max(0.0, (now - due).total_seconds()) if due else 0.0


def replication_lag(conn: Connection, now: dt.datetime) -> float:
    """Age of the oldest verification that has no sms_log row yet, whatever its age (what
    replication takes next: it replicates by that fact, not by a window); 0 when every one
    has its row."""
    columns = {
        c["name"]: c for c in inspect(conn).get_columns("verifications", schema=schema_of(conn))
    }
    if "inserted_at" not in columns:
        return 0.0
    inserted = replication_waiting(conn).oldest_due
    return max(0.0, (now - inserted).total_seconds()) if inserted else 0.0


def sql_queue_oldest(conn: Connection, now: dt.datetime) -> dict[str, float]:
    """Account name → age of its oldest row waiting in the SQL route's sms_queue."""
    rows = conn.execute(
        text(
            f"SELECT a.name, min(q.inserted_at) FROM {table_name(conn, 'sms_queue')} q "
            f"JOIN {table_name(conn, 'accounts')} a ON a.id = q.account_id GROUP BY a.name"
        )
    ).all()
    out: dict[str, float] = {}
    for name, oldest in rows:
        inserted = moment(oldest)
        if inserted is not None:
            out[str(name)] = max(0.0, (now - inserted).total_seconds())
    return out

"""Requests per gateway and minute, shared by every worker (`verification.gateway_minutes`):
what `gateway list` and the report show as a gateway's recent error rate and latency."""

from __future__ import annotations

import datetime as dt
import random
from typing import Any, cast

from sqlalchemy import Connection, Table, delete, func, select

from sms_pipeline.db import upsert_insert
from sms_pipeline.db.models import GatewayMinute, utcnow
from sms_pipeline.settings import Settings

KEEP = dt.timedelta(days=1)


def add(
    conn: Connection,
    gateway: str,
    requests: int,
    definite_failures: int,
    ambiguous: int,
    latency_seconds: float,
    now: dt.datetime | None = None,
) -> None:
    """Add one batch's figures to the gateway's current minute (one statement)."""
    if not requests:
        return
    minute = (now or utcnow()).replace(second=0, microsecond=0)
    table = cast(Table, GatewayMinute.__table__)
    statement = upsert_insert(conn, table).values(
        gateway=gateway,
        minute=minute,
        requests=requests,
        definite_failures=definite_failures,
        ambiguous=ambiguous,
        latency_seconds=latency_seconds,
    )
    excluded = statement.excluded
    c = table.c
    statement = statement.on_conflict_do_update(
        index_elements=[c.gateway, c.minute],
        set_={
            "requests": c.requests + excluded.requests,
            "definite_failures": c.definite_failures + excluded.definite_failures,
            "ambiguous": c.ambiguous + excluded.ambiguous,
            "latency_seconds": c.latency_seconds + excluded.latency_seconds,
        },
    )
    with conn.begin():
        conn.execute(statement)
        if random.random() < 0.01:
            conn.execute(delete(GatewayMinute).where(GatewayMinute.minute < minute - KEEP))


def recent_figures(
    conn: Connection, settings: Settings, minutes: int = 5
) -> dict[str, dict[str, Any]]:
    """Per gateway over the last `minutes`: requests, error rate (definite refusals) and
    mean latency."""
    since = utcnow().replace(second=0, microsecond=0) - dt.timedelta(minutes=minutes - 1)
    rows = conn.execute(
        select(
            GatewayMinute.gateway,
            func.sum(GatewayMinute.requests),
            func.sum(GatewayMinute.definite_failures),
            func.sum(GatewayMinute.ambiguous),
            func.sum(GatewayMinute.latency_seconds),
        )
        .where(GatewayMinute.minute >= since)
        .group_by(GatewayMinute.gateway)
    ).all()
    out: dict[str, dict[str, Any]] = {}
    for gateway, requests, failures, ambiguous, latency in rows:
        requests = int(requests or 0)
        out[gateway] = {
            "window_minutes": minutes,
            "requests": requests,
            "definite_failures": int(failures or 0),
            "ambiguous": int(ambiguous or 0),
            "share": (int(failures or 0) / requests) if requests else None,
            "latency_mean_s": (float(latency or 0) / requests) if requests else None,
        }
    return out

"""Timestamp arithmetic in SQL, the one place that knows how each dialect spells it."""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import ColumnElement, Connection, Engine, func, literal
from sqlalchemy.types import Interval

from sms_pipeline.db.engine import is_sqlite


def lower_bound_plus_seconds(
    column: Any, seconds: int, bind: Engine | Connection
) -> ColumnElement[Any]:
    """`column + seconds` for a WHERE pre-filter: exact on PostgreSQL, never later than the
    true value on SQLite (whose text timestamps are shifted at millisecond precision, so a
    second is taken off). Callers needing the exact bound check it again in Python."""
    if is_sqlite(bind):
        # Stored as "YYYY-MM-DD HH:MM:SS.ffffff": strftime gives the same shape (to the
        # millisecond), so text comparison orders it like time.
        return func.strftime("%Y-%m-%d %H:%M:%f", column, f"+{int(seconds) - 1} seconds")
    result: ColumnElement[Any] = column + literal(dt.timedelta(seconds=seconds), Interval())
    return result


__all__ = ["lower_bound_plus_seconds"]

"""SQL that PostgreSQL and SQLite spell differently, written once for both.

Services ask for what they mean ("insert, ignore conflicts", "this table's name in raw
SQL") and never compare dialect names themselves. `bind` is whatever the caller holds: a
session, a connection or an engine.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, TypeVarTuple, cast

from sqlalchemy import (
    ColumnElement,
    Connection,
    Engine,
    Insert,
    Select,
    Table,
    any_,
    bindparam,
    func,
    text,
)
from sqlalchemy import cast as sql_cast
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from sms_pipeline.db.engine import is_sqlite
from sms_pipeline.db.models.base import SCHEMA

Bind = Session | Connection | Engine
Ts = TypeVarTuple("Ts")


def _on_sqlite(bind: Bind) -> bool:
    return is_sqlite(bind.get_bind() if isinstance(bind, Session) else bind)


def upsert_insert(bind: Bind, target: Table | type[Any]) -> postgresql.Insert | sqlite.Insert:
    """An INSERT that takes ON CONFLICT clauses (`on_conflict_do_update` / `_do_nothing`).

    Both dialects spell ON CONFLICT the same way, but SQLAlchemy builds it only on each
    dialect's own insert construct.
    """
    return sqlite.insert(target) if _on_sqlite(bind) else postgresql.insert(target)


def insert_ignore(bind: Bind, target: Table | type[Any], conflict: Sequence[str]) -> Insert:
    """INSERT … ON CONFLICT (`conflict`) DO NOTHING: a row whose key exists is skipped.

    With RETURNING only the rows actually inserted come back, so a caller learns which
    of its rows a concurrent writer (or an earlier run) stored first.
    """
    return upsert_insert(bind, target).on_conflict_do_nothing(index_elements=list(conflict))


def skip_locked(bind: Bind, query: Select[*Ts], *, of: Any = None) -> Select[*Ts]:
    """`query` locking the rows it reads and skipping rows another transaction holds, so
    concurrent workers take disjoint rows. SQLite has no row locks: its one writer at a
    time (BEGIN IMMEDIATE) already keeps two claims apart."""
    if _on_sqlite(bind):
        return query
    return query.with_for_update(skip_locked=True, of=of)


def claim_among(bind: Bind, column: Any, candidates: Select[Any]) -> ColumnElement[bool]:
    """`column` is one of the rows `candidates` selects, locked and skipping rows another
    transaction holds (SQLite: its one writer keeps two claims apart; a plain IN).

    PostgreSQL: `= ANY(ARRAY(subquery))` runs the locking subquery once (an InitPlan). With
    `IN (subquery)` and a big history the planner estimated one due row and re-ran the
    subquery per claimed row: 187 ms for 1,000 due rows among 1M rows, vs 41 ms.
    """
    if _on_sqlite(bind):
        return cast(ColumnElement[bool], column.in_(candidates.scalar_subquery()))
    locked = candidates.with_for_update(skip_locked=True)
    return cast(ColumnElement[bool], column == any_(func.array(locked.scalar_subquery())))


def lock_until_commit(session: Session, key: str) -> None:
    """Transactions that call this with the same `key` take turns until each commits:
    a PostgreSQL advisory transaction lock; SQLite's one writer (BEGIN IMMEDIATE) already
    serialises them."""
    if not _on_sqlite(session):
        session.execute(text("SELECT pg_advisory_xact_lock(hashtextextended(:k, 18))"), {"k": key})


def takes_arrays(bind: Bind) -> bool:
    """Whether one statement can take a whole column of values as one array parameter
    (PostgreSQL: `unnest`, `= ANY`). SQLite has none: write the rows one by one."""
    return not _on_sqlite(bind)


def has_percentiles(bind: Bind) -> bool:
    """Whether SQL can compute percentiles and histograms (PostgreSQL: `percentile_cont`,
    `width_bucket`); on SQLite the caller reads the rows and computes them."""
    return not _on_sqlite(bind)


def array_param(name: str, item_type: Any) -> Any:
    """A bound parameter that carries a list as one array (only where `takes_arrays`)."""
    return sql_cast(bindparam(name), postgresql.ARRAY(item_type))


def among(bind: Bind, column: Any, values: Sequence[Any]) -> ColumnElement[bool]:
    """`column IN values` for long lists: on PostgreSQL one array parameter (`= ANY`),
    planned once, instead of thousands of bind parameters."""
    if _on_sqlite(bind):
        return cast(ColumnElement[bool], column.in_(values))
    array = postgresql.ARRAY(column.type)
    return cast(
        ColumnElement[bool], column == any_(bindparam("among", value=list(values), type_=array))
    )


def schema_of(bind: Bind) -> str | None:
    """The schema our tables live in on this database (SQLite maps it away)."""
    return None if _on_sqlite(bind) else SCHEMA


def table_name(bind: Bind, name: str) -> str:
    """A table's name for hand-written SQL (text() gets no schema translation)."""
    found = schema_of(bind)
    return f"{found}.{name}" if found else name


def epoch_seconds(bind: Bind, column: str) -> str:
    """SQL for a timestamp column's whole seconds since 1970 (UTC), as an integer."""
    if _on_sqlite(bind):
        return f"CAST(strftime('%s', {column}) AS INTEGER)"
    return f"floor(extract(epoch FROM {column}))::bigint"


__all__ = [
    "Bind",
    "among",
    "array_param",
    "claim_among",
    "epoch_seconds",
    "has_percentiles",
    "insert_ignore",
    "lock_until_commit",
    "schema_of",
    "skip_locked",
    "table_name",
    "takes_arrays",
    "upsert_insert",
]

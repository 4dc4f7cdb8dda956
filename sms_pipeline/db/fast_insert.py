"""One prebuilt INSERT as a transaction of its own, as fast as each database allows.

PostgreSQL: on a connection each calling thread keeps, in autocommit, through psycopg
directly: no pool checkout and ping, no BEGIN/COMMIT, no SQLAlchemy execution machinery
per call (the statement is compiled once per database). A failed connection is dropped and
the INSERT tried once more on a fresh one. This is the hot path of a producer calling
`enqueue_sms` in a loop. SQLite: a connection of its own (`one_statement`), since it has
one writer and the caller's look-ups run with none open.
"""

from __future__ import annotations

import os
import threading
from typing import Any, cast

from sqlalchemy import Insert, Table

from sms_pipeline.db.engine import get_engine, is_sqlite, one_statement
from sms_pipeline.settings import Settings


class _HeldInsert:
    def __init__(self) -> None:
        self._local = threading.local()
        self._compiled: dict[tuple[str, Insert], Any] = {}
        self._defaults: dict[Table, dict[str, Any]] = {}

    def _statement(self, settings: Settings, statement: Insert) -> Any:
        key = (settings.database_url, statement)
        if key not in self._compiled:
            self._compiled[key] = statement.compile(dialect=get_engine(settings).dialect)
        return self._compiled[key]

    def _column_defaults(self, table: Table) -> dict[str, Any]:
        # Scalar column defaults SQLAlchemy would fill in at execution (attempts=0, ...).
        if table not in self._defaults:
            self._defaults[table] = {
                c.name: getattr(c.default, "arg", None)
                for c in table.columns
                if c.default is not None and getattr(c.default, "is_scalar", False)
            }
        return self._defaults[table]

    def _connection(self, settings: Settings) -> Any:
        import psycopg

        held = getattr(self._local, "conn", None)
        key = (os.getpid(), settings.database_url)
        if held is not None and self._local.key == key and not held.closed:
            return held
        url = get_engine(settings).url.set(drivername="postgresql")
        conn = psycopg.connect(url.render_as_string(hide_password=False), autocommit=True)
        self._local.conn, self._local.key = conn, (os.getpid(), settings.database_url)
        return conn

    def __call__(self, statement: Insert, values: dict[str, Any], settings: Settings) -> Any:
        import psycopg

        compiled = self._statement(settings, statement)
        params = compiled.construct_params(values)
        for name, default in self._column_defaults(cast(Table, statement.table)).items():
            if name not in values and params.get(name) is None:
                params[name] = default
        processors = compiled._bind_processors
        params = {k: (processors[k](v) if k in processors else v) for k, v in params.items()}
        sql = compiled.string
        for attempt in (1, 2):
            conn = self._connection(settings)
            try:
                row = conn.execute(sql, params).fetchone()
                return None if row is None else row[0]
            except psycopg.OperationalError:
                conn.close()
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")


_held_insert = _HeldInsert()


def insert_alone(statement: Insert, values: dict[str, Any], settings: Settings) -> Any:
    """Run `statement` (built once by the caller: it is a cache key) with `values` as a
    transaction of its own; the first column of the row it returns, or None for no row."""
    if not is_sqlite(settings.database_url):
        return _held_insert(statement, values, settings)
    with one_statement(settings) as conn:
        return conn.execute(statement, values).scalar()


__all__ = ["insert_alone"]

"""One-row INSERTs that are transactions of their own, fast: `enqueue_sms`'s hot path.

On PostgreSQL each producing thread keeps a connection in autocommit and runs the
statement through psycopg directly: no pool checkout and ping, no BEGIN/COMMIT, no
SQLAlchemy execution per call (the statement is compiled once). Elsewhere (SQLite, whose
one writer a held connection would block) a pooled connection runs it. Callers see the
same interface and SQLAlchemy's errors either way.
"""

from __future__ import annotations

import functools
import os
import threading
from collections.abc import Callable, Mapping
from typing import Any, TypeVar, cast

from sqlalchemy import Insert, Table

from sms_pipeline.db.engine import get_engine, is_sqlite, one_statement, scrubbed
from sms_pipeline.db.models import Account, SendStatus, SmsLog
from sms_pipeline.settings import Settings

T = TypeVar("T")

# The per-number lock of a code (psycopg's placeholder); `statements.lock_until_commit`
# takes the same lock through SQLAlchemy.
_NUMBER_LOCK_SQL = "SELECT pg_advisory_xact_lock(hashtextextended(%(k)s, 18))"
# How the held connection's statements are planned. psycopg prepares a statement after
# five runs; PostgreSQL then either plans it anew on every call (custom plans: 0.3 ms of a
# code's 1.3 ms) or keeps one generic plan, chosen by the statistics of that moment: made
# while the table was small, a code's plan was a scan of the whole table, kept as the table
# grew (2-3 ms a code until the next ANALYZE). Every statement here is a lookup by a key
# or a number with its own index, so: one generic plan, never a table scan (a table
# without an index for the lookup would still be scanned; enable_seqscan only prices it).
_PLANS = "-c plan_cache_mode=force_generic_plan -c enable_seqscan=off"


def insert_alone(statement: Insert, values: Mapping[str, Any], settings: Settings) -> Any | None:
    """Run a one-row `INSERT … RETURNING x` as a transaction of its own: x, or None when it
    inserted nothing. Keep `statement` in a constant (it is compiled once per database)."""
    if is_sqlite(settings.database_url):
        with one_statement(settings) as conn:
            return conn.execute(statement, dict(values)).scalar()
    return _held.insert(statement, values, settings)


def codes_alone(settings: Settings) -> bool:
    """Whether `insert_code_alone` runs on this database (else: a transaction that takes
    the number's lock, ends the older codes and inserts)."""
    return not is_sqlite(settings.database_url)


def insert_code_alone(
    statement: Insert, values: Mapping[str, Any], settings: Settings, *, lock: str, reason: str
) -> tuple[str | None, list[int]]:
    """A one-time code as one transaction, one round trip: the number's lock (`lock`), then
    one statement that ends the older codes of the same account, number and type (`reason`
    their last_error) and runs `statement` (`INSERT … RETURNING send_status`). Its send
    status (None: nothing inserted), and the attempts of each code it ended SUPERSEDED."""
    assert codes_alone(settings)
    return _held.code(statement, values, settings, lock, reason)


def held_rows(sql: str, params: Mapping[str, Any], settings: Settings) -> list[Any]:
    """One read on this thread's held connection (a `HeldRows` for `rows_alone`): the API's
    key check, on the connection its INSERT then uses."""
    return _held.run(settings, sql, lambda conn: list(conn.execute(sql, params).fetchall()))


class _Held:
    """This thread's PostgreSQL connection (autocommit) and the statements compiled for it."""

    def __init__(self) -> None:
        self._local = threading.local()
        self._compiled: dict[tuple[str, int], tuple[Insert, Any, dict[str, Any]]] = {}

    def _statement(self, statement: Insert, settings: Settings) -> tuple[Any, dict[str, Any]]:
        """The statement compiled for this database, and the scalar column defaults
        SQLAlchemy would fill in at execution (attempts=0, ...)."""
        key = (settings.database_url, id(statement))
        entry = self._compiled.get(key)
        if entry is None:
            # Kept with the statement: its id cannot be reused while cached.
            compiled = statement.compile(dialect=get_engine(settings).dialect)
            entry = (statement, compiled, _defaults(cast(Table, statement.table)))
            self._compiled[key] = entry
        return entry[1], entry[2]

    def _connection(self, settings: Settings) -> Any:
        import psycopg
        from psycopg.conninfo import conninfo_to_dict, make_conninfo

        held = getattr(self._local, "conn", None)
        key = (os.getpid(), settings.database_url)
        if held is not None and self._local.key == key and not held.closed:
            return held
        url = get_engine(settings).url.set(drivername="postgresql")
        conninfo = url.render_as_string(hide_password=False)
        options = f"{conninfo_to_dict(conninfo).get('options') or ''} {_PLANS}".strip()
        conn = psycopg.connect(make_conninfo(conninfo, options=options), autocommit=True)
        self._local.conn, self._local.key = conn, key
        return conn

    def _params(
        self, statement: Insert, values: Mapping[str, Any], settings: Settings
    ) -> tuple[Any, dict[str, Any]]:
        """The compiled statement and its parameters, as the driver takes them."""
        compiled, defaults = self._statement(statement, settings)
        params = compiled.construct_params(values)
        for name, default in defaults.items():
            if name not in values and params.get(name) is None:
                params[name] = default
        processors = compiled._bind_processors
        return compiled, {
            k: (processors[k](v) if k in processors else v) for k, v in params.items()
        }

    def run(self, settings: Settings, sql: str, work: Callable[[Any], T], *, tx: bool = False) -> T:
        """`work(conn)` on the held connection; a failed connection is dropped and `work`
        tried once more on a fresh one. `tx`: `work` is a pipeline that may fail inside its
        implicit transaction, so any failure drops the connection too."""
        import psycopg

        for attempt in (1, 2):
            conn = self._connection(settings)
            try:
                return work(conn)
            except psycopg.OperationalError as exc:
                conn.close()
                if attempt == 2:
                    raise _database_error(exc, sql) from exc
            except psycopg.Error as exc:
                if tx:
                    conn.close()  # never hand on a connection inside a failed transaction
                raise _database_error(exc, sql) from exc
            except BaseException:
                if tx:
                    conn.close()
                raise
        raise AssertionError("unreachable")

    def insert(self, statement: Insert, values: Mapping[str, Any], settings: Settings) -> Any:
        compiled, params = self._params(statement, values, settings)
        sql = compiled.string

        def work(conn: Any) -> Any:
            row = conn.execute(sql, params).fetchone()
            return None if row is None else row[0]

        return self.run(settings, sql, work)

    def code(
        self,
        statement: Insert,
        values: Mapping[str, Any],
        settings: Settings,
        lock: str,
        reason: str,
    ) -> tuple[str | None, list[int]]:
        # No BEGIN and COMMIT: in autocommit the statements of a pipeline before its Sync
        # run in one implicit transaction (the lock is held until the Sync commits the
        # INSERT, and an error rolls back both), and each statement still takes its own
        # snapshot, so the second sees every code committed before the lock was granted.
        compiled, params = self._params(statement, values, settings)
        params["superseded_reason"] = reason
        sql = _code_sql(compiled.string)

        def work(conn: Any) -> tuple[str | None, list[int]]:
            with conn.pipeline():
                conn.execute(_NUMBER_LOCK_SQL, {"k": lock})
                cursor = conn.execute(sql, params)
            row = cursor.fetchone()
            return (None, []) if row is None else (str(row[0]), list(row[1] or []))

        return self.run(settings, sql, work, tx=True)


_held = _Held()


def _defaults(table: Table) -> dict[str, Any]:
    return {
        c.name: getattr(c.default, "arg", None)
        for c in table.columns
        if c.default is not None and getattr(c.default, "is_scalar", False)
    }


def _database_error(exc: Exception, sql: str) -> Exception:
    """A psycopg error from a held connection as SQLAlchemy would raise it (IntegrityError,
    OperationalError, ...: what callers and the API's 503 handler expect), its server text
    scrubbed of row data (`engine.scrub_error`) and no parameters shown."""
    import psycopg
    from sqlalchemy.exc import DBAPIError

    scrubbed(exc)
    return DBAPIError.instance(sql, None, exc, psycopg.Error, hide_parameters=True)


@functools.cache
def _code_sql(insert_sql: str) -> str:
    """The one statement of a code: the older codes of the same account, number and type
    not yet submitted end SUPERSEDED (waiting ones) or are marked `superseded_by` (an
    attempt in flight: its answer is recorded as it comes, it is never attempted again),
    and the new row is inserted; RETURNING its status and the ended codes' attempts.

    Run after the number's lock in the same transaction (a later statement's snapshot sees
    every code committed by a producer that held the lock before), and only for an active
    account (the INSERT's own condition: no row inserted, nothing ended). The older codes
    are found by the number's index (ix_sms_log_phone_number).
    """
    log_table = cast(Table, SmsLog.__table__).fullname
    accounts = cast(Table, Account.__table__).fullname
    superseded = SendStatus.SUPERSEDED.value
    waiting, in_flight = SendStatus.QUEUED.value, SendStatus.SENDING.value
    ends = f"send_status = '{waiting}'"
    return (
        f"WITH older AS (UPDATE {log_table} SET"
        f" send_status = CASE WHEN {ends} THEN '{superseded}' ELSE send_status END,"
        f" final_at = CASE WHEN {ends} THEN %(inserted_at)s::TIMESTAMPTZ ELSE final_at END,"
        f" lease_until = CASE WHEN {ends} THEN NULL ELSE lease_until END,"
        f" last_error = CASE WHEN {ends} THEN %(superseded_reason)s::VARCHAR"
        " ELSE last_error END,"
        " superseded_by = %(id)s::UUID, updated_at = %(inserted_at)s::TIMESTAMPTZ"
        " WHERE phone_number = %(phone_number)s::VARCHAR AND account_id = %(account_id)s::INTEGER"
        " AND type = %(type)s::VARCHAR AND id <> %(id)s::UUID"
        f" AND ({ends} OR (send_status = '{in_flight}' AND superseded_by IS NULL))"
        f" AND EXISTS (SELECT 1 FROM {accounts} WHERE {accounts}.id = %(account_id)s::INTEGER"
        f" AND {accounts}.active IS true)"
        " RETURNING attempts, send_status) "
        f"{insert_sql}, (SELECT array_agg(attempts) FROM older"
        f" WHERE older.send_status = '{superseded}')"
    )

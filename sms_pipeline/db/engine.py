"""The one place that builds database engines and sessions.

PostgreSQL goes through psycopg 3 with a pool sized for the worker's threads. SQLite (the
embedded default) runs in WAL mode with a busy timeout so a worker, beat and the CLI can
share the file, and maps the `verification` schema away.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any, cast

from sqlalchemy import (
    Connection,
    CursorResult,
    Engine,
    Result,
    Select,
    create_engine,
    event,
    exc,
)
from sqlalchemy.engine import URL, Dialect, ExceptionContext, make_url
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.pool import ConnectionPoolEntry, PoolProxiedConnection

from sms_pipeline.db.files import private_folder, private_sqlite_file
from sms_pipeline.db.models.base import SCHEMA
from sms_pipeline.settings import Settings, get_settings

log = logging.getLogger(__name__)

_lock = threading.Lock()
_engines: dict[str, Engine] = {}
_sessionmakers: dict[str, sessionmaker[Session]] = {}


def normalise_url(url: str | URL) -> URL:
    """Force the psycopg 3 driver for PostgreSQL URLs."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "postgresql" and parsed.get_driver_name() != "psycopg":
        parsed = parsed.set(drivername="postgresql+psycopg")
    return parsed


def is_sqlite(bind: Engine | Connection | str | URL) -> bool:
    if isinstance(bind, Engine | Connection):
        return bind.dialect.name == "sqlite"
    return _url_is_sqlite(bind)


def is_file_database(url: str | URL) -> bool:
    """The database is a file on this host (SQLite), not a server that many hosts share."""
    return _url_is_sqlite(url)


@functools.lru_cache(maxsize=64)
def _url_is_sqlite(url: str | URL) -> bool:
    # Asked on every enqueue: parsing the URL costs more than the answer is worth.
    return make_url(url).get_backend_name() == "sqlite"


def affected(result: Result[Any]) -> int:
    """Rows matched by an UPDATE/DELETE (session.execute types it as a plain Result)."""
    return int(cast(CursorResult[Any], result).rowcount)


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    # Autocommit at the driver level; SQLAlchemy's "begin" hook below opens transactions.
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    # Deleted and overwritten content (erased numbers, redacted codes) is zeroed, not left
    # in free pages; `truncate_wal` then removes the WAL's older copies.
    cursor.execute("PRAGMA secure_delete=ON")
    cursor.close()


def _sqlite_begin(conn: Any) -> None:
    # BEGIN IMMEDIATE takes the write lock up front: a deferred transaction that reads and
    # then writes would fail with "database is locked" instead of waiting its turn.
    conn.exec_driver_sql("BEGIN IMMEDIATE")


def scrub_error(context: ExceptionContext) -> None:
    """Take row data out of a PostgreSQL error before anything prints or logs it.

    `hide_parameters` keeps the statement's parameters out of the exception, but the
    server's own text can quote the row: a constraint's DETAIL says "Failing row contains
    (..., +380931234567, ..., Your code is 987654)", and a data exception (SQLSTATE class
    22) quotes the bad value. What is left: the error's class, SQLSTATE, the primary
    message (no values) and the table, column and constraint names.
    """
    orig = context.original_exception
    text = scrubbed(orig)
    if text is None:
        return
    wrapped = context.sqlalchemy_exception
    if wrapped is not None and wrapped.args:
        name = f"{type(orig).__module__}.{type(orig).__name__}"
        wrapped.args = (f"({name}) {text}", *wrapped.args[1:])


def scrubbed(orig: BaseException) -> str | None:
    """`scrub_error` for a psycopg error raised outside SQLAlchemy (a statement run on a
    held psycopg connection): its text without row data, set on it and returned (None when
    there is nothing to take out)."""
    diag = getattr(orig, "diag", None)
    sqlstate = getattr(orig, "sqlstate", None)
    if diag is None or not sqlstate:
        # Not psycopg (SQLite's messages name columns, never values), or no server answer
        # (a connection failure: libpq's message holds no row data and says what failed).
        return None
    primary = str(diag.message_primary or "database error")
    if sqlstate.startswith("22"):
        primary = "data exception: a value was refused"
    where = [
        f"{label} {value}"
        for label, value in (
            ("table", diag.table_name),
            ("column", diag.column_name),
            ("constraint", diag.constraint_name),
        )
        if value
    ]
    text = f"{primary} (SQLSTATE {sqlstate}{'; ' if where else ''}{', '.join(where)})"
    orig.args = (text,)
    return text


def make_engine(
    url: str | URL,
    *,
    pool_size: int = 5,
    echo: bool = False,
    clock: Callable[[], float] = time.monotonic,
) -> Engine:
    """A new engine for `url` (callers normally want `get_engine()`); `clock` times how long
    a pooled PostgreSQL connection sat idle (see `ping_after_idle`)."""
    parsed = normalise_url(url)
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            database = Path(os.path.abspath(parsed.database))
            if not database.parent.exists():
                private_folder(database.parent)
            private_sqlite_file(database)  # 0600: -wal and -shm inherit its mode
        engine = create_engine(
            parsed,
            echo=echo,
            # Statement parameters hold numbers and bodies (codes): never in an exception.
            hide_parameters=True,
            connect_args={"timeout": 30, "check_same_thread": False},
            pool_size=pool_size,
            max_overflow=pool_size,
            pool_pre_ping=False,
        ).execution_options(schema_translate_map={SCHEMA: None})
        event.listen(engine, "connect", _sqlite_pragmas)
        event.listen(engine, "begin", _sqlite_begin)
        return engine
    pg_engine = create_engine(
        parsed,
        echo=echo,
        hide_parameters=True,
        pool_size=pool_size,
        max_overflow=pool_size,
        pool_pre_ping=False,  # ping_after_idle below: only connections that sat in the pool
        pool_recycle=1800,
    )
    event.listen(pg_engine, "handle_error", scrub_error)
    ping_after_idle(pg_engine, clock=clock)
    return pg_engine


PING_AFTER_IDLE_SECONDS = 1.0
_RETURNED_AT = "sms_pipeline_returned_at"


def ping_after_idle(
    engine: Engine,
    *,
    idle_seconds: float = PING_AFTER_IDLE_SECONDS,
    clock: Callable[[], float] = time.monotonic,
) -> None:
    """Ping a pooled connection on checkout only when it sat unused for `idle_seconds`.

    `pool_pre_ping` pings on every checkout: a round trip that was ~0.15 ms of a ~1.2 ms
    `enqueue_sms` in a caller's session, and of every task's checkout in the worker. A
    connection returned to the pool a moment ago was working then; the ones a restart, a
    failover or an idle timeout killed are the ones that sat. A failed ping invalidates the
    whole pool, as pre-ping does (SQLAlchemy's checkout-event recipe: the pool then hands
    out a new connection). A server that dies between a connection's last use and its
    next checkout within `idle_seconds` fails that one statement; SQLAlchemy then
    invalidates the pool and the caller's retry gets a new connection, which is also what
    happens to a server that dies between a pre-ping and the statement.
    """
    dialect: Dialect = engine.dialect

    def stamp(dbapi_connection: Any, record: ConnectionPoolEntry) -> None:
        record.info[_RETURNED_AT] = clock()  # new (just connected) or just used: alive

    def checkout(
        dbapi_connection: Any, record: ConnectionPoolEntry, proxy: PoolProxiedConnection
    ) -> None:
        returned = record.info.get(_RETURNED_AT)
        if returned is not None and clock() - returned < idle_seconds:
            return
        try:
            dialect.do_ping(dbapi_connection)
        except dialect.loaded_dbapi.Error as error:
            if dialect.is_disconnect(error, dbapi_connection, None):
                raise exc.InvalidatePoolError() from error
            raise

    event.listen(engine, "connect", stamp)
    event.listen(engine, "checkin", stamp)
    event.listen(engine, "checkout", checkout)


def get_engine(settings: Settings | None = None) -> Engine:
    """The process-wide engine for the configured database, pool sized for the worker."""
    settings = settings or get_settings()
    url = settings.database_url
    with _lock:
        engine = _engines.get(url)
        if engine is not None:
            return engine
        if settings.is_embedded_database:
            private_folder(settings.sms_data_dir)  # 0700, also when an older version made it
        engine = make_engine(url, pool_size=settings.sms_worker_concurrency + 2)
        if settings.is_embedded_database:
            # Embedded mode migrates its own file on first use (PostgreSQL stays explicit:
            # `sms-pipeline db upgrade`). Two processes starting at once take turns on
            # SQLite's write lock; the second finds the schema at head and does nothing.
            from sms_pipeline.db import migrate

            # Read the scripts first: the write lock is then held for a short SELECT,
            # and for the migration itself only when the file is behind.
            if migrate.current(engine) != migrate.head():
                migrate.upgrade(engine)
        _engines[url] = engine
        return engine


def get_sessionmaker(settings: Settings | None = None) -> sessionmaker[Session]:
    settings = settings or get_settings()
    url = settings.database_url
    with _lock:
        maker = _sessionmakers.get(url)
    if maker is None:
        maker = sessionmaker(get_engine(settings), expire_on_commit=False)
        with _lock:
            maker = _sessionmakers.setdefault(url, maker)
    return maker


@contextlib.contextmanager
def session_scope(settings: Settings | None = None) -> Iterator[Session]:
    """A session in one transaction: committed on success, rolled back on error."""
    session = get_sessionmaker(settings)()
    try:
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()


def truncate_wal(engine: Engine) -> tuple[int, int, int] | None:
    """SQLite: checkpoint the WAL into the database file and truncate it to 0 bytes.

    After a redaction or an erasure the WAL still holds the pages as they were (a code,
    a number: 15 copies of one code were found in one); with `secure_delete` on, the
    database file holds only the new content. Returns SQLite's (busy, frames, checkpointed),
    or None for PostgreSQL. A reader holding the WAL makes it busy (1): the next one runs.
    """
    if not is_sqlite(engine):
        return None
    with engine.connect() as conn:
        # The driver connection is in autocommit: no BEGIN IMMEDIATE around the pragma.
        raw = conn.connection.driver_connection
        assert raw is not None
        row = raw.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
    return (int(row[0]), int(row[1]), int(row[2])) if row else None


def forget_old_copies(engine: Engine, tries: int = 3) -> None:
    """SQLite: truncate the WAL, so no copy of overwritten pages stays (tried again while a
    reader keeps it busy). PostgreSQL: nothing to do (its WAL and dead tuples are the
    server's; VACUUM)."""
    for _ in range(tries):
        outcome = truncate_wal(engine)
        if outcome is None or not outcome[0]:
            return
    log.warning("the WAL checkpoint was busy; old copies stay until the next one")


def forget_old_copies_after_commit(session: Session) -> None:
    """`forget_old_copies` once `session`'s transaction commits (SQLite only)."""
    engine = session.get_bind().engine
    if is_sqlite(engine):
        event.listen(session, "after_commit", lambda _s: forget_old_copies(engine), once=True)


@contextlib.contextmanager
def autocommit_connection(engine: Engine) -> Iterator[Connection]:
    """A connection on which each statement is its own transaction (run through `alone`).

    PostgreSQL: autocommit, so a lone INSERT or UPDATE costs one round trip instead of
    three (BEGIN, the statement, COMMIT). SQLite: a plain connection, each statement in a
    short transaction, because autocommit there would still run our BEGIN IMMEDIATE hook
    and then roll the statement back.
    """
    conn = engine.connect()
    if not is_sqlite(engine):
        conn = conn.execution_options(isolation_level="AUTOCOMMIT")
    with conn:
        yield conn


@contextlib.contextmanager
def alone(conn: Connection) -> Iterator[Connection]:
    """Around one statement on an `autocommit_connection`: committed when the block ends."""
    if is_sqlite(conn):
        with conn.begin():
            yield conn
    else:
        yield conn


@contextlib.contextmanager
def one_statement(settings: Settings | None = None) -> Iterator[Connection]:
    """A connection for one statement that is its own transaction (it commits on exit)."""
    with autocommit_connection(get_engine(settings)) as conn, alone(conn):
        yield conn


# A read on a connection the caller holds (enqueue's per-thread PostgreSQL connection):
# driver SQL with its placeholders, the parameters, the settings; rows back.
HeldRows = Callable[[str, Mapping[str, Any], Settings], list[Any]]

_compiled: dict[tuple[str, int], tuple[Select[Any], str]] = {}


def rows_alone(
    statement: Select[Any],
    params: Mapping[str, Any],
    settings: Settings,
    held_rows: HeldRows | None = None,
) -> list[Any]:
    """One read as a statement of its own (autocommit): on PostgreSQL through the caller's
    held connection when it passes one (`statement` compiled once per database; keep it
    in a constant), else through a pooled connection (SQLite, where a held connection
    would block the one writer)."""
    if held_rows is None or is_sqlite(settings.database_url):
        with one_statement(settings) as conn:
            return list(conn.execute(statement, dict(params)).all())
    key = (settings.database_url, id(statement))
    entry = _compiled.get(key)
    if entry is None:
        # The statement is kept with its SQL: its id cannot be reused while cached.
        entry = (statement, str(statement.compile(dialect=get_engine(settings).dialect)))
        _compiled[key] = entry
    return held_rows(entry[1], params, settings)


def dispose_engines() -> None:
    """Close every pooled connection (after fork, in tests, at shutdown)."""
    with _lock:
        engines = list(_engines.values())
        _engines.clear()
        _sessionmakers.clear()
    for engine in engines:
        engine.dispose()


# A forked child must not reuse the parent's sockets.
def _forget_after_fork() -> None:
    _engines.clear()
    _sessionmakers.clear()


os.register_at_fork(after_in_child=_forget_after_fork)

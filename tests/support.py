"""What the tests and the benchmarks share: servers of their own, ports, polling, figures.

Both tests/ (conftest.py, the fault suite) and bench/ (common.py) import this module, so
that the rules every run must keep are written once: the lock key that claims a Redis db
(a test run and a bench run at the same time must not take the same one), how a database
of our own is created and dropped, how the pipeline's tables are emptied. It lives in
tests/ because the tests are the larger user; it imports nothing from `sms_pipeline` at
module level, since the test and bench set their environment before the pipeline is
imported (the Celery app reads its broker at import).
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import psycopg
import redis
from sqlalchemy import Engine, text

PG_ADMIN_URL = os.environ.get(
    "SMS_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)
REDIS_BASE_URL = os.environ.get("SMS_TEST_REDIS_URL", "redis://127.0.0.1:6379")
REDIS_DBS = range(1, 16)  # db 0 holds only the lock keys


# --- a Redis db of our own ------------------------------------------------------------


def _lock_key(number: int) -> str:
    return f"sms-pipeline-tests:lock:{number}"


def claim_redis_db() -> int:
    """Take a Redis db number no other test or bench run holds (a lock key in db 0) and
    empty it: leftovers of a crashed run would skew the next. RuntimeError when all are
    held; redis.RedisError when Redis does not answer."""
    client = redis.Redis.from_url(f"{REDIS_BASE_URL}/0", socket_connect_timeout=2)
    for number in REDIS_DBS:
        if client.set(_lock_key(number), os.getpid(), nx=True, ex=7200):
            redis.Redis.from_url(f"{REDIS_BASE_URL}/{number}").flushdb()
            return number
    raise RuntimeError("every Redis db 1-15 is held by another test or bench run")


def release_redis_db(number: int) -> None:
    """Empty the claimed db and give it back."""
    redis.Redis.from_url(f"{REDIS_BASE_URL}/{number}").flushdb()
    redis.Redis.from_url(f"{REDIS_BASE_URL}/0").delete(_lock_key(number))


# --- a PostgreSQL database of our own -------------------------------------------------


def database_url(name: str) -> str:
    """The SQLAlchemy URL of database `name` on the admin URL's server."""
    return PG_ADMIN_URL.rsplit("/", 1)[0] + "/" + name


def _admin_dsn() -> str:
    return PG_ADMIN_URL.replace("postgresql+psycopg://", "postgresql://")


def create_database(name: str) -> None:
    with psycopg.connect(_admin_dsn(), autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')


def drop_database(name: str) -> None:
    """Drop `name`, whatever connection still holds it (FORCE)."""
    with psycopg.connect(_admin_dsn(), autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def empty_tables(engine: Engine) -> None:
    """Empty every pipeline table, ids restarting from 1 (one statement: no FK order)."""
    from sms_pipeline.db.models import Base

    tables = ", ".join(f"verification.{t.name}" for t in Base.metadata.sorted_tables)
    with engine.begin() as conn:
        conn.execute(text(f"TRUNCATE {tables} RESTART IDENTITY CASCADE"))


def delete_rows(engine: Engine) -> None:
    """What `empty_tables` does, by DELETE (children first) and each sequence of the schema
    set back to its start. The tests' `db` fixture runs it after every test, on the few rows
    a test leaves: there it takes a tenth of TRUNCATE's time, which makes new files for
    every table."""
    from sms_pipeline.db.models import Base

    with engine.begin() as conn:
        for table in reversed(Base.metadata.sorted_tables):
            conn.execute(text(f"DELETE FROM verification.{table.name}"))
        conn.execute(
            text(
                "SELECT setval(format('%I.%I', schemaname, sequencename)::regclass, "
                "start_value, false) FROM pg_sequences WHERE schemaname = 'verification'"
            )
        )


# --- ports, polling, figures ----------------------------------------------------------


def free_port() -> int:
    """A loopback port free at this moment (the caller binds it soon after)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_until(
    condition: Callable[[], object],
    timeout: float,
    what: str | Callable[[], str],
    interval: float = 0.05,
    *,
    retry_errors: bool = False,
) -> float:
    """Poll `condition` until it holds; returns time.perf_counter() at that moment (the
    benchmarks time with it). AssertionError naming `what` (or what it returns then) after
    `timeout` seconds. With `retry_errors`, an exception from `condition` (a server
    restarting) counts as "not yet" until the deadline, then is raised. The one wait of
    the tests and benchmarks."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            if condition():
                return time.perf_counter()
        except Exception:
            if not retry_errors or time.monotonic() > deadline:
                raise
        if time.monotonic() > deadline:
            said = what() if callable(what) else what
            raise AssertionError(f"timed out after {timeout:g} s waiting for {said}")
        time.sleep(interval)


def merge_json(path: Path, values: Mapping[str, Any]) -> None:
    """Merge `values` into the JSON object in `path` (created, or replaced when unreadable).

    Under a lock file: `make test` runs its tests in parallel processes (pytest-xdist),
    and two read-merge-writes at once would drop one process's figures."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_name(path.name + ".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            data = {}
        data.update(values)
        text_ = json.dumps(data, indent=2, sort_keys=True, default=str) + "\n"
        path.write_text(text_, encoding="utf-8")

"""The PostgreSQL pool pings a connection only after it sat idle (db/engine.py).

Real PostgreSQL; a backend is killed with pg_terminate_backend, as a restart or an idle
timeout would; the idle time is a clock the test moves.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import Engine, text
from sqlalchemy.exc import OperationalError

from sms_pipeline.db.engine import PING_AFTER_IDLE_SECONDS, make_engine


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def engine(pg_engine: Engine, clock: Clock) -> Iterator[Engine]:
    engine = make_engine(pg_engine.url, pool_size=1, clock=clock)
    yield engine
    engine.dispose()


@pytest.fixture
def pings(engine: Engine, monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    seen: list[Any] = []
    real = engine.dialect.do_ping

    def counting(dbapi_connection: Any) -> bool:
        seen.append(dbapi_connection)
        return real(dbapi_connection)

    monkeypatch.setattr(engine.dialect, "do_ping", counting)
    return seen


def backend_pid(engine: Engine) -> int:
    with engine.connect() as conn:
        return int(conn.execute(text("SELECT pg_backend_pid()")).scalar_one())


def kill(pg_engine: Engine, pid: int) -> None:
    with pg_engine.connect() as conn:
        assert conn.execute(text("SELECT pg_terminate_backend(:p)"), {"p": pid}).scalar()


def test_a_connection_used_a_moment_ago_is_handed_out_without_a_ping(
    engine: Engine, clock: Clock, pings: list[Any]
) -> None:
    first = backend_pid(engine)  # a new connection: alive, not pinged either
    clock.now += PING_AFTER_IDLE_SECONDS / 2
    assert backend_pid(engine) == first
    assert pings == []


def test_a_connection_that_sat_idle_is_pinged_on_checkout(
    engine: Engine, clock: Clock, pings: list[Any]
) -> None:
    first = backend_pid(engine)
    clock.now += PING_AFTER_IDLE_SECONDS + 0.1
    assert backend_pid(engine) == first
    assert len(pings) == 1
    clock.now += 0.1  # just returned after that use: no second ping
    backend_pid(engine)
    assert len(pings) == 1


def test_a_connection_killed_while_idle_is_replaced_on_checkout(
    pg_engine: Engine, engine: Engine, clock: Clock, pings: list[Any]
) -> None:
    first = backend_pid(engine)
    kill(pg_engine, first)
    clock.now += PING_AFTER_IDLE_SECONDS + 0.1
    second = backend_pid(engine)  # no error reaches the caller
    assert second != first
    assert len(pings) == 1


def test_a_connection_killed_within_the_idle_window_fails_once_then_is_replaced(
    pg_engine: Engine, engine: Engine, clock: Clock
) -> None:
    # The documented trade-off: not pinged, so its statement fails (as one would after a
    # pre-ping when the server dies in between); the pool is invalidated and the next
    # checkout connects anew.
    first = backend_pid(engine)
    kill(pg_engine, first)
    with pytest.raises(OperationalError), engine.connect() as conn:
        conn.execute(text("SELECT 1"))
    assert backend_pid(engine) != first

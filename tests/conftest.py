"""Shared fixtures: real PostgreSQL and Redis (a database and a Redis db of our own).

The environment is set here, before any test imports `sms_pipeline`, because the Celery
app reads its broker from settings at import. Without PostgreSQL or Redis the tests that
need them are skipped with the reason printed; under CI=true a missing service fails.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from tests.helpers import Published
from tests.support import (
    PG_ADMIN_URL,
    REDIS_BASE_URL,
    claim_redis_db,
    create_database,
    database_url,
    delete_rows,
    drop_database,
    release_redis_db,
)

CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}
TEST_DB_NAME = f"sms_test_{os.getpid()}_{uuid.uuid4().hex[:8]}"
_TMP = tempfile.mkdtemp(prefix="sms-pipeline-tests-")


def _probe_postgres() -> str | None:
    try:
        import psycopg

        dsn = PG_ADMIN_URL.replace("postgresql+psycopg://", "postgresql://")
        with psycopg.connect(dsn, connect_timeout=3):
            return None
    except Exception as exc:
        return f"PostgreSQL not reachable at {PG_ADMIN_URL}: {type(exc).__name__}"


def _claim_redis_db() -> tuple[int | None, str | None]:
    """The Redis db this run claimed, or why there is none (shown, or a failure under CI)."""
    try:
        return claim_redis_db(), None
    except RuntimeError as exc:
        return None, str(exc)
    except Exception as exc:
        return None, f"Redis not reachable at {REDIS_BASE_URL}: {type(exc).__name__}"


PG_PROBLEM = _probe_postgres()
REDIS_DB, REDIS_PROBLEM = _claim_redis_db()
PG_TEST_URL = database_url(TEST_DB_NAME)
REDIS_TEST_URL = f"{REDIS_BASE_URL}/{REDIS_DB}" if REDIS_DB is not None else None

os.environ["SMS_DATA_DIR"] = _TMP
os.environ["SMS_DATABASE_URL"] = PG_TEST_URL if PG_PROBLEM is None else f"sqlite:///{_TMP}/t.db"
os.environ["SMS_BROKER_URL"] = REDIS_TEST_URL or "memory://"
os.environ.pop("SMS_REDIS_URL", None)
# Fast clocks for tests; each test may change more through `settings_env`.
os.environ.setdefault("SMS_RETRY_BACKOFF_SECONDS", "0.2")
os.environ.setdefault("SMS_RETRY_BACKOFF_MAX_SECONDS", "2")
os.environ.setdefault("SMS_WORKER_CONCURRENCY", "8")
os.environ.setdefault("IP2SMS_READ_TIMEOUT", "3")
# The keyed hash of docs/privacy.md (required with PostgreSQL); a fixed test value.
os.environ.setdefault("SMS_PRIVACY_KEY", "test-privacy-key-not-a-secret")
# Tests run production-shaped processes (PostgreSQL, Redis) against the simulator on
# loopback, which production refuses (fail closed); tests of that refusal unset it.
os.environ.setdefault("SMS_ALLOW_SIMULATOR", "true")


def require(problem: str | None) -> None:
    if problem is None:
        return
    if CI:
        pytest.fail(f"CI=true and a required service is missing: {problem}")
    pytest.skip(problem)


def pytest_report_header(config: Any) -> list[str]:
    return [
        f"postgres: {'ok (' + TEST_DB_NAME + ')' if PG_PROBLEM is None else PG_PROBLEM}",
        f"redis: {'ok (db ' + str(REDIS_DB) + ')' if REDIS_PROBLEM is None else REDIS_PROBLEM}",
    ]


def pytest_collection_modifyitems(items: list[Any]) -> None:
    """schemathesis 4.32 on pytest 9.2 gives every operation of a fuzzed test one node id,
    the test's name without the operation: pytest-xdist, which keys its work by node id,
    then ran one of the five. Each gets the id its name shows (`test_x[POST /v1/messages]`)."""
    from _pytest.nodeid import coerce_node_id

    for item in items:
        if "[" in item.name and not item.nodeid.endswith("]"):
            item._id = coerce_node_id(item.nodeid + item.name[item.name.index("[") :])


_FIGURE_LINES: list[str] = []


def pytest_runtest_logreport(report: Any) -> None:
    """Keep the fault suite's `FIGURE:` lines from each test's captured output: it reaches
    this process's reports whether the test ran here or in a pytest-xdist worker."""
    if report.when == "call":
        _FIGURE_LINES.extend(
            line for line in report.capstdout.splitlines() if line.startswith("FIGURE: ")
        )


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if _FIGURE_LINES:
        terminalreporter.section("reliability figures")
        for line in _FIGURE_LINES:
            terminalreporter.write_line(line)


def pytest_sessionfinish(session: Any, exitstatus: int) -> None:
    if REDIS_DB is not None:
        with contextlib.suppress(Exception):
            release_redis_db(REDIS_DB)


@pytest.fixture
def settings_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """Set environment variables for one test; settings are re-read after each change."""
    from sms_pipeline.settings import get_settings, reset_settings_cache

    def apply(**values: object) -> Any:
        for key, value in values.items():
            monkeypatch.setenv(key.upper(), str(value))
        reset_settings_cache()
        return get_settings()

    reset_settings_cache()
    yield apply
    monkeypatch.undo()
    reset_settings_cache()


@pytest.fixture(scope="session")
def pg_engine() -> Iterator[Any]:
    """The session's own PostgreSQL database, migrated to head; dropped at the end."""
    require(PG_PROBLEM)
    from sms_pipeline.db import dispose_engines, get_engine, migrate

    create_database(TEST_DB_NAME)
    try:
        engine = get_engine()
        assert engine.url.database == TEST_DB_NAME
        migrate.upgrade(engine)
        yield engine
    finally:
        from sms_pipeline.metrics.store import shutdown_store

        shutdown_store()  # its last flush needs the database we are about to drop
        dispose_engines()
        drop_database(TEST_DB_NAME)


@pytest.fixture
def db(pg_engine: Any) -> Iterator[Any]:
    """A clean PostgreSQL database for one test (every pipeline table emptied after)."""
    yield pg_engine
    # The process's metrics store flushes in the background: what this test buffered would
    # land in the next test's tables. It flushes now, before they are emptied.
    from sms_pipeline.metrics.store import shutdown_store

    shutdown_store()
    delete_rows(pg_engine)
    # Ids restart: names cached by enqueue (and the metrics) would point at other accounts.
    from sms_pipeline.metrics.hooks import forget_account_names
    from sms_pipeline.services.intake.enqueue import forget_accounts

    forget_accounts()
    forget_account_names()
    # The gateways table just emptied: its cached copy and the gateways' health go too, or
    # the next test routes to the gateways (and simulators) of this one.
    from sms_pipeline.services.gateways import health, registry

    registry.forget()
    health.HEALTH.reset()
    if REDIS_TEST_URL is not None:
        import redis

        from sms_pipeline.broker import dispatch
        from sms_pipeline.broker.dispatch import QueueClass, flag_key

        dispatch._flag_seen.clear()  # flags this process saw are deleted just below

        with contextlib.suppress(redis.RedisError):
            # Kicks left by this test would drain the next test's rows behind its back.
            keys = [flag_key(q) for q in QueueClass] + [q.value for q in QueueClass]
            redis.Redis.from_url(REDIS_TEST_URL).delete(*keys)


@pytest.fixture
def no_dispatch(monkeypatch: pytest.MonkeyPatch) -> Published:
    """Publishes kept in the returned list instead of reaching the broker."""
    from tests.helpers import capture_publishes

    return capture_publishes(monkeypatch)


@pytest.fixture(scope="session")
def redis_url() -> str:
    require(REDIS_PROBLEM)
    assert REDIS_TEST_URL is not None
    return REDIS_TEST_URL


@pytest.fixture
def simulator(request: pytest.FixtureRequest, settings_env: Any) -> Iterator[Any]:
    """The IP2SMS simulator on a free loopback port, with settings pointing at it.

    A test changes its configuration through indirect parametrisation:
    `@pytest.mark.parametrize("simulator", [{"slow_seconds": 1.0}], indirect=True)`.
    """
    from sms_pipeline.simulator import SimulatorConfig, running_simulator
    from sms_pipeline.simulator.inbound import inbound_routes

    values: dict[str, Any] = {
        "host": "127.0.0.1",
        "port": 0,
        "login": "demo",
        "password": "demo",
        "enroute_after": 0.2,
        "deliver_after": 0.4,
        "slow_seconds": 5.0,
        "extra_routes": (inbound_routes(),),
    }
    config = SimulatorConfig(**{**values, **getattr(request, "param", {})})
    with running_simulator(config) as base_url:
        settings_env(
            IP2SMS_SEND_URL=f"{base_url}/ip2sms/",
            IP2SMS_STATUS_URL=f"{base_url}/ip2sms-request/",
            IP2SMS_LOGIN="demo",
            IP2SMS_PASSWORD="demo",
            IP2SMS_INBOUND_URL=f"{base_url}/ip2sms-inbound/",
        )
        yield SimulatorHandle(base_url)


class SimulatorHandle:
    """Talks to the simulator's introspection endpoints."""

    def __init__(self, base_url: str) -> None:
        self.base_url = base_url

    def stats(self) -> dict[str, Any]:
        import requests

        answer = requests.get(f"{self.base_url}/_sim/stats", timeout=5)
        answer.raise_for_status()
        result: dict[str, Any] = answer.json()
        return result

    def _submissions(self, uniq_key: str) -> dict[str, Any]:
        import requests

        answer = requests.get(
            f"{self.base_url}/_sim/submissions", params={"uniq_key": uniq_key}, timeout=5
        )
        answer.raise_for_status()
        result: dict[str, Any] = answer.json()
        return result

    def submissions(self, uniq_key: str) -> int:
        return int(self._submissions(uniq_key)["submissions"])

    def accepted(self, uniq_key: str) -> bool:
        """Whether the gateway holds a message with this uniq_key (a slow one, late)."""
        return self._submissions(uniq_key)["gateway_id"] is not None


@pytest.fixture
def worker(db: Any, redis_url: str, simulator: Any) -> Iterator[Any]:
    """A real Celery worker (threads pool) in this process, on the test's Redis db."""
    from celery.contrib.testing.worker import start_worker

    from sms_pipeline.broker.app import app

    with start_worker(
        app,
        pool="threads",
        concurrency=8,
        perform_ping_check=False,
        loglevel="WARNING",
        shutdown_timeout=30,
    ) as controller:
        yield controller

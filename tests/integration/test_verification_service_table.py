"""Replication against the verification service's REAL table, created before `db upgrade`.

Production has `verification.verifications` already, made by the verification service
(ehealth-ua/otp_verification.api, Ecto migrations 2017-05 to 2018-04); our migration
leaves it alone. Each test here builds a fresh PostgreSQL database, runs that exact DDL
first, then `sms-pipeline db upgrade`, and writes rows the way the service does (a new
code for a number first cancels the previous one). A trigger refuses any write to the
table that does not come from the "service" connection, so the pipeline provably never
writes it.
"""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from sqlalchemy import inspect

from sms_pipeline.db import dispose_engines, get_engine, migrate
from sms_pipeline.db.engine import make_engine
from sms_pipeline.db.models import utcnow
from sms_pipeline.services import status
from sms_pipeline.services.intake import replication
from tests.conftest import TEST_DB_NAME
from tests.helpers import capture_publishes, repeating
from tests.support import PG_ADMIN_URL, wait_until

# The service's table, column for column (Ecto :string is varchar(255), timestamps are
# `timestamp without time zone` in UTC).
REAL_DDL = """
CREATE SCHEMA IF NOT EXISTS verification;
CREATE TABLE verification.verifications (
    id uuid PRIMARY KEY,
    phone_number varchar(255) NOT NULL,
    check_digit integer NOT NULL,
    status varchar(255) NOT NULL,
    code integer NOT NULL,
    code_expired_at timestamp NOT NULL,
    active boolean DEFAULT true,
    attempts_count integer DEFAULT 0,
    inserted_at timestamp NOT NULL{extra}
);
CREATE UNIQUE INDEX verifications_phone_number_index
    ON verification.verifications (phone_number) WHERE active;
-- Test only: every write must come from the service's own connection.
CREATE FUNCTION verification.only_the_service_writes() RETURNS trigger AS $$
BEGIN
    IF current_setting('application_name') <> 'verification-service' THEN
        RAISE EXCEPTION 'verifications written by %', current_setting('application_name');
    END IF;
    RETURN COALESCE(NEW, OLD);
END $$ LANGUAGE plpgsql;
CREATE TRIGGER only_the_service_writes BEFORE INSERT OR UPDATE OR DELETE
    ON verification.verifications FOR EACH ROW
    EXECUTE FUNCTION verification.only_the_service_writes();
"""
SERVICE = "verification-service"


def cli_upgrade(url: str) -> None:
    cli = Path(sys.executable).with_name("sms-pipeline")
    env = {**os.environ, "SMS_DATABASE_URL": url}
    subprocess.run([str(cli), "db", "upgrade"], env=env, check=True, timeout=120)


@pytest.fixture
def fresh_pg(pg_engine: Any, settings_env: Any) -> Iterator[Callable[[str | None], str]]:
    """make(ddl): a new database with `ddl` run first; settings point at it. Returns its DSN."""
    admin = PG_ADMIN_URL.replace("postgresql+psycopg://", "postgresql://")
    made: list[str] = []

    def make(ddl: str | None) -> str:
        name = f"{TEST_DB_NAME}_svc{len(made)}"
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        made.append(name)
        url = PG_ADMIN_URL.rsplit("/", 1)[0] + "/" + name
        dsn = url.replace("postgresql+psycopg://", "postgresql://")
        if ddl is not None:
            with psycopg.connect(dsn, autocommit=True) as conn:
                conn.execute(ddl)
        settings_env(SMS_DATABASE_URL=url)
        return dsn

    yield make
    dispose_engines()
    with psycopg.connect(admin, autocommit=True) as conn:
        for name in made:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


class Service:
    """Writes the table as the verification service does (its own connection)."""

    def __init__(self, dsn: str) -> None:
        self.dsn = dsn
        self.conn = psycopg.connect(dsn, autocommit=True, application_name=SERVICE)

    def new_code(
        self, phone: str, code: int, conn: psycopg.Connection[Any] | None = None
    ) -> uuid.UUID:
        """Cancel the number's active code, then insert a new active one."""
        conn = conn or self.conn
        verification_id = uuid.uuid4()
        now = utcnow().replace(tzinfo=None)
        with conn.transaction():
            conn.execute(
                "UPDATE verification.verifications SET active = false, status = 'canceled' "
                "WHERE phone_number = %s AND active",
                (phone,),
            )
            conn.execute(
                "INSERT INTO verification.verifications (id, phone_number, check_digit, "
                "status, code, code_expired_at, inserted_at) "
                "VALUES (%s, %s, %s, 'new', %s, %s, %s)",
                (verification_id, phone, code % 10, code, now + dt.timedelta(minutes=10), now),
            )
        return verification_id

    def bump_attempts(self) -> None:
        self.conn.execute(
            "UPDATE verification.verifications SET attempts_count = attempts_count + 1"
        )

    def rows(self, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        return list(self.conn.execute(sql, params).fetchall())


def table_shape(dsn: str) -> list[tuple[Any, ...]]:
    with psycopg.connect(dsn) as conn:
        columns = conn.execute(
            "SELECT column_name, data_type, is_nullable, column_default "
            "FROM information_schema.columns "
            "WHERE table_schema = 'verification' AND table_name = 'verifications' "
            "ORDER BY column_name"
        ).fetchall()
        indexes = conn.execute(
            "SELECT indexdef FROM pg_indexes WHERE schemaname = 'verification' "
            "AND tablename = 'verifications' ORDER BY indexname"
        ).fetchall()
    return [*columns, *indexes]


def test_upgrade_leaves_the_services_table_exactly_as_it_was(
    fresh_pg: Callable[[str | None], str],
) -> None:
    dsn = fresh_pg(REAL_DDL.format(extra=""))
    before = table_shape(dsn)
    cli_upgrade(get_engine().url.render_as_string(hide_password=False))
    assert table_shape(dsn) == before
    assert migrate.current(get_engine()) == migrate.head()


def test_every_code_is_logged_once_and_each_numbers_latest_code_is_delivered(
    fresh_pg: Callable[[str | None], str], worker: Any, simulator: Any
) -> None:
    dsn = fresh_pg(REAL_DDL.format(extra=""))
    cli_upgrade(get_engine().url.render_as_string(hide_password=False))
    service = Service(dsn)
    # Numbers ending 20..27: no fault rule of the simulator matches them.
    numbers = [f"+38093555{20 + n:04d}" for n in range(8)]
    # A code inserted early whose transaction commits last (a late commit behind rows
    # already replicated), on a number of its own.
    late = psycopg.connect(dsn, application_name=SERVICE)
    late.execute("SELECT 1")  # opens the transaction new_code's savepoint lives in
    late_id = service.new_code("+380935559999", 424242, conn=late)
    # Two codes for one number before any pass: the first is canceled when first seen.
    canceled_unseen = service.new_code("+380935558888", 111111)
    replaced_at_once = service.new_code("+380935558888", 222222)
    try:
        with repeating(replication.replicate_verifications, threads=2) as errors:
            first = {n: service.new_code(n, 100000 + i) for i, n in enumerate(numbers)}
            service.bump_attempts()
            # A pass sees some first codes before they are replaced.
            wait_until(
                lambda: service.rows(
                    "SELECT 1 FROM verification.sms_log WHERE verification_id = ANY(%s)",
                    (list(first.values()),),
                ),
                30,
                "a pass to replicate a first code",
            )
            latest = {n: service.new_code(n, 200000 + i) for i, n in enumerate(numbers)}
            service.bump_attempts()
            late.commit()
            latest["+380935559999"] = late_id
            latest["+380935558888"] = replaced_at_once
            every = set(first.values()) | set(latest.values()) | {canceled_unseen}

            def replicated() -> bool:
                assert not errors, errors
                return len(service.rows("SELECT 1 FROM verification.sms_log")) >= len(every)

            wait_until(replicated, 30, "every code replicated")
    finally:
        late.close()
    assert not errors
    service.bump_attempts()
    assert replication.replicate_verifications().inserted == 0

    logged = service.rows(
        "SELECT verification_id, count(*) FROM verification.sms_log GROUP BY verification_id"
    )
    assert dict(logged) == dict.fromkeys(every, 1)
    # A code canceled before we saw it ends EXPIRED with the reason and is never sent;
    # a first code seen while still active was sent (a patient may get both, in order).
    for verification_id, send_status, reason, uniq_key in service.rows(
        "SELECT verification_id, send_status, last_error, uniq_key FROM verification.sms_log "
        "WHERE verification_id = ANY(%s)",
        ([*first.values(), canceled_unseen],),
    ):
        if verification_id == canceled_unseen or send_status == "EXPIRED":
            assert (send_status, reason) == (
                "EXPIRED",
                "verification canceled before it was sent",
            )
            assert uniq_key is None

    def undelivered() -> list[tuple[Any, ...]]:
        return service.rows(
            "SELECT l.send_status, l.gateway_status, l.next_check_at "
            "FROM verification.sms_log l WHERE l.verification_id = ANY(%s) "
            "AND (l.gateway_status IS DISTINCT FROM 'Delivered')",
            (list(latest.values()),),
        )

    def delivered() -> bool:
        due = [r[2] for r in undelivered() if r[2] is not None]
        if due:  # the status sweep, its clock moved to the first check it planned
            status.sweep_statuses(inline=True, now=max(utcnow(), min(due)))
        return not undelivered()

    wait_until(delivered, 30, lambda: f"every code delivered: {undelivered()}", 0.1)
    bodies = service.rows(
        "SELECT v.code, l.body FROM verification.sms_log l "
        "JOIN verification.verifications v ON v.id = l.verification_id "
        "WHERE l.verification_id = ANY(%s)",
        (list(latest.values()),),
    )
    assert len(bodies) == len(latest) and all(str(code) in body for code, body in bodies)


def test_a_deployment_that_still_has_gateway_id_is_tracked_not_resent(
    fresh_pg: Callable[[str | None], str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # Before November 2017 the service sent SMS itself and kept the gateway's id.
    dsn = fresh_pg(REAL_DDL.format(extra=",\n    gateway_id varchar(255)"))
    migrate.upgrade(get_engine())
    published = capture_publishes(monkeypatch)
    service = Service(dsn)
    sent_by_service = service.new_code("+380935550001", 123456)
    service.conn.execute(
        "UPDATE verification.verifications SET gateway_id = '8072817' WHERE id = %s",
        (sent_by_service,),
    )
    ours = service.new_code("+380935550002", 654321)
    result = replication.replicate_verifications()
    assert (result.inserted, result.tracked, result.dispatched) == (2, 1, 1)
    rows = {
        v: (s, g, gs)
        for v, s, g, gs in service.rows(
            "SELECT verification_id, send_status, gateway_id, gateway_status "
            "FROM verification.sms_log"
        )
    }
    assert rows[sent_by_service] == ("SUBMITTED", "8072817", "Accepted")
    assert rows[ours] == ("QUEUED", None, None)
    ((ours_message,),) = service.rows(
        "SELECT id FROM verification.sms_log WHERE verification_id = %s", (ours,)
    )
    assert [d.message_id for d in published] == [ours_message]


OLD_ROWS = [
    # (id, phone, code, inserted_at): two active codes for one number in our old shape.
    ("a" * 32, "+380931110000", "012345", "2026-11-30 10:00:00"),
    ("b" * 32, "+380931110000", "678901", "2026-11-30 10:05:00"),
    ("c" * 32, "+380931110001", "555555", "2026-11-30 10:06:00"),
]


@pytest.mark.parametrize("backend", ["postgresql", "sqlite"])
def test_our_own_old_verifications_table_takes_the_real_shape(
    backend: str, fresh_pg: Callable[[str | None], str], tmp_path: Path
) -> None:
    if backend == "postgresql":
        fresh_pg(None)
        engine = get_engine()
    else:
        engine = make_engine(f"sqlite:///{tmp_path / 'embedded.db'}")
    migrate.upgrade(engine, "0001")
    prefix = "" if backend == "sqlite" else "verification."
    with engine.begin() as conn:
        for vid, phone, code, at in OLD_ROWS:
            key, active = (f"'{uuid.UUID(vid)}'", "true") if prefix else (f"'{vid}'", "1")
            conn.exec_driver_sql(
                f"INSERT INTO {prefix}verifications (id, phone_number, code, status, active, "
                "attempts_count, inserted_at, updated_at) VALUES "
                f"({key}, '{phone}', '{code}', 'new', {active}, 0, '{at}', '{at}')"
            )
    migrate.upgrade(engine)
    schema = None if backend == "sqlite" else "verification"
    columns = {c["name"]: c for c in inspect(engine).get_columns("verifications", schema=schema)}
    assert set(columns) == {
        "id",
        "phone_number",
        "check_digit",
        "status",
        "code",
        "code_expired_at",
        "active",
        "attempts_count",
        "inserted_at",
    }
    assert not columns["code_expired_at"]["nullable"] and not columns["check_digit"]["nullable"]
    with engine.connect() as conn:
        rows = conn.exec_driver_sql(
            f"SELECT code, active, status FROM {prefix}verifications ORDER BY inserted_at"
        ).fetchall()
    assert [(c, bool(a), s) for c, a, s in rows] == [
        (12345, False, "canceled"),
        (678901, True, "new"),
        (555555, True, "new"),
    ]
    if backend == "sqlite":
        engine.dispose()


def test_embedded_sqlite_replicates_the_real_shape_once(
    tmp_path: Path, settings_env: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Embedded mode: the same table shape on SQLite, rows written by plain sqlite3."""
    import sqlite3

    path = tmp_path / "embedded.db"
    settings_env(SMS_DATABASE_URL=f"sqlite:///{path}", SMS_VERIFICATION_CODE_DIGITS=6)
    migrate.upgrade(get_engine())
    published = capture_publishes(monkeypatch)
    now = utcnow()
    stamp = now.strftime("%Y-%m-%d %H:%M:%S")
    soon = (now + dt.timedelta(minutes=10)).strftime("%Y-%m-%d %H:%M:%S")
    live, canceled = uuid.uuid4(), uuid.uuid4()
    with sqlite3.connect(path, timeout=30) as conn:
        conn.executemany(
            "INSERT INTO verifications (id, phone_number, check_digit, status, code, "
            "code_expired_at, active, inserted_at) VALUES (?, '+380935550020', 3, ?, ?, ?, ?, ?)",
            [
                (canceled.hex, "canceled", 11111, soon, False, stamp),
                (live.hex, "new", 4321, soon, True, stamp),
            ],
        )
    try:
        result = replication.replicate_verifications()
        assert (result.inserted, result.dispatched, result.ended) == (2, 1, 1)
        assert replication.replicate_verifications().inserted == 0
        with sqlite3.connect(path) as conn:
            rows = {
                uuid.UUID(v): (s, b)
                for v, s, b in conn.execute(
                    "SELECT verification_id, send_status, body FROM sms_log"
                )
            }
        assert rows[live] == ("QUEUED", "Your verification code: 004321")
        assert rows[canceled][0] == "EXPIRED"
        with sqlite3.connect(path) as conn:
            (live_message,) = conn.execute(
                "SELECT id FROM sms_log WHERE verification_id = ?", (live.hex,)
            ).fetchone()
        assert [d.message_id for d in published] == [uuid.UUID(live_message)]
    finally:
        dispose_engines()

"""Migrations and the schema on real PostgreSQL and on the embedded SQLite file."""

from __future__ import annotations

import datetime as dt
import uuid
from pathlib import Path
from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import Engine, MetaData, insert, inspect, select, text
from sqlalchemy.exc import IntegrityError

from sms_pipeline.db import migrate
from sms_pipeline.db.engine import make_engine
from sms_pipeline.db.models import Account, Base, SmsLog, utcnow

SQLITE_DESC_INDEXES = {
    "ix_sms_log_outbox",
    "ix_sms_log_outbox_urgent",
    "ix_sms_queue_account_priority",
}


def schema_diff(engine: Engine) -> list[Any]:
    with engine.connect() as conn:
        opts: dict[str, Any] = {"compare_type": True, "version_table": migrate.VERSION_TABLE}
        metadata = Base.metadata
        if engine.dialect.name == "sqlite":
            metadata = MetaData()
            for table in Base.metadata.sorted_tables:
                # None: no schema (SQLite has none); the stubs leave this value out.
                table.to_metadata(metadata, schema=None)  # type: ignore[arg-type]
        else:
            opts["include_schemas"] = True
            opts["include_name"] = lambda name, type_, _parent: (
                type_ != "schema" or name == "verification"
            )
        diff: list[Any] = compare_metadata(MigrationContext.configure(conn, opts=opts), metadata)
    if engine.dialect.name == "sqlite":
        # SQLite's reflection drops DESC from index columns: those indexes show up as
        # remove+add pairs although the DDL was applied as written (checked below).
        diff = [
            d
            for d in diff
            if not (d[0] in {"add_index", "remove_index"} and d[1].name in SQLITE_DESC_INDEXES)
        ]
    return diff


@pytest.fixture
def sqlite_engine(tmp_path: Path) -> Engine:
    return make_engine(f"sqlite:///{tmp_path / 'embedded.db'}")


def test_sqlite_upgrade_downgrade_upgrade_matches_models(sqlite_engine: Engine) -> None:
    migrate.upgrade(sqlite_engine)
    migrate.downgrade(sqlite_engine, "base")
    assert migrate.current(sqlite_engine) is None
    migrate.upgrade(sqlite_engine)
    assert migrate.current(sqlite_engine) == migrate.head()
    assert schema_diff(sqlite_engine) == []
    with sqlite_engine.connect() as conn:
        for name in ("ix_sms_log_outbox", "ix_sms_log_outbox_urgent"):
            ddl = conn.exec_driver_sql(
                "SELECT sql FROM sqlite_master WHERE name = ?", (name,)
            ).scalar_one()
            assert "priority DESC" in ddl and "WHERE send_status IN" in ddl


def test_postgres_upgrade_downgrade_upgrade_matches_models(pg_engine: Engine) -> None:
    migrate.downgrade(pg_engine, "base")
    assert not inspect(pg_engine).has_table("sms_log", schema="verification")
    migrate.upgrade(pg_engine)
    assert migrate.current(pg_engine) == migrate.head()
    assert schema_diff(pg_engine) == []


def test_verifications_table_owned_elsewhere_is_left_alone(pg_engine: Engine, db: Any) -> None:
    with pg_engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO verification.verifications (id, phone_number, check_digit, code, "
                "status, code_expired_at, inserted_at) VALUES "
                "(:id, '+380931234567', 7, 1234, 'new', now(), now())"
            ),
            {"id": uuid.uuid4()},
        )
    migrate.downgrade(pg_engine, "base")
    migrate.upgrade(pg_engine)
    with pg_engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM verification.verifications")).scalar() == 1


def _account(engine: Engine) -> int:
    with engine.begin() as conn:
        return int(
            conn.execute(
                insert(Account)
                .values(name=f"a{uuid.uuid4().hex[:6]}", username="u", credits=10)
                .returning(Account.id)
            ).scalar_one()
        )


@pytest.mark.parametrize(
    ("column", "value"),
    [("type", "fax"), ("gateway_status", "Lost"), ("send_status", "SOMETHING")],
)
def test_constraints_reject_unknown_vocabulary(db: Engine, column: str, value: str) -> None:
    account_id = _account(db)
    row = {
        "id": uuid.uuid4(),
        "phone_number": "+380931234567",
        "type": "text",
        "body": "x",
        "account_id": account_id,
        "send_status": "QUEUED",
        column: value,
    }
    with pytest.raises(IntegrityError), db.begin() as conn:
        conn.execute(insert(SmsLog).values(**row))


def _insert_texts(db: Engine, count: int, **values: Any) -> None:
    """`count` text messages of a new account (a value may be a function of the row's
    index), then ANALYZE: the planner sees the table as a service would."""
    account_id = _account(db)
    rows = [
        {
            "id": uuid.uuid4(),
            "phone_number": "+380931234567",
            "type": "text",
            "body": "x",
            "account_id": account_id,
            **{k: v(i) if callable(v) else v for k, v in values.items()},
        }
        for i in range(count)
    ]
    with db.begin() as conn:
        conn.execute(insert(SmsLog), rows)
        conn.execute(text("ANALYZE verification.sms_log"))


def test_moving_status_query_uses_the_partial_index(db: Engine) -> None:
    _insert_texts(
        db,
        5000,
        send_status="SUBMITTED",
        gateway_status=lambda i: "Delivered" if i % 50 else "Enroute",
        next_check_at=utcnow(),
    )
    with db.begin() as conn:
        plan = "\n".join(
            r[0]
            for r in conn.execute(
                text(
                    "EXPLAIN SELECT id FROM verification.sms_log "
                    "WHERE gateway_status IN ('Accepted', 'Enroute', 'Pending', 'Unknown') "
                    "AND next_check_at <= now() ORDER BY next_check_at LIMIT 100"
                )
            )
        )
    assert "ix_sms_log_moving" in plan


def test_urgent_claim_does_not_walk_the_bulk_backlog(db: Engine, monkeypatch: Any) -> None:
    """The urgent drain's real claim statement, EXPLAINed behind 5,000 queued texts."""
    from sqlalchemy import event

    from sms_pipeline.dispatch import QueueClass
    from sms_pipeline.services import outbox, sending

    monkeypatch.setattr(outbox, "publish", lambda dispatches: 0)
    # Not due: the batch below sends nothing.
    _insert_texts(db, 5000, send_status="QUEUED", due_at=utcnow() + dt.timedelta(hours=1))
    claims: list[tuple[str, Any]] = []

    def capture(conn: Any, cursor: Any, statement: str, params: Any, *args: Any) -> None:
        if "FOR UPDATE SKIP LOCKED" in statement:
            claims.append((statement, params))

    # On every engine: the batch runs on the settings' engine, which an earlier test may
    # have replaced by another object for the same database.
    event.listen(Engine, "before_cursor_execute", capture)
    try:
        assert sending.send_batch(queue_class=QueueClass.URGENT).claimed == 0
    finally:
        event.remove(Engine, "before_cursor_execute", capture)
    assert claims
    statement, params = claims[0]
    with db.connect() as conn:
        driver = conn.connection.driver_connection
        assert driver is not None
        plan = "\n".join(r[0] for r in driver.cursor().execute("EXPLAIN " + statement, params))
    assert "ix_sms_log_outbox_urgent" in plan


@pytest.mark.parametrize("backend", ["postgres", "sqlite"])
def test_timestamps_are_aware_utc_and_updated_at_changes(
    backend: str, request: pytest.FixtureRequest
) -> None:
    engine: Engine = request.getfixturevalue("db" if backend == "postgres" else "sqlite_engine")
    if backend == "sqlite":
        migrate.upgrade(engine)
    from sqlalchemy.orm import Session

    with Session(engine) as session:
        account = Account(name=f"t{uuid.uuid4().hex[:6]}", username="u")
        session.add(account)
        session.flush()
        kyiv = dt.timezone(dt.timedelta(hours=2))
        message = SmsLog(
            phone_number="+380931234567",
            type="text",
            body="x",
            account_id=account.id,
            send_after=dt.datetime(2030, 1, 1, 10, 0, tzinfo=kyiv),
        )
        session.add(message)
        session.commit()
        first_update = message.updated_at
        session.expire_all()
        loaded = session.scalars(select(SmsLog)).one()
        assert loaded.send_after == dt.datetime(2030, 1, 1, 8, 0, tzinfo=dt.UTC)
        assert loaded.send_after.utcoffset() == dt.timedelta(0)
        assert loaded.inserted_at.tzinfo is not None
        loaded.priority = 5
        session.commit()
        assert loaded.updated_at > first_update


def test_sqlite_rebuilds_keep_rows_foreign_keys_and_the_sms_sent_view(
    sqlite_engine: Engine,
) -> None:
    """Batch mode rebuilds tables by copy/drop/rename: with rows referring to `accounts`
    and the view over `sms_log`, an existing embedded database still upgrades, and a later
    migration that rebuilds `sms_log` leaves the view working."""
    import sqlalchemy as sa
    from alembic.operations import Operations

    migrate.upgrade(sqlite_engine, "0001")
    with sqlite_engine.begin() as conn:
        conn.exec_driver_sql(
            "INSERT INTO accounts (id, name, username, credits, inserted_at, updated_at) "
            "VALUES (1, 'a', 'u', 5, '2026-01-01 00:00:00', '2026-01-01 00:00:00')"
        )
        conn.exec_driver_sql(
            "INSERT INTO sms_log (id, phone_number, type, body, account_id, send_status, "
            "customer_id, due_at, inserted_at, updated_at) VALUES ('00000000000000000000000000"
            "000001', '+380931234567', 'text', 'x', 1, 'QUEUED', 'c-1', '2026-01-01', "
            "'2026-01-01', '2026-01-01')"
        )
    migrate.upgrade(sqlite_engine)
    with migrate.migration_connection(sqlite_engine) as conn:
        ops = Operations(MigrationContext.configure(conn))
        with ops.batch_alter_table("sms_log", recreate="always") as batch:
            batch.add_column(sa.Column("probe", sa.Integer()))
    with sqlite_engine.connect() as conn:
        assert conn.exec_driver_sql("SELECT customer_id, status FROM sms_sent").all() == [
            ("c-1", "QUEUED")
        ]
        assert conn.exec_driver_sql("PRAGMA foreign_key_check").all() == []
        assert conn.exec_driver_sql("SELECT credits FROM accounts").scalar() == 5

"""Apply the Alembic migrations shipped inside the package (`sms-pipeline db ...`)."""

from __future__ import annotations

import contextlib
import io
from collections.abc import Iterator
from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import Connection, Engine

MIGRATIONS_DIR = Path(__file__).with_name("migrations")
# Our own version table, so we never collide with the verification service's Alembic.
VERSION_TABLE = "sms_pipeline_alembic_version"


def _config(engine: Engine, connection: object) -> Config:
    # Alembic prints to stdout; the CLI says what happened itself.
    cfg = Config(str(MIGRATIONS_DIR / "alembic.ini"), stdout=io.StringIO())
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.attributes["connection"] = connection
    return cfg


@contextlib.contextmanager
def migration_connection(engine: Engine) -> Iterator[Connection]:
    """One transaction for the whole migration.

    On SQLite, batch mode rebuilds a table by copy, drop and rename. That needs foreign
    keys off (dropping `accounts` would otherwise delete-check every row that refers to
    it) and the legacy rename (so a view over a rebuilt table, such as `sms_sent` over
    `sms_log`, is not re-checked half way). Both pragmas only take effect outside a
    transaction; the foreign keys are checked once at the end, before the commit.
    """
    if engine.dialect.name != "sqlite":
        with engine.begin() as conn:
            yield conn
        return
    with engine.connect() as conn:
        raw = conn.connection.driver_connection
        assert raw is not None
        raw.execute("PRAGMA foreign_keys=OFF")
        raw.execute("PRAGMA legacy_alter_table=ON")
        try:
            with conn.begin():
                yield conn
                broken = conn.exec_driver_sql("PRAGMA foreign_key_check").fetchall()
                if broken:
                    raise RuntimeError(f"migration broke foreign keys: {broken[:5]}")
        finally:
            raw.execute("PRAGMA legacy_alter_table=OFF")
            raw.execute("PRAGMA foreign_keys=ON")


def upgrade(engine: Engine, revision: str = "head") -> None:
    with migration_connection(engine) as conn:
        command.upgrade(_config(engine, conn), revision)


def downgrade(engine: Engine, revision: str = "-1") -> None:
    with migration_connection(engine) as conn:
        command.downgrade(_config(engine, conn), revision)


def current(engine: Engine) -> str | None:
    """The revision the database is at, or None for an empty database."""
    from alembic.runtime.migration import MigrationContext

    with engine.connect() as conn:
        ctx = MigrationContext.configure(conn, opts={"version_table": VERSION_TABLE})
        return ctx.get_current_revision()


def head() -> str | None:
    from alembic.script import ScriptDirectory

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    return ScriptDirectory.from_config(cfg).get_current_head()

"""Apply the Alembic migrations shipped inside the package (`sms-pipeline db ...`)."""

from __future__ import annotations

import io
from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import Engine

from sms_pipeline.db.engine import get_engine

MIGRATIONS_DIR = Path(__file__).with_name("migrations")
# Our own version table, so we never collide with the verification service's Alembic.
VERSION_TABLE = "sms_pipeline_alembic_version"


def _config(engine: Engine, connection: object) -> Config:
    # Alembic prints to stdout; the CLI says what happened itself.
    cfg = Config(str(MIGRATIONS_DIR / "alembic.ini"), stdout=io.StringIO())
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.attributes["connection"] = connection
    return cfg


def upgrade(engine: Engine | None = None, revision: str = "head") -> None:
    engine = engine or get_engine()
    with engine.begin() as conn:
        command.upgrade(_config(engine, conn), revision)


def downgrade(engine: Engine | None = None, revision: str = "-1") -> None:
    engine = engine or get_engine()
    with engine.begin() as conn:
        command.downgrade(_config(engine, conn), revision)


def current(engine: Engine | None = None) -> str | None:
    """The revision the database is at, or None for an empty database."""
    from alembic.runtime.migration import MigrationContext

    engine = engine or get_engine()
    with engine.connect() as conn:
        ctx = MigrationContext.configure(conn, opts={"version_table": VERSION_TABLE})
        return ctx.get_current_revision()


def head() -> str | None:
    from alembic.script import ScriptDirectory

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    return ScriptDirectory.from_config(cfg).get_current_head()

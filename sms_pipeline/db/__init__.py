"""Database access: engines, sessions, models and migrations."""

from .engine import (
    affected,
    alone,
    autocommit_connection,
    dispose_engines,
    get_engine,
    get_sessionmaker,
    is_sqlite,
    one_statement,
    session_scope,
    truncate_wal,
)
from .statements import (
    among,
    epoch_seconds,
    insert_ignore,
    schema_of,
    skip_locked,
    table_name,
    upsert_insert,
)

__all__ = [
    "affected",
    "alone",
    "among",
    "autocommit_connection",
    "dispose_engines",
    "epoch_seconds",
    "get_engine",
    "get_sessionmaker",
    "insert_ignore",
    "is_sqlite",
    "one_statement",
    "schema_of",
    "session_scope",
    "skip_locked",
    "table_name",
    "truncate_wal",
    "upsert_insert",
]

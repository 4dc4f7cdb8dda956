"""Database access: engines, sessions, models and migrations."""

from .engine import (
    affected,
    dispose_engines,
    get_engine,
    get_sessionmaker,
    is_sqlite,
    one_statement,
    session_scope,
)

__all__ = [
    "affected",
    "dispose_engines",
    "get_engine",
    "get_sessionmaker",
    "is_sqlite",
    "one_statement",
    "session_scope",
]

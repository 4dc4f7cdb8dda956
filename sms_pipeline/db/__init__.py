"""Database access: engines, sessions, models and migrations."""

from .engine import dispose_engines, get_engine, get_sessionmaker, is_sqlite, session_scope

__all__ = ["dispose_engines", "get_engine", "get_sessionmaker", "is_sqlite", "session_scope"]

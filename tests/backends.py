"""A `backend` fixture: the same test on PostgreSQL and on the embedded SQLite database.

Import it into a test module (`from tests.backends import backend`). On "sqlite" the whole
pipeline (settings, engine, sessions, metrics store) points at a fresh SQLite file in the
test's tmp_path, migrated to head, exactly as the embedded mode runs.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

BACKENDS = ["postgres", "sqlite"]


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest, settings_env: Any, tmp_path: Path) -> Iterator[str]:
    from sms_pipeline.metrics.hooks import forget_account_names

    forget_account_names()
    if request.param == "postgres":
        request.getfixturevalue("db")
        yield "postgres"
        return
    from sms_pipeline.db import get_engine, migrate

    settings = settings_env(SMS_DATABASE_URL=f"sqlite:///{tmp_path / 'embedded.db'}")
    engine = get_engine(settings)
    migrate.upgrade(engine)
    try:
        yield "sqlite"
    finally:
        forget_account_names()
        engine.dispose()

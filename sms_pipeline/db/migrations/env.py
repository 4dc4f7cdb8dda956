"""Alembic environment: runs on the connection given by sms_pipeline.db.migrate."""

from __future__ import annotations

from alembic import context

from sms_pipeline.db.migrate import VERSION_TABLE
from sms_pipeline.db.models import Base

connection = context.config.attributes["connection"]
context.configure(
    connection=connection,
    target_metadata=Base.metadata,
    version_table=VERSION_TABLE,
    # SQLite alters tables by copy; batch mode does that for us.
    render_as_batch=connection.dialect.name == "sqlite",
    compare_type=True,
    include_schemas=connection.dialect.name != "sqlite",
)
with context.begin_transaction():
    context.run_migrations()

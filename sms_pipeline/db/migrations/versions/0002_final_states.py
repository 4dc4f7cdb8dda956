"""final states: when a message was last checked (the Terminated rule decides on it)

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-01 14:45:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from sms_pipeline.db.models.base import UTCDateTime

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _schema(bind: sa.engine.Connection) -> str | None:
    return None if bind.dialect.name == "sqlite" else "verification"


def upgrade() -> None:
    # A nullable column without a default: no table rewrite on PostgreSQL or SQLite.
    op.add_column(
        "sms_log",
        sa.Column("last_checked_at", UTCDateTime(), nullable=True),
        schema=_schema(op.get_bind()),
    )


def downgrade() -> None:
    with op.batch_alter_table("sms_log", schema=_schema(op.get_bind())) as batch:
        batch.drop_column("last_checked_at")

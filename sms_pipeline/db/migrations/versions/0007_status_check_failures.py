"""status check failures: the facts the give-up rule reads (docs/status-checks.md)

A message whose status checks all fail (no usable answer) for SMS_STATUS_GIVE_UP_SECONDS
ends Terminated after its deadline; these columns record the failures as they happen.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-07 13:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from sms_pipeline.db.models.base import UTCDateTime

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _schema() -> str | None:
    # SQLite has no schemas (the engine maps "verification" away; raw ALTERs need None).
    return None if op.get_bind().dialect.name == "sqlite" else "verification"


def upgrade() -> None:
    # Plain ADD COLUMN on both dialects: SQLite's batch mode would rebuild the table and
    # lose the DESC of the outbox indexes.
    schema = _schema()
    op.add_column(
        "sms_log",
        sa.Column("status_failures", sa.Integer(), nullable=False, server_default=sa.text("0")),
        schema=schema,
    )
    op.add_column("sms_log", sa.Column("status_failing_since", UTCDateTime()), schema=schema)
    op.add_column("sms_log", sa.Column("status_failure", sa.String(length=200)), schema=schema)


def downgrade() -> None:
    schema = _schema()
    for name in ("status_failure", "status_failing_since", "status_failures"):
        op.drop_column("sms_log", name, schema=schema)  # SQLite 3.35+: DROP COLUMN

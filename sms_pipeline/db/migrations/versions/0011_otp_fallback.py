"""OTP fallback: sms_log.fallback_id / fallback_of link a code to its copy via another gateway

A verification/2FA code not Delivered within SMS_OTP_FALLBACK_SECONDS, while still valid, is
sent once more through another gateway as a new sms_log row: `fallback_id` on the original
names the copy, `fallback_of` on the copy names the original (docs/gateways.md). Two
nullable columns: no rewrite of the log on either dialect.

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-07 15:45:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _schema() -> str | None:
    # SQLite has no schemas (the engine maps "verification" away; raw DDL needs None).
    return None if op.get_bind().dialect.name == "sqlite" else "verification"


def upgrade() -> None:
    schema = _schema()
    op.add_column("sms_log", sa.Column("fallback_id", sa.Uuid(), nullable=True), schema=schema)
    op.add_column("sms_log", sa.Column("fallback_of", sa.Uuid(), nullable=True), schema=schema)


def downgrade() -> None:
    schema = _schema()
    # (as 0009: SQLite drops a column in place, the sms_sent view over the log stays)
    op.drop_column("sms_log", "fallback_of", schema=schema)
    op.drop_column("sms_log", "fallback_id", schema=schema)

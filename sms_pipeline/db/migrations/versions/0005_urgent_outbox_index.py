"""urgent outbox index: the urgent claim no longer walks the bulk backlog

Building it reads sms_log once and holds inserts for that long (seconds on millions of
rows). To avoid the pause on a large log, create it beforehand without blocking:

    CREATE INDEX CONCURRENTLY IF NOT EXISTS ix_sms_log_outbox_urgent
        ON verification.sms_log (account_id, priority DESC, due_at)
        WHERE send_status IN ('QUEUED', 'SENDING') AND type IN ('2FA', 'verification');

and this migration finds it there.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-01 21:45:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_NAME = "ix_sms_log_outbox_urgent"
_WHERE = sa.text("send_status IN ('QUEUED', 'SENDING') AND type IN ('2FA', 'verification')")


def _schema() -> str | None:
    # SQLite has no schemas (the engine maps "verification" away; raw DDL needs None).
    return None if op.get_bind().dialect.name == "sqlite" else "verification"


def upgrade() -> None:
    op.create_index(
        _NAME, "sms_log", ["account_id", sa.text("priority DESC"), "due_at"], schema=_schema(),
        postgresql_where=_WHERE, sqlite_where=_WHERE, if_not_exists=True,
    )  # fmt: skip


def downgrade() -> None:
    op.drop_index(_NAME, table_name="sms_log", schema=_schema(), if_exists=True)

"""admin scopes: platform-wide admin keys are their own kind; audit rows name the account

`api_keys.platform_admin`: a key that may export and erase any account's data (created only
by `sms-pipeline api-key create NAME --platform-admin`). An `admin` key is bound to its
account; an `admin` key without an account (the old "any account") is refused until it is
replaced by a platform admin key: nothing is widened by this migration.
`privacy_audit.account`: the account an export or erasure was limited to (NULL: platform-wide
or the command line).

Revision ID: 0008
Revises: 0005
Create Date: 2026-12-07 12:50:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _schema() -> str | None:
    # SQLite has no schemas (the engine maps "verification" away; raw DDL needs None).
    return None if op.get_bind().dialect.name == "sqlite" else "verification"


def upgrade() -> None:
    with op.batch_alter_table("api_keys", schema=_schema()) as batch:
        batch.add_column(
            sa.Column(
                "platform_admin", sa.Boolean(), server_default=sa.text("false"), nullable=False
            )
        )
    with op.batch_alter_table("privacy_audit", schema=_schema()) as batch:
        batch.add_column(sa.Column("account", sa.String(64), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("privacy_audit", schema=_schema()) as batch:
        batch.drop_column("account")
    with op.batch_alter_table("api_keys", schema=_schema()) as batch:
        batch.drop_column("platform_admin")

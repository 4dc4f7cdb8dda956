"""inbound per gateway (replies and shortcodes keyed by gateway, a read mark per gateway);
an index for latency-based demotion

`sms_replies.gateway` / `sms_shortcodes.gateway`: the gateway an incoming message was polled
from ('' = the IP2SMS_* settings' inbound API, or pushed); the gateway's id is unique per
account **and gateway**, since two gateways number their replies independently.
`inbound_marks`: how far each account has read each gateway row's inbound pages (the
settings' own API keeps `accounts.max_replies_id` / `max_sc_id`).
`ix_sms_log_gateway_submitted`: a gateway's recent submissions, for latency-based demotion
(SMS_GATEWAY_SLOW_SECONDS). Building it reads sms_log once and holds inserts meanwhile; on a
large log create it beforehand without blocking, and this migration finds it there:

    CREATE INDEX CONCURRENTLY IF NOT EXISTS ix_sms_log_gateway_submitted
        ON verification.sms_log (gateway, submitted_at) WHERE gateway IS NOT NULL;

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-07 15:30:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_TABLES = (("sms_replies", "gateway_reply_id"), ("sms_shortcodes", "gateway_sc_id"))


def _schema() -> str | None:
    # SQLite has no schemas (the engine maps "verification" away; raw DDL needs None).
    return None if op.get_bind().dialect.name == "sqlite" else "verification"


def upgrade() -> None:
    schema = _schema()
    for table, id_column in _TABLES:
        # SQLite rebuilds the table (batch): its rows and foreign keys are kept.
        with op.batch_alter_table(table, schema=schema) as batch:
            batch.add_column(
                sa.Column("gateway", sa.String(64), nullable=False, server_default=sa.text("''"))
            )
            batch.drop_constraint(f"uq_{table}_account_id_{id_column}", type_="unique")
            batch.create_unique_constraint(
                f"uq_{table}_account_id_gateway_{id_column}", ["account_id", "gateway", id_column]
            )
    accounts = "accounts.id" if schema is None else f"{schema}.accounts.id"
    op.create_table(
        "inbound_marks",
        sa.Column("account_id", sa.Integer(), nullable=False),
        sa.Column("gateway", sa.String(64), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("max_id", sa.BigInteger(), nullable=False, server_default=sa.text("0")),
        sa.ForeignKeyConstraint(
            ["account_id"],
            [accounts],
            name="fk_inbound_marks_account_id_accounts",
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("account_id", "gateway", "kind", name="pk_inbound_marks"),
        schema=schema,
    )
    where = sa.text("gateway IS NOT NULL")
    op.create_index(
        "ix_sms_log_gateway_submitted", "sms_log", ["gateway", "submitted_at"], schema=schema,
        postgresql_where=where, sqlite_where=where, if_not_exists=True,
    )  # fmt: skip


def downgrade() -> None:
    # Fails if two gateways stored the same id for one account: then they are two messages,
    # and the old key cannot hold both.
    schema = _schema()
    op.drop_index(
        "ix_sms_log_gateway_submitted", table_name="sms_log", schema=schema, if_exists=True
    )
    op.drop_table("inbound_marks", schema=schema)
    for table, id_column in _TABLES:
        with op.batch_alter_table(table, schema=schema) as batch:
            batch.drop_constraint(f"uq_{table}_account_id_gateway_{id_column}", type_="unique")
            batch.create_unique_constraint(
                f"uq_{table}_account_id_{id_column}", ["account_id", id_column]
            )
            batch.drop_column("gateway")

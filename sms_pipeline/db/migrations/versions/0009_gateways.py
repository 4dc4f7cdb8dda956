"""gateways as data: gateways, account_gateways, gateway_events, sms_log.gateway

See docs/gateways.md. With no row in `gateways`, the IP2SMS_* settings are the one gateway
`default`: nothing changes for an existing installation.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-07 13:30:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from sms_pipeline.db.models.base import BIGINT_PK, UTCDateTime

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _schema() -> str | None:
    # SQLite has no schemas (the engine maps "verification" away; raw DDL needs None).
    return None if op.get_bind().dialect.name == "sqlite" else "verification"


def _ref(table: str) -> str:
    schema = _schema()
    return f"{schema}.{table}.id" if schema else f"{table}.id"


def upgrade() -> None:
    schema = _schema()
    now = sa.text("CURRENT_TIMESTAMP")
    op.create_table(
        "gateways",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("send_url", sa.String(500), nullable=False),
        sa.Column("status_url", sa.String(500), nullable=False, server_default=sa.text("''")),
        sa.Column("inbound_url", sa.String(500), nullable=False, server_default=sa.text("''")),
        sa.Column("login", sa.String(128), nullable=False, server_default=sa.text("''")),
        sa.Column("password_ref", sa.String(256), nullable=False, server_default=sa.text("''")),
        sa.Column("source", sa.String(32), nullable=False, server_default=sa.text("''")),
        sa.Column("weight", sa.Integer(), nullable=False, server_default=sa.text("1")),
        sa.Column("active", sa.Boolean(), nullable=False, server_default=sa.text("true")),
        sa.Column("max_per_second", sa.Double(), nullable=True),
        sa.Column("state", sa.String(16), nullable=False, server_default="up"),
        sa.Column("state_since", UTCDateTime(), nullable=False, server_default=now),
        sa.Column("state_reason", sa.String(300), nullable=False, server_default=sa.text("''")),
        sa.Column("inserted_at", UTCDateTime(), nullable=False, server_default=now),
        sa.CheckConstraint("weight >= 0", name="ck_gateways_weight"),
        sa.CheckConstraint(
            "max_per_second IS NULL OR max_per_second > 0", name="ck_gateways_max_per_second"
        ),
        sa.CheckConstraint("state IN ('up', 'down', 'probing')", name="ck_gateways_state"),
        sa.PrimaryKeyConstraint("id", name="pk_gateways"),
        sa.UniqueConstraint("name", name="uq_gateways_name"),
        schema=schema,
    )
    op.create_table(
        "account_gateways",
        sa.Column("account_id", sa.Integer(), nullable=False),
        sa.Column("gateway_id", sa.Integer(), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False, server_default=sa.text("0")),
        sa.Column("login", sa.String(128), nullable=False, server_default=sa.text("''")),
        sa.Column("password_ref", sa.String(256), nullable=False, server_default=sa.text("''")),
        sa.ForeignKeyConstraint(
            ["account_id"],
            [_ref("accounts")],
            name="fk_account_gateways_account_id_accounts",
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["gateway_id"],
            [_ref("gateways")],
            name="fk_account_gateways_gateway_id_gateways",
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("account_id", "gateway_id", name="pk_account_gateways"),
        schema=schema,
    )
    op.create_table(
        "gateway_events",
        sa.Column("id", BIGINT_PK, primary_key=True, autoincrement=True),
        sa.Column("at", UTCDateTime(), nullable=False, server_default=now),
        sa.Column("gateway", sa.String(64), nullable=False),
        sa.Column("from_state", sa.String(16), nullable=False),
        sa.Column("to_state", sa.String(16), nullable=False),
        sa.Column("reason", sa.String(300), nullable=False),
        sa.Column("figures", sa.Text(), nullable=False, server_default="{}"),
        sa.PrimaryKeyConstraint("id", name="pk_gateway_events"),
        schema=schema,
    )
    op.create_index("ix_gateway_events_at", "gateway_events", ["at"], schema=schema)
    op.create_table(
        "gateway_minutes",
        sa.Column("gateway", sa.String(64), nullable=False),
        sa.Column("minute", UTCDateTime(), nullable=False),
        sa.Column("requests", sa.Integer(), nullable=False, server_default=sa.text("0")),
        sa.Column("definite_failures", sa.Integer(), nullable=False, server_default=sa.text("0")),
        sa.Column("ambiguous", sa.Integer(), nullable=False, server_default=sa.text("0")),
        sa.Column("latency_seconds", sa.Double(), nullable=False, server_default=sa.text("0")),
        sa.PrimaryKeyConstraint("gateway", "minute", name="pk_gateway_minutes"),
        schema=schema,
    )
    op.add_column("sms_log", sa.Column("gateway", sa.String(64)), schema=schema)


def downgrade() -> None:
    schema = _schema()
    op.drop_column("sms_log", "gateway", schema=schema)
    op.drop_table("gateway_minutes", schema=schema)
    op.drop_index("ix_gateway_events_at", "gateway_events", schema=schema)
    op.drop_table("gateway_events", schema=schema)
    op.drop_table("account_gateways", schema=schema)
    op.drop_table("gateways", schema=schema)

"""initial schema

Revision ID: 0001
Revises:
Create Date: 2026-11-21 23:24:18.678643
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from sms_pipeline.db.models.base import UTCDateTime

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _schema(bind: sa.engine.Connection) -> str | None:
    return None if bind.dialect.name == "sqlite" else "verification"


def upgrade() -> None:
    bind = op.get_bind()
    if bind.dialect.name == "postgresql":
        op.execute("CREATE SCHEMA IF NOT EXISTS verification")
    op.create_table(
        "accounts",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("username", sa.String(length=128), nullable=False),
        sa.Column("password_ref", sa.String(length=256), nullable=True),
        sa.Column("active", sa.Boolean(), server_default=sa.text("true"), nullable=False),
        sa.Column("postpaid", sa.Boolean(), server_default=sa.text("false"), nullable=False),
        sa.Column("credits", sa.BigInteger(), nullable=False),
        sa.Column("send_start_hour", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("send_end_hour", sa.Integer(), server_default=sa.text("23"), nullable=False),
        sa.Column("timezone", sa.String(length=64), server_default="UTC", nullable=False),
        sa.Column(
            "process_queue_interval", sa.Integer(), server_default=sa.text("5"), nullable=False
        ),
        sa.Column(
            "get_replies_interval", sa.Integer(), server_default=sa.text("0"), nullable=False
        ),
        sa.Column("get_dr_interval", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("get_sc_interval", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("max_replies_id", sa.BigInteger(), server_default="0", nullable=False),
        sa.Column("max_dr_id", sa.BigInteger(), server_default="0", nullable=False),
        sa.Column("max_sc_id", sa.BigInteger(), server_default="0", nullable=False),
        sa.Column("last_process_replies", UTCDateTime(), nullable=True),
        sa.Column("last_process_dr", UTCDateTime(), nullable=True),
        sa.Column("last_process_sc", UTCDateTime(), nullable=True),
        sa.Column("last_process_queue", UTCDateTime(), nullable=True),
        sa.Column("rate_limit_per_second", sa.Double(), nullable=True),
        sa.Column("paused_until", UTCDateTime(), nullable=True),
        sa.Column("pause_reason", sa.String(length=200), nullable=True),
        sa.Column("inserted_at", UTCDateTime(), nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        sa.CheckConstraint("credits >= 0", name=op.f("ck_accounts_credits")),
        sa.CheckConstraint(
            "process_queue_interval >= 0 AND get_replies_interval >= 0 AND get_dr_interval >= 0 AND get_sc_interval >= 0",
            name=op.f("ck_accounts_intervals"),
        ),
        sa.CheckConstraint(
            "send_end_hour BETWEEN 0 AND 23", name=op.f("ck_accounts_send_end_hour")
        ),
        sa.CheckConstraint(
            "send_start_hour BETWEEN 0 AND 23", name=op.f("ck_accounts_send_start_hour")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_accounts")),
        sa.UniqueConstraint("name", name=op.f("uq_accounts_name")),
        schema="verification",
    )
    op.create_table(
        "metric_counters",
        sa.Column("name", sa.String(length=128), nullable=False),
        sa.Column("labels", sa.String(length=512), nullable=False),
        sa.Column("value", sa.Float(), nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("name", "labels", name=op.f("pk_metric_counters")),
        schema="verification",
    )
    op.create_table(
        "opt_outs",
        sa.Column("phone_number", sa.String(length=32), nullable=False),
        sa.Column("opted_out_at", UTCDateTime(), nullable=False),
        sa.Column("source", sa.String(length=16), nullable=False),
        sa.Column("keyword", sa.String(length=32), nullable=True),
        sa.PrimaryKeyConstraint("phone_number", name=op.f("pk_opt_outs")),
        schema="verification",
    )
    # Owned by the verification service in production: create it only where absent.
    if not sa.inspect(bind).has_table("verifications", schema=_schema(bind)):
        op.create_table(
            "verifications",
            sa.Column("id", sa.Uuid(), nullable=False),
            sa.Column("phone_number", sa.String(length=32), nullable=False),
            sa.Column("code", sa.String(length=32), nullable=False),
            sa.Column("status", sa.String(length=32), nullable=False),
            sa.Column("active", sa.Boolean(), server_default=sa.text("true"), nullable=False),
            sa.Column("attempts_count", sa.Integer(), server_default=sa.text("0"), nullable=False),
            sa.Column("gateway_id", sa.String(length=64), nullable=True),
            sa.Column("code_expired_at", UTCDateTime(), nullable=True),
            sa.Column("inserted_at", UTCDateTime(), nullable=False),
            sa.Column("updated_at", UTCDateTime(), nullable=False),
            sa.PrimaryKeyConstraint("id", name=op.f("pk_verifications")),
            schema="verification",
        )
        op.create_index(
            "ix_verifications_inserted_at",
            "verifications",
            ["inserted_at"],
            unique=False,
            schema="verification",
        )
    op.create_table(
        "api_keys",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("prefix", sa.String(length=16), nullable=False),
        sa.Column("key_hash", sa.String(length=128), nullable=False),
        sa.Column("signing_secret", sa.String(length=128), nullable=False),
        sa.Column("account_id", sa.Integer(), nullable=True),
        sa.Column("active", sa.Boolean(), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("revoked_at", UTCDateTime(), nullable=True),
        sa.ForeignKeyConstraint(
            ["account_id"],
            ["verification.accounts.id"],
            name=op.f("fk_api_keys_account_id_accounts"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_api_keys")),
        sa.UniqueConstraint("name", name=op.f("uq_api_keys_name")),
        schema="verification",
    )
    op.create_index(
        op.f("ix_api_keys_prefix"), "api_keys", ["prefix"], unique=False, schema="verification"
    )
    op.create_table(
        "sms_log",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("phone_number", sa.String(length=32), nullable=False),
        sa.Column("type", sa.String(length=32), nullable=False),
        sa.Column("body", sa.Text(), nullable=False),
        sa.Column("gateway_id", sa.String(length=64), nullable=True),
        sa.Column("gateway_status", sa.String(length=16), nullable=True),
        sa.Column("status_changed_at", UTCDateTime(), nullable=True),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        sa.Column("inserted_at", UTCDateTime(), nullable=False),
        sa.Column("account_id", sa.Integer(), nullable=False),
        sa.Column("sender_id", sa.String(length=16), nullable=True),
        sa.Column("priority", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("send_after", UTCDateTime(), nullable=True),
        sa.Column("due_at", UTCDateTime(), nullable=False),
        sa.Column("attempts", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("send_status", sa.String(length=32), nullable=False),
        sa.Column("last_error", sa.String(length=500), nullable=True),
        sa.Column("ext_id", sa.String(length=64), nullable=True),
        sa.Column("uniq_key", sa.String(length=64), nullable=True),
        sa.Column("submitted_at", UTCDateTime(), nullable=True),
        sa.Column("cost_centre", sa.String(length=64), nullable=True),
        sa.Column("customer_id", sa.String(length=128), nullable=True),
        sa.Column("flash", sa.Boolean(), server_default=sa.text("false"), nullable=False),
        sa.Column("segments", sa.Integer(), server_default=sa.text("1"), nullable=False),
        sa.Column("encoding", sa.String(length=8), server_default="GSM-7", nullable=False),
        sa.Column("verification_id", sa.Uuid(), nullable=True),
        sa.Column("queue_id", sa.BigInteger(), nullable=True),
        sa.Column("callback_url", sa.String(length=2000), nullable=True),
        sa.Column("api_key_id", sa.Integer(), nullable=True),
        sa.Column("dispatched_at", UTCDateTime(), nullable=True),
        sa.Column("lease_until", UTCDateTime(), nullable=True),
        sa.Column("next_check_at", UTCDateTime(), nullable=True),
        sa.Column("status_checks", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("final_at", UTCDateTime(), nullable=True),
        sa.CheckConstraint(
            "gateway_status IS NULL OR gateway_status IN ('Accepted', 'Enroute', 'Delivered', 'Expired', 'Deleted', 'Undeliverable', 'Rejected', 'Unknown', 'Unaccepted', 'Terminated', 'Pending')",
            name=op.f("ck_sms_log_gateway_status"),
        ),
        sa.CheckConstraint(
            "send_status IN ('QUEUED', 'SENDING', 'SUBMITTED', 'REJECTED', 'RETRYCOUNT EXCEEDED', 'number invalid', 'data1 invalid', 'OPTED OUT')",
            name=op.f("ck_sms_log_send_status"),
        ),
        sa.CheckConstraint(
            "type IN ('verification', 'medication_request', 'text', '2FA')",
            name=op.f("ck_sms_log_type"),
        ),
        sa.CheckConstraint("attempts >= 0", name=op.f("ck_sms_log_attempts")),
        sa.ForeignKeyConstraint(
            ["account_id"],
            ["verification.accounts.id"],
            name=op.f("fk_sms_log_account_id_accounts"),
        ),
        sa.ForeignKeyConstraint(
            ["api_key_id"],
            ["verification.api_keys.id"],
            name=op.f("fk_sms_log_api_key_id_api_keys"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_sms_log")),
        sa.UniqueConstraint("queue_id", name=op.f("uq_sms_log_queue_id")),
        sa.UniqueConstraint("uniq_key", name=op.f("uq_sms_log_uniq_key")),
        sa.UniqueConstraint("verification_id", name=op.f("uq_sms_log_verification_id")),
        schema="verification",
    )
    op.create_index(
        "ix_sms_log_callbacks",
        "sms_log",
        ["final_at"],
        unique=False,
        schema="verification",
        postgresql_where=sa.text("callback_url IS NOT NULL"),
        sqlite_where=sa.text("callback_url IS NOT NULL"),
    )
    op.create_index(
        "ix_sms_log_gateway_id", "sms_log", ["gateway_id"], unique=False, schema="verification"
    )
    op.create_index(
        "ix_sms_log_inserted_at", "sms_log", ["inserted_at"], unique=False, schema="verification"
    )
    op.create_index(
        "ix_sms_log_moving",
        "sms_log",
        ["next_check_at"],
        unique=False,
        schema="verification",
        postgresql_where=sa.text("gateway_status IN ('Accepted', 'Enroute', 'Pending', 'Unknown')"),
        sqlite_where=sa.text("gateway_status IN ('Accepted', 'Enroute', 'Pending', 'Unknown')"),
    )
    op.create_index(
        "ix_sms_log_outbox",
        "sms_log",
        ["account_id", sa.literal_column("priority DESC"), "due_at"],
        unique=False,
        schema="verification",
        postgresql_where=sa.text("send_status IN ('QUEUED', 'SENDING')"),
        sqlite_where=sa.text("send_status IN ('QUEUED', 'SENDING')"),
    )
    op.create_table(
        "sms_queue",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("account_id", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(length=8), server_default="SMS", nullable=False),
        sa.Column("message_type", sa.String(length=32), server_default="text", nullable=False),
        sa.Column("sender_id", sa.String(length=16), nullable=True),
        sa.Column("num_to", sa.String(length=64), nullable=False),
        sa.Column("data1", sa.Text(), nullable=False),
        sa.Column("data2", sa.Text(), nullable=True),
        sa.Column("flash", sa.Boolean(), server_default=sa.text("false"), nullable=False),
        sa.Column("send_at", UTCDateTime(), nullable=True),
        sa.Column("priority", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("retry_count", sa.Integer(), server_default=sa.text("-1"), nullable=False),
        sa.Column("cost_centre", sa.String(length=64), nullable=True),
        sa.Column("customer_id", sa.String(length=128), nullable=True),
        sa.Column("inserted_at", UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["account_id"],
            ["verification.accounts.id"],
            name=op.f("fk_sms_queue_account_id_accounts"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_sms_queue")),
        schema="verification",
    )
    op.create_index(
        "ix_sms_queue_account_priority",
        "sms_queue",
        ["account_id", sa.literal_column("priority DESC"), "send_at"],
        unique=False,
        schema="verification",
    )
    op.create_table(
        "sms_shortcodes",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("account_id", sa.Integer(), nullable=False),
        sa.Column("gateway_sc_id", sa.BigInteger(), nullable=True),
        sa.Column("shortcode", sa.String(length=16), nullable=False),
        sa.Column("keyword", sa.String(length=64), nullable=True),
        sa.Column("num_from", sa.String(length=32), nullable=False),
        sa.Column("data", sa.Text(), nullable=False),
        sa.Column("received_at", UTCDateTime(), nullable=False),
        sa.Column("opt_out", sa.Boolean(), nullable=False),
        sa.Column("opt_in", sa.Boolean(), nullable=False),
        sa.Column("inserted_at", UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["account_id"],
            ["verification.accounts.id"],
            name=op.f("fk_sms_shortcodes_account_id_accounts"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_sms_shortcodes")),
        sa.UniqueConstraint(
            "account_id", "gateway_sc_id", name=op.f("uq_sms_shortcodes_account_id_gateway_sc_id")
        ),
        schema="verification",
    )
    op.create_index(
        "ix_sms_shortcodes_received_at",
        "sms_shortcodes",
        ["received_at"],
        unique=False,
        schema="verification",
    )
    op.create_table(
        "api_idempotency",
        sa.Column("api_key_id", sa.Integer(), nullable=False),
        sa.Column("key", sa.String(length=128), nullable=False),
        sa.Column("request_hash", sa.String(length=64), nullable=False),
        sa.Column("message_id", sa.Uuid(), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["api_key_id"],
            ["verification.api_keys.id"],
            name=op.f("fk_api_idempotency_api_key_id_api_keys"),
        ),
        sa.ForeignKeyConstraint(
            ["message_id"],
            ["verification.sms_log.id"],
            name=op.f("fk_api_idempotency_message_id_sms_log"),
        ),
        sa.PrimaryKeyConstraint("api_key_id", "key", name=op.f("pk_api_idempotency")),
        schema="verification",
    )
    op.create_table(
        "callback_events",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("message_id", sa.Uuid(), nullable=False),
        sa.Column("api_key_id", sa.Integer(), nullable=True),
        sa.Column("status", sa.String(length=32), nullable=False),
        sa.Column("payload", sa.Text(), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", UTCDateTime(), nullable=True),
        sa.Column("delivered_at", UTCDateTime(), nullable=True),
        sa.Column("last_error", sa.String(length=500), nullable=True),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["api_key_id"],
            ["verification.api_keys.id"],
            name=op.f("fk_callback_events_api_key_id_api_keys"),
        ),
        sa.ForeignKeyConstraint(
            ["message_id"],
            ["verification.sms_log.id"],
            name=op.f("fk_callback_events_message_id_sms_log"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_callback_events")),
        sa.UniqueConstraint(
            "message_id", "status", name=op.f("uq_callback_events_message_id_status")
        ),
        schema="verification",
    )
    op.create_index(
        "ix_callback_events_due",
        "callback_events",
        ["next_attempt_at"],
        unique=False,
        schema="verification",
    )
    op.create_table(
        "sms_replies",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("account_id", sa.Integer(), nullable=False),
        sa.Column("gateway_reply_id", sa.BigInteger(), nullable=True),
        sa.Column("message_id", sa.Uuid(), nullable=True),
        sa.Column("phone_number", sa.String(length=32), nullable=False),
        sa.Column("received_data", sa.Text(), nullable=False),
        sa.Column("received_at", UTCDateTime(), nullable=False),
        sa.Column("opt_out", sa.Boolean(), nullable=False),
        sa.Column("opt_in", sa.Boolean(), nullable=False),
        sa.Column("customer_id", sa.String(length=128), nullable=True),
        sa.Column("inserted_at", UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["account_id"],
            ["verification.accounts.id"],
            name=op.f("fk_sms_replies_account_id_accounts"),
        ),
        sa.ForeignKeyConstraint(
            ["message_id"],
            ["verification.sms_log.id"],
            name=op.f("fk_sms_replies_message_id_sms_log"),
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_sms_replies")),
        sa.UniqueConstraint(
            "account_id",
            "gateway_reply_id",
            name=op.f("uq_sms_replies_account_id_gateway_reply_id"),
        ),
        schema="verification",
    )
    op.create_index(
        op.f("ix_sms_replies_message_id"),
        "sms_replies",
        ["message_id"],
        unique=False,
        schema="verification",
    )
    op.create_index(
        "ix_sms_replies_received_at",
        "sms_replies",
        ["received_at"],
        unique=False,
        schema="verification",
    )


def downgrade() -> None:
    op.drop_index("ix_sms_replies_received_at", table_name="sms_replies", schema="verification")
    op.drop_index(
        op.f("ix_sms_replies_message_id"), table_name="sms_replies", schema="verification"
    )
    op.drop_table("sms_replies", schema="verification")
    op.drop_index("ix_callback_events_due", table_name="callback_events", schema="verification")
    op.drop_table("callback_events", schema="verification")
    op.drop_table("api_idempotency", schema="verification")
    op.drop_index(
        "ix_sms_shortcodes_received_at", table_name="sms_shortcodes", schema="verification"
    )
    op.drop_table("sms_shortcodes", schema="verification")
    op.drop_index("ix_sms_queue_account_priority", table_name="sms_queue", schema="verification")
    op.drop_table("sms_queue", schema="verification")
    op.drop_index(
        "ix_sms_log_outbox",
        table_name="sms_log",
        schema="verification",
        postgresql_where=sa.text("send_status IN ('QUEUED', 'SENDING')"),
        sqlite_where=sa.text("send_status IN ('QUEUED', 'SENDING')"),
    )
    op.drop_index(
        "ix_sms_log_moving",
        table_name="sms_log",
        schema="verification",
        postgresql_where=sa.text("gateway_status IN ('Accepted', 'Enroute', 'Pending', 'Unknown')"),
        sqlite_where=sa.text("gateway_status IN ('Accepted', 'Enroute', 'Pending', 'Unknown')"),
    )
    op.drop_index("ix_sms_log_inserted_at", table_name="sms_log", schema="verification")
    op.drop_index("ix_sms_log_gateway_id", table_name="sms_log", schema="verification")
    op.drop_index("ix_sms_log_callbacks", table_name="sms_log", schema="verification")
    op.drop_table("sms_log", schema="verification")
    op.drop_index(op.f("ix_api_keys_prefix"), table_name="api_keys", schema="verification")
    op.drop_table("api_keys", schema="verification")
    # verifications stays: it may hold the verification service's data.
    op.drop_table("opt_outs", schema="verification")
    op.drop_table("metric_counters", schema="verification")
    op.drop_table("accounts", schema="verification")

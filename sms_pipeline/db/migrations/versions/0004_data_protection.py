"""data protection: expiry, supersede, redaction, retention rollups, audit, erased opt-outs

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-01 14:45:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from sms_pipeline.db.models.base import BIGINT_PK, UTCDateTime

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _schema() -> str | None:
    # SQLite has no schemas (the engine maps "verification" away; raw ALTERs need None).
    return None if op.get_bind().dialect.name == "sqlite" else "verification"


_OLD_SEND_STATUSES = (
    "send_status IN ('QUEUED', 'SENDING', 'SUBMITTED', 'REJECTED', 'RETRYCOUNT EXCEEDED', "
    "'number invalid', 'data1 invalid', 'OPTED OUT')"
)
_NEW_SEND_STATUSES = (
    "send_status IN ('QUEUED', 'SENDING', 'SUBMITTED', 'REJECTED', 'RETRYCOUNT EXCEEDED', "
    "'number invalid', 'data1 invalid', 'OPTED OUT', 'EXPIRED', 'SUPERSEDED')"
)
_UNREDACTED = "redacted_at IS NULL AND final_at IS NOT NULL"


def _send_status_check(condition: str) -> None:
    with op.batch_alter_table("sms_log", schema=_schema()) as batch:
        batch.drop_constraint(op.f("ck_sms_log_send_status"), type_="check")
        batch.create_check_constraint("send_status", sa.text(condition))


def _restore_outbox_index() -> None:
    # SQLite's batch mode copies the table and rebuilds its indexes from reflection, which
    # loses DESC: rebuild the outbox index as written.
    if _schema() is not None:
        return
    pending = "send_status IN ('QUEUED', 'SENDING')"
    op.drop_index("ix_sms_log_outbox", table_name="sms_log")
    op.create_index(
        "ix_sms_log_outbox",
        "sms_log",
        ["account_id", sa.text("priority DESC"), "due_at"],
        sqlite_where=sa.text(pending),
    )


def upgrade() -> None:
    with op.batch_alter_table("sms_log", schema=_schema()) as batch:
        batch.add_column(sa.Column("expires_at", UTCDateTime(), nullable=True))
        batch.add_column(sa.Column("superseded_by", sa.Uuid(), nullable=True))
        batch.add_column(sa.Column("redacted_at", UTCDateTime(), nullable=True))
        batch.add_column(sa.Column("body_chars", sa.Integer(), nullable=True))
    _send_status_check(_NEW_SEND_STATUSES)
    _restore_outbox_index()
    op.create_index("ix_sms_log_phone_number", "sms_log", ["phone_number"], schema=_schema())
    op.create_index(
        "ix_sms_log_unredacted",
        "sms_log",
        ["type", "final_at"],
        schema=_schema(),
        postgresql_where=sa.text(_UNREDACTED),
        sqlite_where=sa.text(_UNREDACTED),
    )
    op.create_index(
        op.f("ix_api_idempotency_message_id"), "api_idempotency", ["message_id"], schema=_schema()
    )
    with op.batch_alter_table("api_keys", schema=_schema()) as batch:
        batch.add_column(
            sa.Column("admin", sa.Boolean(), server_default=sa.text("false"), nullable=False)
        )
    op.create_table(
        "privacy_audit",
        sa.Column("id", BIGINT_PK, autoincrement=True, nullable=False),
        sa.Column("at", UTCDateTime(), nullable=False),
        sa.Column("actor", sa.String(length=128), nullable=False),
        sa.Column("action", sa.String(length=32), nullable=False),
        sa.Column("subject_hash", sa.String(length=64), nullable=True),
        sa.Column("detail", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_privacy_audit")),
        schema=_schema(),
    )
    op.create_index("ix_privacy_audit_at", "privacy_audit", ["at"], schema=_schema())
    op.create_table(
        "sms_daily_rollup",
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("hour", sa.Integer(), nullable=False),
        sa.Column("type", sa.String(length=32), nullable=False),
        sa.Column("outcome", sa.String(length=32), nullable=False),
        sa.Column("messages", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("segments", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.PrimaryKeyConstraint("day", "hour", "type", "outcome", name=op.f("pk_sms_daily_rollup")),
        schema=_schema(),
    )
    op.create_table(
        "opt_out_hashes",
        sa.Column("phone_hash", sa.String(length=64), nullable=False),
        sa.Column("opted_out_at", UTCDateTime(), nullable=False),
        sa.Column("source", sa.String(length=16), nullable=False),
        sa.PrimaryKeyConstraint("phone_hash", name=op.f("pk_opt_out_hashes")),
        schema=_schema(),
    )


def downgrade() -> None:
    op.drop_table("opt_out_hashes", schema=_schema())
    op.drop_table("sms_daily_rollup", schema=_schema())
    op.drop_index("ix_privacy_audit_at", table_name="privacy_audit", schema=_schema())
    op.drop_table("privacy_audit", schema=_schema())
    with op.batch_alter_table("api_keys", schema=_schema()) as batch:
        batch.drop_column("admin")
    op.drop_index(
        op.f("ix_api_idempotency_message_id"), table_name="api_idempotency", schema=_schema()
    )
    op.drop_index(
        "ix_sms_log_unredacted",
        table_name="sms_log",
        schema=_schema(),
        postgresql_where=sa.text(_UNREDACTED),
        sqlite_where=sa.text(_UNREDACTED),
    )
    op.drop_index("ix_sms_log_phone_number", table_name="sms_log", schema=_schema())
    # Rows in the new final states would break the old check: they were never sent.
    op.execute(
        sa.text(
            f"UPDATE {'sms_log' if _schema() is None else 'verification.sms_log'} "
            "SET send_status = 'REJECTED' WHERE send_status IN ('EXPIRED', 'SUPERSEDED')"
        )
    )
    _send_status_check(_OLD_SEND_STATUSES)
    with op.batch_alter_table("sms_log", schema=_schema()) as batch:
        batch.drop_column("body_chars")
        batch.drop_column("redacted_at")
        batch.drop_column("superseded_by")
        batch.drop_column("expires_at")
    _restore_outbox_index()

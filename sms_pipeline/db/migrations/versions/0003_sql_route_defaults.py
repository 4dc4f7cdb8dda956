"""SQL route by plain SQL: server defaults, the sms_sent view, the real verifications shape

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-01 15:00:00

- accounts: `credits` (1,000,000), `inserted_at`, `updated_at` get server defaults, so
  INSERT (name, username) is a working account; sms_queue: `inserted_at` likewise, so
  INSERT (account_id, num_to, data1) is a working queue row.
- sms_log: `send_status` also allows EXPIRED; `customer_id` is indexed.
- view `sms_sent` (SMSPortal's SENT), generated from the mapping in db/models/sent.py.
- verifications: the table our 0001 created for demo and tests takes the verification
  service's real shape. How we tell ours from theirs: ours has `updated_at` and no
  `check_digit`; the service's table has `check_digit` and never had `updated_at`. A
  table that is not ours is never touched (we do not write the service's table).
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from sms_pipeline.db.models.base import UTCDateTime, UTCTimestamp
from sms_pipeline.db.models.messages import SEND_STATUSES
from sms_pipeline.db.models.sent import drop_sms_sent_view_sql, sms_sent_view_sql

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

NOW = sa.text("CURRENT_TIMESTAMP")
POSTPAID_CREDITS = "1000000"
# The send statuses at this revision. Built from the model too, so that migrations of
# parallel branches that each add a status (merged in either order) end with all of them.
_SEND_STATUSES_0001 = (
    "QUEUED",
    "SENDING",
    "SUBMITTED",
    "REJECTED",
    "RETRYCOUNT EXCEEDED",
    "number invalid",
    "data1 invalid",
    "OPTED OUT",
)


def _send_status_check(extra: tuple[str, ...]) -> str:
    values = list(dict.fromkeys(_SEND_STATUSES_0001 + extra))
    quoted = ", ".join("'" + v.replace("'", "''") + "'" for v in values)
    return f"send_status IN ({quoted})"


def _schema(bind: sa.engine.Connection) -> str | None:
    return None if bind.dialect.name == "sqlite" else "verification"


def _verifications_is_ours(bind: sa.engine.Connection) -> bool:
    inspector = sa.inspect(bind)
    schema = _schema(bind)
    if not inspector.has_table("verifications", schema=schema):
        return False
    columns = {c["name"] for c in inspector.get_columns("verifications", schema=schema)}
    return "updated_at" in columns and "check_digit" not in columns


def _reshape_our_verifications(bind: sa.engine.Connection) -> None:
    schema = _schema(bind)
    table = "verifications" if schema is None else f"{schema}.verifications"
    sqlite = bind.dialect.name == "sqlite"
    # One active verification per number (the service's unique partial index): keep the
    # newest, cancel the others, as the service does when it issues a new code.
    op.execute(
        f"UPDATE {table} SET active = false, status = 'canceled' "
        f"WHERE active AND EXISTS (SELECT 1 FROM {table} AS newer "
        f"WHERE newer.phone_number = {table}.phone_number AND newer.active "
        f"AND (newer.inserted_at > {table}.inserted_at OR (newer.inserted_at = "
        f"{table}.inserted_at AND newer.id > {table}.id)))"
    )
    op.execute(f"UPDATE {table} SET code_expired_at = inserted_at WHERE code_expired_at IS NULL")
    if not sqlite:
        # Codes were text in our old shape; non-digits cannot have been real codes.
        op.execute(f"UPDATE {table} SET code = '0' WHERE code !~ '^[0-9]{{1,9}}$'")
    else:
        op.execute(f"UPDATE {table} SET code = '0' WHERE code GLOB '*[^0-9]*' OR code = ''")
    with op.batch_alter_table("verifications", schema=schema) as batch:
        batch.add_column(
            sa.Column("check_digit", sa.Integer(), server_default=sa.text("0"), nullable=False)
        )
    with op.batch_alter_table("verifications", schema=schema) as batch:
        batch.alter_column("check_digit", server_default=None, existing_type=sa.Integer())
        batch.alter_column(
            "phone_number",
            type_=sa.String(length=255),
            existing_type=sa.String(length=32),
            existing_nullable=False,
        )
        batch.alter_column(
            "status",
            type_=sa.String(length=255),
            existing_type=sa.String(length=32),
            existing_nullable=False,
        )
        batch.alter_column(
            "code",
            type_=sa.Integer(),
            existing_type=sa.String(length=32),
            existing_nullable=False,
            postgresql_using="code::integer",
        )
        batch.alter_column(
            "code_expired_at",
            type_=UTCTimestamp(),
            existing_type=UTCDateTime(),
            nullable=False,
            postgresql_using="code_expired_at AT TIME ZONE 'UTC'",
        )
        batch.alter_column(
            "inserted_at",
            type_=UTCTimestamp(),
            existing_type=UTCDateTime(),
            existing_nullable=False,
            postgresql_using="inserted_at AT TIME ZONE 'UTC'",
        )
        batch.alter_column("active", nullable=True, existing_type=sa.Boolean())
        batch.alter_column("attempts_count", nullable=True, existing_type=sa.Integer())
        batch.drop_column("gateway_id")
        batch.drop_column("updated_at")
    op.create_index(
        "verifications_phone_number_index",
        "verifications",
        ["phone_number"],
        unique=True,
        schema=schema,
        postgresql_where=sa.text("active"),
        sqlite_where=sa.text("active"),
    )


def _restore_descending_indexes(bind: sa.engine.Connection) -> None:
    """SQLite's batch copy reflects `priority DESC` as plain `priority`: put it back."""
    if bind.dialect.name != "sqlite":
        return
    op.execute("DROP INDEX IF EXISTS ix_sms_log_outbox")
    op.execute(
        "CREATE INDEX ix_sms_log_outbox ON sms_log (account_id, priority DESC, due_at) "
        "WHERE send_status IN ('QUEUED', 'SENDING')"
    )
    op.execute("DROP INDEX IF EXISTS ix_sms_queue_account_priority")
    op.execute(
        "CREATE INDEX ix_sms_queue_account_priority ON sms_queue "
        "(account_id, priority DESC, send_at)"
    )


def upgrade() -> None:
    bind = op.get_bind()
    schema = _schema(bind)
    with op.batch_alter_table("accounts", schema=schema) as batch:
        batch.alter_column(
            "credits", server_default=sa.text(POSTPAID_CREDITS), existing_type=sa.BigInteger()
        )
        batch.alter_column("inserted_at", server_default=NOW, existing_type=UTCDateTime())
        batch.alter_column("updated_at", server_default=NOW, existing_type=UTCDateTime())
    with op.batch_alter_table("sms_queue", schema=schema) as batch:
        batch.alter_column("inserted_at", server_default=NOW, existing_type=UTCDateTime())
    with op.batch_alter_table("sms_log", schema=schema) as batch:
        batch.drop_constraint(op.f("ck_sms_log_send_status"), type_="check")
        batch.create_check_constraint(
            op.f("ck_sms_log_send_status"),
            sa.text(_send_status_check(("EXPIRED", *SEND_STATUSES))),
        )
    _restore_descending_indexes(bind)
    op.create_index(
        op.f("ix_sms_log_customer_id"), "sms_log", ["customer_id"], unique=False, schema=schema
    )
    op.execute(sms_sent_view_sql(bind.dialect.name, carried=False))
    if _verifications_is_ours(bind):
        _reshape_our_verifications(bind)


def downgrade() -> None:
    bind = op.get_bind()
    schema = _schema(bind)
    # verifications keeps the real shape: 0001 leaves that table alone from here on.
    op.execute(drop_sms_sent_view_sql(bind.dialect.name))
    op.drop_index(op.f("ix_sms_log_customer_id"), table_name="sms_log", schema=schema)
    op.execute(
        f"UPDATE {'sms_log' if schema is None else schema + '.sms_log'} "
        "SET send_status = 'REJECTED' WHERE send_status = 'EXPIRED'"
    )
    with op.batch_alter_table("sms_log", schema=schema) as batch:
        batch.drop_constraint(op.f("ck_sms_log_send_status"), type_="check")
        batch.create_check_constraint(
            op.f("ck_sms_log_send_status"), sa.text(_send_status_check(()))
        )
    with op.batch_alter_table("sms_queue", schema=schema) as batch:
        batch.alter_column("inserted_at", server_default=None, existing_type=UTCDateTime())
    with op.batch_alter_table("accounts", schema=schema) as batch:
        batch.alter_column("credits", server_default=None, existing_type=sa.BigInteger())
        batch.alter_column("inserted_at", server_default=None, existing_type=UTCDateTime())
        batch.alter_column("updated_at", server_default=None, existing_type=UTCDateTime())
    _restore_descending_indexes(bind)

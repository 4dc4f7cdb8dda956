"""one intake: new refusal words, Data2 and operator columns, queue ids never reused

- sms_log: `send_status` also allows `send_at invalid` and `priority invalid`; new
  columns `data2` and `extra` (the queue row's Data2 and operator-added columns, JSON).
- sms_sent: shows `data2` and `extra`.
- sms_queue (SQLite): rebuilt with AUTOINCREMENT, rows kept; the sequence starts after
  every id already used (in the queue or in sms_log.queue_id), so no id is handed out twice.
- sms_queue_unreadable: queue rows the database could not read back, moved aside.
- accounts: a post-paid account always reads 1,000,000 credits (a trigger sets it on
  every insert and update; existing post-paid rows are set now).

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-07 13:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from sms_pipeline.db.models.base import BIGINT_PK, NOW, UTCDateTime
from sms_pipeline.db.models.sent import VIEW_NAME, sms_sent_view_sql

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_BASE = (
    "'QUEUED', 'SENDING', 'SUBMITTED', 'REJECTED', 'RETRYCOUNT EXCEEDED', "
    "'number invalid', 'data1 invalid', 'OPTED OUT', 'EXPIRED', 'SUPERSEDED'"
)
_OLD_SEND_STATUSES = f"send_status IN ({_BASE})"
_NEW_SEND_STATUSES = f"send_status IN ({_BASE}, 'send_at invalid', 'priority invalid')"
_PENDING = "send_status IN ('QUEUED', 'SENDING')"
_URGENT = _PENDING + " AND type IN ('2FA', 'verification')"


def _sqlite() -> bool:
    return op.get_bind().dialect.name == "sqlite"


def _schema() -> str | None:
    return None if _sqlite() else "verification"


def _drop_view() -> None:
    op.execute(f"DROP VIEW IF EXISTS {'' if _sqlite() else 'verification.'}{VIEW_NAME}")


def _restore_outbox_indexes() -> None:
    # SQLite's batch mode rebuilds indexes from reflection, which loses DESC: as written.
    if not _sqlite():
        return
    for name, where in (("ix_sms_log_outbox", _PENDING), ("ix_sms_log_outbox_urgent", _URGENT)):
        op.drop_index(name, table_name="sms_log", if_exists=True)
        op.create_index(
            name,
            "sms_log",
            ["account_id", sa.text("priority DESC"), "due_at"],
            sqlite_where=sa.text(where),
        )


def _rebuild_queue(autoincrement: bool) -> None:
    """SQLite: sms_queue again, with (or without) AUTOINCREMENT; its rows kept."""
    bind = op.get_bind()
    with op.batch_alter_table(
        "sms_queue", recreate="always", table_kwargs={"sqlite_autoincrement": autoincrement}
    ):
        pass
    op.execute(
        "CREATE INDEX IF NOT EXISTS ix_sms_queue_account_priority "
        "ON sms_queue (account_id, priority DESC, send_at)"
    )
    if autoincrement:
        used = bind.exec_driver_sql(
            "SELECT max(coalesce((SELECT max(id) FROM sms_queue), 0), "
            "coalesce((SELECT max(queue_id) FROM sms_log), 0))"
        ).scalar()
        bind.exec_driver_sql("DELETE FROM sqlite_sequence WHERE name = 'sms_queue'")
        bind.exec_driver_sql(
            "INSERT INTO sqlite_sequence (name, seq) VALUES ('sms_queue', ?)", (int(used or 0),)
        )


_PG_CREDITS = """
CREATE FUNCTION verification.postpaid_credits() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.postpaid THEN NEW.credits := 1000000; END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER postpaid_credits BEFORE INSERT OR UPDATE ON verification.accounts
    FOR EACH ROW EXECUTE FUNCTION verification.postpaid_credits();
"""
_SQLITE_CREDITS = [
    f"CREATE TRIGGER postpaid_credits_{event} AFTER {event.upper()}{columns} ON accounts "
    "WHEN NEW.postpaid AND NEW.credits IS NOT 1000000 "
    "BEGIN UPDATE accounts SET credits = 1000000 WHERE id = NEW.id; END"
    for event, columns in (("insert", ""), ("update", " OF postpaid, credits"))
]


def _postpaid_credits() -> None:
    prefix = "" if _sqlite() else "verification."
    op.execute(f"UPDATE {prefix}accounts SET credits = 1000000 WHERE postpaid")
    for statement in _SQLITE_CREDITS if _sqlite() else [_PG_CREDITS]:
        op.execute(statement)


def _drop_postpaid_credits() -> None:
    if _sqlite():
        for event in ("insert", "update"):
            op.execute(f"DROP TRIGGER IF EXISTS postpaid_credits_{event}")
    else:
        op.execute("DROP TRIGGER IF EXISTS postpaid_credits ON verification.accounts")
        op.execute("DROP FUNCTION IF EXISTS verification.postpaid_credits()")


def upgrade() -> None:
    _postpaid_credits()
    _drop_view()
    with op.batch_alter_table("sms_log", schema=_schema()) as batch:
        batch.add_column(sa.Column("data2", sa.Text(), nullable=True))
        batch.add_column(sa.Column("extra", sa.Text(), nullable=True))
        batch.drop_constraint(op.f("ck_sms_log_send_status"), type_="check")
        batch.create_check_constraint("send_status", sa.text(_NEW_SEND_STATUSES))
    _restore_outbox_indexes()
    op.create_table(
        "sms_queue_unreadable",
        sa.Column("id", BIGINT_PK, primary_key=True, autoincrement=True),
        sa.Column("queue_id", sa.BigInteger(), nullable=False),
        sa.Column("account_id", sa.BigInteger(), nullable=True),
        sa.Column("customer_id", sa.Text(), nullable=True),
        sa.Column("error", sa.Text(), nullable=False),
        sa.Column("moved_at", UTCDateTime(), server_default=NOW, nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_sms_queue_unreadable")),
        sa.UniqueConstraint("queue_id", name=op.f("uq_sms_queue_unreadable_queue_id")),
        schema=_schema(),
    )
    if _sqlite():
        _rebuild_queue(autoincrement=True)
    op.execute(sms_sent_view_sql(op.get_bind().dialect.name))


def downgrade() -> None:
    _drop_postpaid_credits()
    _drop_view()
    if _sqlite():
        _rebuild_queue(autoincrement=False)
    op.drop_table("sms_queue_unreadable", schema=_schema())
    op.execute(
        f"UPDATE {'' if _sqlite() else 'verification.'}sms_log SET send_status = 'data1 invalid' "
        "WHERE send_status IN ('send_at invalid', 'priority invalid')"
    )
    with op.batch_alter_table("sms_log", schema=_schema()) as batch:
        batch.drop_constraint(op.f("ck_sms_log_send_status"), type_="check")
        batch.create_check_constraint("send_status", sa.text(_OLD_SEND_STATUSES))
        batch.drop_column("extra")
        batch.drop_column("data2")
    _restore_outbox_indexes()
    op.execute(sms_sent_view_sql(op.get_bind().dialect.name, carried=False))

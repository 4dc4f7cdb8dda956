"""The SMSPortal SQL service's QUEUE table: the SQL route, where applications insert rows.

The queue poller validates each row, turns it into an `sms_log` message and deletes it
in one transaction; bad rows still end in the log as `number invalid` / `data1 invalid`.
"""

from __future__ import annotations

import datetime as dt

from sqlalchemy import BigInteger, ForeignKey, Index, String, Text, text
from sqlalchemy.orm import Mapped, mapped_column

from .base import BIGINT_PK, NOW, Base, utcnow


class SmsQueue(Base):
    __tablename__ = "sms_queue"
    __table_args__ = (
        Index("ix_sms_queue_account_priority", "account_id", text("priority DESC"), "send_at"),
        # SQLite: ids are never reused once the top rows are deleted (sms_log.queue_id is
        # unique, so a reused id could never be stored).
        {"sqlite_autoincrement": True},
    )

    id: Mapped[int] = mapped_column(BIGINT_PK, primary_key=True, autoincrement=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id"))  # SMSPortal: UserID
    kind: Mapped[str] = mapped_column(String(8), default="SMS", server_default="SMS")
    message_type: Mapped[str] = mapped_column(String(32), default="text", server_default="text")
    sender_id: Mapped[str | None] = mapped_column(String(16))
    num_to: Mapped[str] = mapped_column(String(64))
    data1: Mapped[str] = mapped_column(Text)
    data2: Mapped[str | None] = mapped_column(Text)
    flash: Mapped[bool] = mapped_column(default=False, server_default=text("false"))
    send_at: Mapped[dt.datetime | None]  # SMSPortal: SendDatetime
    priority: Mapped[int] = mapped_column(default=0, server_default=text("0"))
    retry_count: Mapped[int] = mapped_column(default=-1, server_default=text("-1"))
    cost_centre: Mapped[str | None] = mapped_column(String(64))
    customer_id: Mapped[str | None] = mapped_column(String(128))
    inserted_at: Mapped[dt.datetime] = mapped_column(default=utcnow, server_default=NOW)


class SmsQueueUnreadable(Base):
    """A queue row the database itself could not read back (e.g. invalid UTF-8 in SQLite
    text): moved aside here with its id and the error, so it never stops the queue."""

    __tablename__ = "sms_queue_unreadable"

    id: Mapped[int] = mapped_column(BIGINT_PK, primary_key=True, autoincrement=True)
    queue_id: Mapped[int] = mapped_column(BigInteger, unique=True)
    account_id: Mapped[int | None] = mapped_column(BigInteger)
    customer_id: Mapped[str | None] = mapped_column(Text)
    error: Mapped[str] = mapped_column(Text)
    moved_at: Mapped[dt.datetime] = mapped_column(default=utcnow, server_default=NOW)

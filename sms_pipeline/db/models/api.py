"""HTTP API keys, idempotency records and delivery-status callback events."""

from __future__ import annotations

import datetime as dt
import uuid

from sqlalchemy import ForeignKey, Index, String, Text, UniqueConstraint, Uuid, text
from sqlalchemy.orm import Mapped, mapped_column

from .base import BIGINT_PK, Base, utcnow


class ApiKey(Base):
    __tablename__ = "api_keys"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    # The first characters of the key, to find its row; the key itself is stored hashed.
    prefix: Mapped[str] = mapped_column(String(16), index=True)
    key_hash: Mapped[str] = mapped_column(String(128))
    # Signs callback events (HMAC-SHA256); shown once at creation.
    signing_secret: Mapped[str] = mapped_column(String(128))
    account_id: Mapped[int | None] = mapped_column(ForeignKey("accounts.id"))
    active: Mapped[bool] = mapped_column(default=True)
    # May export and erase a person's data (/v1/subjects/export|erase) in its own account.
    admin: Mapped[bool] = mapped_column(default=False, server_default=text("false"))
    # May export and erase in every account (`api-key create NAME --platform-admin` only).
    platform_admin: Mapped[bool] = mapped_column(default=False, server_default=text("false"))
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    revoked_at: Mapped[dt.datetime | None]


class IdempotencyRecord(Base):
    __tablename__ = "api_idempotency"

    api_key_id: Mapped[int] = mapped_column(ForeignKey("api_keys.id"), primary_key=True)
    key: Mapped[str] = mapped_column(String(128), primary_key=True)
    request_hash: Mapped[str] = mapped_column(String(64))
    # Indexed: retention and erasure delete a message's records (and the foreign key
    # check on every deleted message would otherwise scan this table).
    message_id: Mapped[uuid.UUID] = mapped_column(Uuid, ForeignKey("sms_log.id"), index=True)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class CallbackEvent(Base):
    """A final-status event to POST to a message's callback URL, once per status."""

    __tablename__ = "callback_events"
    __table_args__ = (
        UniqueConstraint("message_id", "status"),
        Index("ix_callback_events_due", "next_attempt_at"),
    )

    id: Mapped[int] = mapped_column(BIGINT_PK, primary_key=True, autoincrement=True)
    message_id: Mapped[uuid.UUID] = mapped_column(Uuid, ForeignKey("sms_log.id"))
    api_key_id: Mapped[int | None] = mapped_column(ForeignKey("api_keys.id"))
    status: Mapped[str] = mapped_column(String(32))
    payload: Mapped[str] = mapped_column(Text)
    attempts: Mapped[int] = mapped_column(default=0)
    next_attempt_at: Mapped[dt.datetime | None] = mapped_column(default=utcnow)
    delivered_at: Mapped[dt.datetime | None]
    last_error: Mapped[str | None] = mapped_column(String(500))
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)

"""`verification.verifications`: owned by the verification service in production.

Our migration creates it only where it is absent (demo and tests); replication reads it.
"""

from __future__ import annotations

import datetime as dt
import uuid

from sqlalchemy import Index, String, Uuid, text
from sqlalchemy.orm import Mapped, mapped_column

from .base import Base, utcnow


class Verification(Base):
    __tablename__ = "verifications"
    __table_args__ = (Index("ix_verifications_inserted_at", "inserted_at"),)

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    phone_number: Mapped[str] = mapped_column(String(32))
    code: Mapped[str] = mapped_column(String(32))
    status: Mapped[str] = mapped_column(String(32), default="new")
    active: Mapped[bool] = mapped_column(default=True, server_default=text("true"))
    attempts_count: Mapped[int] = mapped_column(default=0, server_default=text("0"))
    # Set when the verification service sent the SMS itself: then we only track it.
    gateway_id: Mapped[str | None] = mapped_column(String(64))
    code_expired_at: Mapped[dt.datetime | None]
    inserted_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(default=utcnow, onupdate=utcnow)

"""Data protection: the audit trail, daily rollups of purged messages, erased opt-outs."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import Date, Index, String, Text, text
from sqlalchemy.orm import Mapped, mapped_column

from .base import BIGINT_PK, Base, utcnow


class AuditEvent(Base):
    """Who read a body or a person's data, or erased it; the person only by keyed hash."""

    __tablename__ = "privacy_audit"
    __table_args__ = (Index("ix_privacy_audit_at", "at"),)

    id: Mapped[int] = mapped_column(BIGINT_PK, primary_key=True, autoincrement=True)
    at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    actor: Mapped[str] = mapped_column(String(128))  # "os:alice" or "api:<key name>"
    action: Mapped[str] = mapped_column(String(32))  # read_body | export | erase
    subject_hash: Mapped[str | None] = mapped_column(String(64))
    detail: Mapped[str | None] = mapped_column(Text)  # ids and counts, never a number/body
    # The account an export/erasure was limited to; NULL = every account (platform, CLI).
    account: Mapped[str | None] = mapped_column(String(64))


class DailyRollup(Base):
    """Counts of purged messages per day, hour, type and outcome: the report reads them."""

    __tablename__ = "sms_daily_rollup"

    day: Mapped[dt.date] = mapped_column(Date, primary_key=True)
    hour: Mapped[int] = mapped_column(primary_key=True)
    type: Mapped[str] = mapped_column(String(32), primary_key=True)
    outcome: Mapped[str] = mapped_column(String(32), primary_key=True)
    messages: Mapped[int] = mapped_column(default=0, server_default=text("0"))
    segments: Mapped[int] = mapped_column(default=0, server_default=text("0"))


class OptOutHash(Base):
    """An opt-out whose number was erased: kept as a keyed hash so STOP still holds."""

    __tablename__ = "opt_out_hashes"

    phone_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    opted_out_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    source: Mapped[str] = mapped_column(String(16), default="reply")

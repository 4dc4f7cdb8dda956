"""`verification.verifications`: owned by the verification service in production.

The shape is the service's real table (ehealth-ua/otp_verification.api, Ecto migrations
2017-05 to 2018-04): an integer `code`, a `check_digit`, `timestamp` columns without a
zone, no `updated_at`, no `gateway_id`/`gateway_status` (dropped in November 2017), and
one active verification per number. Our migrations create it only where it is absent
(demo and tests), so every test meets the table production has. Replication reads it by
reflection (services/intake/replication.py) and never writes it.
"""

from __future__ import annotations

import datetime as dt
import uuid

from sqlalchemy import Index, String, Uuid, text
from sqlalchemy.orm import Mapped, mapped_column

from .base import Base, UTCTimestamp, utcnow

# The service's statuses; a new code for a number first sets the previous one
# active = false, status = 'canceled'.
VERIFICATION_STATUSES: tuple[str, ...] = (
    "new",
    "verified",
    "unverified",
    "completed",
    "canceled",
    "expired",
)


class Verification(Base):
    __tablename__ = "verifications"
    __table_args__ = (
        # Ours only (demo/tests): replication scans by inserted_at.
        Index("ix_verifications_inserted_at", "inserted_at"),
        Index(
            "verifications_phone_number_index",
            "phone_number",
            unique=True,
            postgresql_where=text("active"),
            sqlite_where=text("active"),
        ),
    )

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    phone_number: Mapped[str] = mapped_column(String(255))
    check_digit: Mapped[int] = mapped_column(default=0)
    status: Mapped[str] = mapped_column(String(255), default="new")
    code: Mapped[int]
    code_expired_at: Mapped[dt.datetime] = mapped_column(UTCTimestamp())
    active: Mapped[bool | None] = mapped_column(default=True, server_default=text("true"))
    attempts_count: Mapped[int | None] = mapped_column(default=0, server_default=text("0"))
    inserted_at: Mapped[dt.datetime] = mapped_column(UTCTimestamp(), default=utcnow)

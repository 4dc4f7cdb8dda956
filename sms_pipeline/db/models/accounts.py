"""Sending accounts (the SMSPortal SQL service's USERS): send windows, credits, polling."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import BigInteger, CheckConstraint, String, text
from sqlalchemy.orm import Mapped, mapped_column

from .base import NOW, Base, utcnow

POSTPAID_CREDITS = 1_000_000


class Account(Base):
    __tablename__ = "accounts"
    __table_args__ = (
        CheckConstraint("send_start_hour BETWEEN 0 AND 23", name="send_start_hour"),
        CheckConstraint("send_end_hour BETWEEN 0 AND 23", name="send_end_hour"),
        CheckConstraint("credits >= 0", name="credits"),
        CheckConstraint(
            "process_queue_interval >= 0 AND get_replies_interval >= 0 "
            "AND get_dr_interval >= 0 AND get_sc_interval >= 0",
            name="intervals",
        ),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    username: Mapped[str] = mapped_column(String(128))
    # Where the gateway password lives (an env var name or secret path), never the password.
    password_ref: Mapped[str | None] = mapped_column(String(256))
    active: Mapped[bool] = mapped_column(default=True, server_default=text("true"))
    postpaid: Mapped[bool] = mapped_column(default=False, server_default=text("false"))
    # A two-column INSERT by SQL gets 1,000,000: what a post-paid account always reads.
    credits: Mapped[int] = mapped_column(
        BigInteger, default=POSTPAID_CREDITS, server_default=text(str(POSTPAID_CREDITS))
    )
    send_start_hour: Mapped[int] = mapped_column(default=0, server_default=text("0"))
    send_end_hour: Mapped[int] = mapped_column(default=23, server_default=text("23"))
    timezone: Mapped[str] = mapped_column(String(64), default="UTC", server_default="UTC")
    # Seconds, as SMSPortal's ProcessQueueInterval.
    process_queue_interval: Mapped[int] = mapped_column(default=5, server_default=text("5"))
    # Minutes, as SMSPortal's Get*Interval; 0 switches the poll off.
    get_replies_interval: Mapped[int] = mapped_column(default=0, server_default=text("0"))
    get_dr_interval: Mapped[int] = mapped_column(default=0, server_default=text("0"))
    get_sc_interval: Mapped[int] = mapped_column(default=0, server_default=text("0"))
    max_replies_id: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    max_dr_id: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    max_sc_id: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    last_process_replies: Mapped[dt.datetime | None]
    last_process_dr: Mapped[dt.datetime | None]
    last_process_sc: Mapped[dt.datetime | None]
    last_process_queue: Mapped[dt.datetime | None]
    # Messages per second across all workers; None = unlimited.
    rate_limit_per_second: Mapped[float | None]
    # Set after a 429 or an exhausted prepaid balance: the account sends nothing until then.
    paused_until: Mapped[dt.datetime | None]
    pause_reason: Mapped[str | None] = mapped_column(String(200))
    inserted_at: Mapped[dt.datetime] = mapped_column(default=utcnow, server_default=NOW)
    updated_at: Mapped[dt.datetime] = mapped_column(
        default=utcnow, onupdate=utcnow, server_default=NOW
    )

    def __repr__(self) -> str:
        return f"Account(id={self.id!r}, name={self.name!r}, active={self.active!r})"

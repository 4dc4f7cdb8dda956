"""Inbound side (the SMSPortal SQL service's REPLY and SHORTCODE) and the opt-out list."""

from __future__ import annotations

import datetime as dt
import uuid

from sqlalchemy import BigInteger, ForeignKey, Index, String, Text, UniqueConstraint, Uuid, text
from sqlalchemy.orm import Mapped, mapped_column

from .base import BIGINT_PK, Base, utcnow


class SmsReply(Base):
    __tablename__ = "sms_replies"
    __table_args__ = (
        # The gateway's reply id is unique per account and gateway: a page fetched twice
        # stores once, and two gateways' ids never collide.
        UniqueConstraint("account_id", "gateway", "gateway_reply_id"),
        Index("ix_sms_replies_received_at", "received_at"),
    )

    id: Mapped[int] = mapped_column(BIGINT_PK, primary_key=True, autoincrement=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id"))
    # The gateway it was polled from (gateways.name); '' = the IP2SMS_* settings' inbound API,
    # or pushed to us (record_inbound).
    gateway: Mapped[str] = mapped_column(String(64), default="", server_default=text("''"))
    gateway_reply_id: Mapped[int | None] = mapped_column(BigInteger)  # SMSPortal: ReplyID
    message_id: Mapped[uuid.UUID | None] = mapped_column(  # SMSPortal: ID (the SENT row)
        Uuid, ForeignKey("sms_log.id", ondelete="SET NULL"), index=True
    )
    phone_number: Mapped[str] = mapped_column(String(32))
    received_data: Mapped[str] = mapped_column(Text)
    received_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    opt_out: Mapped[bool] = mapped_column(default=False)
    opt_in: Mapped[bool] = mapped_column(default=False)
    customer_id: Mapped[str | None] = mapped_column(String(128))
    inserted_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class SmsShortcode(Base):
    __tablename__ = "sms_shortcodes"
    __table_args__ = (
        UniqueConstraint("account_id", "gateway", "gateway_sc_id"),
        Index("ix_sms_shortcodes_received_at", "received_at"),
    )

    id: Mapped[int] = mapped_column(BIGINT_PK, primary_key=True, autoincrement=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id"))
    gateway: Mapped[str] = mapped_column(String(64), default="", server_default=text("''"))
    gateway_sc_id: Mapped[int | None] = mapped_column(BigInteger)
    shortcode: Mapped[str] = mapped_column(String(16))
    keyword: Mapped[str | None] = mapped_column(String(64))
    num_from: Mapped[str] = mapped_column(String(32))
    data: Mapped[str] = mapped_column(Text)
    received_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    opt_out: Mapped[bool] = mapped_column(default=False)
    opt_in: Mapped[bool] = mapped_column(default=False)
    inserted_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class InboundMark(Base):
    """How far an account has read one gateway's inbound pages (a gateways row's name).

    The IP2SMS_* settings' own inbound API keeps its marks on the account
    (`max_replies_id`, `max_sc_id`), as before gateways were rows.
    """

    __tablename__ = "inbound_marks"

    account_id: Mapped[int] = mapped_column(
        ForeignKey("accounts.id", ondelete="CASCADE"), primary_key=True
    )
    gateway: Mapped[str] = mapped_column(String(64), primary_key=True)
    kind: Mapped[str] = mapped_column(String(16), primary_key=True)  # replies | shortcodes
    max_id: Mapped[int] = mapped_column(BigInteger, default=0, server_default=text("0"))


class OptOut(Base):
    """A number that asked for no more non-essential messages; deleted on opt-in."""

    __tablename__ = "opt_outs"

    phone_number: Mapped[str] = mapped_column(String(32), primary_key=True)
    opted_out_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    source: Mapped[str] = mapped_column(String(16), default="reply")  # reply|shortcode|api
    keyword: Mapped[str | None] = mapped_column(String(32))

"""Gateways as data (docs/gateways.md): where messages go, with whose login, and their health.

`gateways` holds one row per IP2SMS gateway; with no row, the `IP2SMS_*` settings are the one
gateway `default`. `account_gateways` names an account's gateways in order and its login on
each. `gateway_events` records every change of a gateway's state (time, from, to, why, figures).
Every column but `name` and `send_url` has a server default, so a plain SQL INSERT works.
"""

from __future__ import annotations

import datetime as dt

from sqlalchemy import CheckConstraint, ForeignKey, String, Text, text
from sqlalchemy.orm import Mapped, mapped_column

from .base import BIGINT_PK, NOW, Base, utcnow

GATEWAY_STATES = ("up", "down", "probing")


class Gateway(Base):
    __tablename__ = "gateways"
    __table_args__ = (
        CheckConstraint("weight >= 0", name="weight"),
        CheckConstraint("max_per_second IS NULL OR max_per_second > 0", name="max_per_second"),
        CheckConstraint("state IN ('up', 'down', 'probing')", name="state"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    send_url: Mapped[str] = mapped_column(String(500))
    # Empty: the send URL's sibling ".../ip2sms-request/" (or the send URL itself).
    status_url: Mapped[str] = mapped_column(String(500), default="", server_default=text("''"))
    # Empty: no inbound polling on this gateway.
    inbound_url: Mapped[str] = mapped_column(String(500), default="", server_default=text("''"))
    # The gateway's own login, for accounts without credentials of their own.
    login: Mapped[str] = mapped_column(String(128), default="", server_default=text("''"))
    # Where the password lives (an environment variable's name or a secret file's path),
    # never the password. Empty: IP2SMS_PASSWORD.
    password_ref: Mapped[str] = mapped_column(String(256), default="", server_default=text("''"))
    # Empty: IP2SMS_SOURCE.
    source: Mapped[str] = mapped_column(String(32), default="", server_default=text("''"))
    # Share of new first attempts; 0 = standby (used only when no weighted gateway is up).
    weight: Mapped[int] = mapped_column(default=1, server_default=text("1"))
    active: Mapped[bool] = mapped_column(default=True, server_default=text("true"))
    max_per_second: Mapped[float | None]
    # Health, shared by every worker: up, down (out of rotation) or probing (coming back).
    state: Mapped[str] = mapped_column(String(16), default="up", server_default="up")
    state_since: Mapped[dt.datetime] = mapped_column(default=utcnow, server_default=NOW)
    state_reason: Mapped[str] = mapped_column(String(300), default="", server_default=text("''"))
    inserted_at: Mapped[dt.datetime] = mapped_column(default=utcnow, server_default=NOW)

    def __repr__(self) -> str:
        return f"Gateway(name={self.name!r}, weight={self.weight!r}, state={self.state!r})"


class AccountGateway(Base):
    """An account's gateways in order (`position`, lowest first) and its login on each."""

    __tablename__ = "account_gateways"

    account_id: Mapped[int] = mapped_column(
        ForeignKey("accounts.id", ondelete="CASCADE"), primary_key=True
    )
    gateway_id: Mapped[int] = mapped_column(
        ForeignKey("gateways.id", ondelete="CASCADE"), primary_key=True
    )
    position: Mapped[int] = mapped_column(default=0, server_default=text("0"))
    # Empty login: the account's username; empty password_ref: the account's, and when that
    # is empty too, the gateway's own login.
    login: Mapped[str] = mapped_column(String(128), default="", server_default=text("''"))
    password_ref: Mapped[str] = mapped_column(String(256), default="", server_default=text("''"))

    def __repr__(self) -> str:
        return f"AccountGateway(account_id={self.account_id!r}, gateway_id={self.gateway_id!r})"


class GatewayEvent(Base):
    """One change of a gateway's state: when, from, to, why, and the figures behind it."""

    __tablename__ = "gateway_events"

    id: Mapped[int] = mapped_column(BIGINT_PK, primary_key=True, autoincrement=True)
    at: Mapped[dt.datetime] = mapped_column(default=utcnow, server_default=NOW, index=True)
    gateway: Mapped[str] = mapped_column(String(64))
    from_state: Mapped[str] = mapped_column(String(16))
    to_state: Mapped[str] = mapped_column(String(16))
    reason: Mapped[str] = mapped_column(String(300))
    # JSON text: {"requests": 40, "definite_failures": 12, "share": 0.3, "window_s": 30, ...}
    figures: Mapped[str] = mapped_column(Text, default="{}", server_default="{}")


class GatewayMinute(Base):
    """Requests per gateway and minute, added to by every worker: the figures `gateway list`
    and the report show (error rate, latency). Rows older than a day are purged."""

    __tablename__ = "gateway_minutes"

    gateway: Mapped[str] = mapped_column(String(64), primary_key=True)
    minute: Mapped[dt.datetime] = mapped_column(primary_key=True)
    requests: Mapped[int] = mapped_column(default=0, server_default=text("0"))
    definite_failures: Mapped[int] = mapped_column(default=0, server_default=text("0"))
    ambiguous: Mapped[int] = mapped_column(default=0, server_default=text("0"))
    latency_seconds: Mapped[float] = mapped_column(default=0.0, server_default=text("0"))

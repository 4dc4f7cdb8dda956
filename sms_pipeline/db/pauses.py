"""Paused accounts as everyone shows them: `up`, `show`, `send`, the metrics, the logs.

An account is paused while `accounts.paused_until` is in the future (a 429 storm, an
exhausted prepaid balance, or an operator's `sms-pipeline account pause`); its messages
wait in QUEUED. One query, read by the faces and the exporter alike.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from sqlalchemy import and_, func, select

from sms_pipeline.db.models import Account, SendStatus, SmsLog

# The `reason` label of sms_account_paused: a bounded vocabulary (the free text stays in
# accounts.pause_reason).
PAUSE_KINDS = ("credits", "429", "manual")
MANUAL_PREFIX = "manual: "


def pause_kind(reason: str | None) -> str:
    """Which kind of pause `reason` (accounts.pause_reason) describes."""
    text = (reason or "").lower()
    if text.startswith(MANUAL_PREFIX.strip()):
        return "manual"
    if "429" in text or "throttl" in text:
        return "429"
    if "credit" in text or "prepaid" in text or "balance" in text:
        return "credits"
    return "manual"


def pause_text(reason: str | None) -> str:
    """`KIND: REASON` (`credits: Prepaid messages limit exceed`, `manual: maintenance`)."""
    detail = reason or "paused"
    if detail.startswith(MANUAL_PREFIX):
        detail = detail[len(MANUAL_PREFIX) :]
    return f"{pause_kind(reason)}: {detail}"


@dataclass(frozen=True)
class Pause:
    account_id: int
    account: str
    reason: str
    until: dt.datetime
    waiting: int  # its QUEUED messages

    @property
    def kind(self) -> str:
        return pause_kind(self.reason)

    def describe(self) -> str:
        """`account NAME paused (credits: REASON) until 2026-12-07T12:00:00Z`."""
        return (
            f"account {self.account} paused ({pause_text(self.reason)}) "
            f"until {self.until.astimezone(dt.UTC):%Y-%m-%dT%H:%M:%SZ}"
        )


def active_pauses(conn: Any, now: dt.datetime, account_id: int | None = None) -> list[Pause]:
    """Accounts paused at `now` (or only `account_id`), with their waiting messages; `conn`
    is a Connection or a Session."""
    waiting = and_(SmsLog.account_id == Account.id, SmsLog.send_status == SendStatus.QUEUED.value)
    query = (
        select(
            Account.id,
            Account.name,
            Account.pause_reason,
            Account.paused_until,
            func.count(SmsLog.id),
        )
        .outerjoin(SmsLog, waiting)
        .where(Account.paused_until.is_not(None), Account.paused_until > now)
        .group_by(Account.id, Account.name, Account.pause_reason, Account.paused_until)
        .order_by(Account.name)
    )
    if account_id is not None:
        query = query.where(Account.id == account_id)
    return [Pause(r[0], r[1], r[2] or "paused", _utc(r[3]), int(r[4])) for r in conn.execute(query)]


def _utc(value: dt.datetime) -> dt.datetime:
    return value.replace(tzinfo=dt.UTC) if value.tzinfo is None else value


__all__ = ["MANUAL_PREFIX", "PAUSE_KINDS", "Pause", "active_pauses", "pause_kind", "pause_text"]

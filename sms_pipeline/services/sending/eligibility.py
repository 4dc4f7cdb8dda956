"""Eligibility: the one rule for "may this message be sent now", its parts in the order
they apply.

1. The account (`account_may_send`, once per account before the claim): its own rules
   (active, not paused, inside its send window), then its daily cap. Due messages of an
   account that may not send wait until it may (`defer_blocked`).
2. The row (`claimable`, the claim's SQL predicate): QUEUED, due, of an account part 1
   allowed, and still sendable (neither expired nor superseded).
3. The message (`message_rules`, on the claimed batch): its number has not opted out, a
   prepaid account's balance covers it across the batch, the account's rate limit gives a
   token.
"""

from __future__ import annotations

import datetime as dt
import random
import uuid
from collections.abc import Sequence
from typing import Any

from sqlalchemy import ColumnElement, bindparam, update

from sms_pipeline.db.models import Account, SendStatus, SmsLog
from sms_pipeline.services import accounts as account_rules
from sms_pipeline.services import optout, outbox, privacy
from sms_pipeline.services.accounts import quotas
from sms_pipeline.services.sending.record import _not_sent, _Write
from sms_pipeline.services.sending.results import EARLY_TOLERANCE, AttemptResult, Outcome
from sms_pipeline.services.sending.scope import Claim, _Db, _Scope
from sms_pipeline.settings import Settings


def account_may_send(
    account: Account, now: dt.datetime, settings: Settings
) -> account_rules.SendPermission:
    """Part 1: may this account send now: its own rules, then its daily cap (when one is
    set)."""
    permission = account_rules.account_permission(account, now)
    if permission.allowed and quotas.account_caps_on(settings):
        reopens = quotas.account_cap_reached(account, now, settings)
        if reopens is not None:
            return account_rules.SendPermission(False, reopens, "daily cap reached")
    return permission


def defer_blocked(
    scope: _Scope,
    blocked: dict[int, account_rules.SendPermission],
    now: dt.datetime,
    db: _Db,
) -> tuple[dict[uuid.UUID, AttemptResult], list[outbox.Dispatch]]:
    """Due messages of accounts that may not send now wait (due_at) until they may."""
    results: dict[uuid.UUID, AttemptResult] = {}
    later: list[outbox.Dispatch] = []
    if not blocked:
        return results, later
    for account_id, permission in blocked.items():
        until = permission.wait_until or now + dt.timedelta(minutes=1)
        wait = (until - now).total_seconds()
        rows = db.rows(
            update(SmsLog)
            .where(
                *scope.where(),
                SmsLog.account_id == account_id,
                SmsLog.due_at <= now + EARLY_TOLERANCE,
            )
            .values(
                due_at=until,
                # A wait the broker can hold gets a countdown kick; a longer one is
                # the sweeper's (dispatched_at None: publish once it is due).
                dispatched_at=until if wait <= outbox.max_countdown() else None,
                last_error=permission.reason,
            )
            .returning(SmsLog.id, SmsLog.type, SmsLog.priority)
        )
        for row in rows:
            results[row.id] = AttemptResult(Outcome.DEFERRED, wait, permission.reason)
            later.append(outbox.Dispatch(row.id, row.type, row.priority, max(wait, 0.0)))
    return results, later


def claimable() -> list[ColumnElement[bool]]:
    """Part 2, the claim's SQL predicate; its parameters come from `claimable_params`."""
    return [
        SmsLog.send_status == SendStatus.QUEUED.value,
        SmsLog.due_at <= bindparam("b_due"),
        SmsLog.account_id.in_(bindparam("b_accounts", expanding=True)),
        # Expired or superseded rows are never claimed; the privacy sweep ends them.
        privacy.still_sendable(bindparam("b_now")),
    ]


def claimable_params(now: dt.datetime, allowed: Sequence[int]) -> dict[str, Any]:
    """`claimable`'s parameters: due by `now` (a little early is fine), of the accounts
    that may send now."""
    return {"b_due": now + EARLY_TOLERANCE, "b_now": now, "b_accounts": list(allowed)}


def message_rules(
    claims: Sequence[Claim],
    accounts: dict[int, Account],
    now: dt.datetime,
    settings: Settings,
) -> tuple[list[Claim], list[_Write]]:
    """Part 3: split the claimed batch into what goes now and what the per-message rules
    hold back (opt-out, the balance of a prepaid account across the batch, the rate limit)."""
    go: list[Claim] = []
    held: list[_Write] = []
    balance = {a.id: a.credits for a in accounts.values()}
    for claim in claims:
        account = accounts[claim.account_id]
        if claim.opted_out and optout.stops(claim.type):
            # The number opted out after this text was queued: log it final, never send.
            held.append(_not_sent(claim, Outcome.OPTED_OUT, "number opted out", 0, now))
            continue
        if not account_rules.has_credits(account.postpaid, balance[account.id], claim.segments):
            held.append(_not_sent(claim, Outcome.DEFERRED, "out of credits", 300.0, now))
            continue
        if not account_rules.take_rate_token(account, settings):
            held.append(_not_sent(claim, Outcome.DEFERRED, "rate", random.uniform(0.2, 1.0), now))
            continue
        if not account.postpaid:
            balance[account.id] -= claim.segments
        go.append(claim)
    return go, held

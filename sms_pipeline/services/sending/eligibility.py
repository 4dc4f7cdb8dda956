"""Who may send now: the account's rules and daily cap (before the claim), and the
per-message rules on the claimed batch (opt-out, a prepaid balance, the rate limit)."""

from __future__ import annotations

import datetime as dt
import random
import uuid
from collections.abc import Sequence

from sqlalchemy import update

from sms_pipeline.db.models import Account, SmsLog
from sms_pipeline.services import accounts as account_rules
from sms_pipeline.services import optout, outbox
from sms_pipeline.services.accounts import quotas
from sms_pipeline.services.sending.claim import Claim, _Db, _Scope
from sms_pipeline.services.sending.record import _not_sent, _Write
from sms_pipeline.services.sending.results import EARLY_TOLERANCE, AttemptResult, Outcome
from sms_pipeline.settings import Settings


def _defer_blocked(
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


def _permission(
    account: Account, now: dt.datetime, settings: Settings
) -> account_rules.SendPermission:
    """May this account send now: its own rules, then its daily cap (when one is set)."""
    permission = account_rules.account_permission(account, now)
    if permission.allowed and quotas.account_caps_on(settings):
        reopens = quotas.account_cap_reached(account, now, settings)
        if reopens is not None:
            return account_rules.SendPermission(False, reopens, "daily cap reached")
    return permission


def _per_message_rules(
    claims: Sequence[Claim],
    accounts: dict[int, Account],
    now: dt.datetime,
    settings: Settings,
) -> tuple[list[Claim], list[_Write]]:
    """Split the claimed batch into what goes now and what the per-message rules hold back
    (opt-out, the balance of a prepaid account across the batch, the rate limit)."""
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

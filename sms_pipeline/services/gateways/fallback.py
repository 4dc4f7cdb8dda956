"""OTP fallback (docs/gateways.md): a code that is late is sent once more via another gateway.

With SMS_OTP_FALLBACK_SECONDS = F set (0 = off) and more than one gateway row, the status
sweep calls `sweep_fallbacks`. A verification or 2FA message (never another type) that was
submitted at least F ago, is not Delivered nor final, is still valid (`expires_at` ahead),
is not a copy itself and has no copy yet, gets **one** copy: a new sms_log row with the same
number, type and body (the same code), bound to another gateway in rotation where the
account's password resolves (`sms_log.gateway` set before it is sent, so the routing sends
it there and nowhere else while that gateway takes it). The original records it
(`fallback_id`) and the copy its original (`fallback_of`), in the one transaction that
claims the original by a conditional UPDATE: two sweeps never make two copies. The copy is
then an ordinary message: sent by the workers, its status checked at its gateway, its own
final state; `sms_otp_fallbacks_total{type,gateway}` counts it.

The person may receive the code twice: that is the price, and the reason it is per type and
off by default. No callback is asked for the copy (the caller knows one message id).
"""

from __future__ import annotations

import datetime as dt
import logging
import random
import uuid
from dataclasses import dataclass, field

from sqlalchemy import or_, select, update

from sms_pipeline.db import affected, get_engine, session_scope
from sms_pipeline.db.models import URGENT_TYPES, Account, SendStatus, SmsLog, utcnow
from sms_pipeline.gateway.statuses import MOVING_STATUSES
from sms_pipeline.metrics import hooks as metrics
from sms_pipeline.services import outbox
from sms_pipeline.services.gateways import registry
from sms_pipeline.settings import Settings, get_settings

log = logging.getLogger(__name__)

BATCH = 200  # the most late codes one sweep copies; the rest wait for the next
_MOVING = sorted(s.value for s in MOVING_STATUSES)


@dataclass
class FallbackResult:
    copied: int = 0
    no_other_gateway: int = 0  # late codes with nowhere else to go (tried next sweep)
    by_gateway: dict[str, int] = field(default_factory=dict)


def _other_gateway(
    account: Account, sent_via: str, table: registry.GatewayTable, settings: Settings
) -> registry.Route | None:
    """Another gateway in rotation for this account (its password resolving), by weight."""
    usable = [
        r
        for r in registry.candidates(account, table)
        if r.name != sent_via
        and r.in_rotation
        and registry.credential_problem(account, r, table, settings) is None
    ]
    if not usable:
        return None
    weights = [max(r.weight, 0) for r in usable]
    if sum(weights) <= 0:
        return usable[0]
    return random.choices(usable, weights=weights)[0]


def _late_codes(settings: Settings, now: dt.datetime) -> list[SmsLog]:
    cutoff = now - dt.timedelta(seconds=settings.sms_otp_fallback_seconds)
    with session_scope(settings) as session:
        rows = list(
            session.scalars(
                select(SmsLog)
                .where(
                    SmsLog.type.in_(sorted(URGENT_TYPES)),
                    SmsLog.send_status == SendStatus.SUBMITTED.value,
                    or_(SmsLog.gateway_status.is_(None), SmsLog.gateway_status.in_(_MOVING)),
                    SmsLog.final_at.is_(None),
                    SmsLog.submitted_at <= cutoff,
                    or_(SmsLog.expires_at.is_(None), SmsLog.expires_at > now),
                    SmsLog.gateway.is_not(None),
                    SmsLog.fallback_id.is_(None),
                    SmsLog.fallback_of.is_(None),
                    SmsLog.superseded_by.is_(None),
                    SmsLog.redacted_at.is_(None),
                )
                .order_by(SmsLog.submitted_at)
                .limit(BATCH)
            )
        )
        session.expunge_all()
    return rows


def _copy(original: SmsLog, gateway: str, now: dt.datetime) -> SmsLog:
    copy_id = uuid.uuid4()
    return SmsLog(
        id=copy_id,
        phone_number=original.phone_number,
        type=original.type,
        body=original.body,
        gateway=gateway,  # bound: the routing sends it there and nowhere else
        account_id=original.account_id,
        sender_id=original.sender_id,
        priority=original.priority,
        due_at=now,
        send_status=SendStatus.QUEUED.value,
        uniq_key=copy_id.hex,
        cost_centre=original.cost_centre,
        customer_id=original.customer_id,
        flash=original.flash,
        segments=original.segments,
        encoding=original.encoding,
        api_key_id=original.api_key_id,
        expires_at=original.expires_at,
        body_chars=original.body_chars,
        fallback_of=original.id,
        inserted_at=now,
        updated_at=now,
    )


def sweep_fallbacks(
    settings: Settings | None = None, *, now: dt.datetime | None = None
) -> FallbackResult:
    """Copy every late, still valid code once to another gateway; what it did."""
    settings = settings or get_settings()
    result = FallbackResult()
    if settings.sms_otp_fallback_seconds <= 0:
        return result
    with get_engine(settings).connect() as conn:
        table = registry.routes(conn, settings)
    if not table.routes[0].from_table or len(table.routes) < 2:
        return result  # one gateway: there is no other to try
    now = now or utcnow()
    late = _late_codes(settings, now)
    if not late:
        return result
    with session_scope(settings) as session:
        accounts = {
            a.id: a
            for a in session.scalars(
                select(Account).where(Account.id.in_({m.account_id for m in late}))
            )
        }
        session.expunge_all()
    for original in late:
        assert original.gateway is not None
        route = _other_gateway(accounts[original.account_id], original.gateway, table, settings)
        if route is None:
            result.no_other_gateway += 1
            continue
        copy = _copy(original, route.name, now)
        with session_scope(settings) as session:
            # The claim: only the sweep whose update wins makes the copy.
            claimed = affected(
                session.execute(
                    update(SmsLog)
                    .where(SmsLog.id == original.id, SmsLog.fallback_id.is_(None))
                    .values(fallback_id=copy.id)
                    .execution_options(synchronize_session=False)
                )
            )
            if not claimed:
                continue
            session.add(copy)
            dispatch = outbox.dispatch_for(copy.id, copy.type, copy.priority, now, now)
            if dispatch is not None:
                outbox.dispatch_after_commit(session, dispatch)
        result.copied += 1
        result.by_gateway[route.name] = result.by_gateway.get(route.name, 0) + 1
        metrics.otp_fallback(original.type, route.name)
        log.info(
            "%s %s not Delivered %ss after submission via %s: sent once more via %s as %s",
            original.type,
            original.id,
            f"{settings.sms_otp_fallback_seconds:g}",
            original.gateway,
            route.name,
            copy.id,
        )
    return result

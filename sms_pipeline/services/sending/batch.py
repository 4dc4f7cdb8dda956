"""One batch: claim, submit the claimed messages concurrently, record."""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import uuid
from collections.abc import Sequence

from sms_pipeline.broker import dispatch
from sms_pipeline.db import alone
from sms_pipeline.db.models import Account, utcnow
from sms_pipeline.gateway import (
    GatewayError,
    IP2SMSClient,
    SendRequest,
)
from sms_pipeline.metrics import hooks as metrics
from sms_pipeline.services import gateways as gateway_routes
from sms_pipeline.services import outbox, privacy
from sms_pipeline.services.accounts import quotas
from sms_pipeline.services.gateways import routing
from sms_pipeline.services.masking import mask_phone
from sms_pipeline.services.sending.claim import _claim
from sms_pipeline.services.sending.eligibility import (
    account_may_send,
    defer_blocked,
    message_rules,
)
from sms_pipeline.services.sending.record import _failed, _not_sent, _record, _submitted, _Write
from sms_pipeline.services.sending.results import _ENDED, AttemptResult, BatchResult, Outcome
from sms_pipeline.services.sending.scope import Claim, _accounts, _database, _Db, _Scope
from sms_pipeline.settings import Settings, get_settings

log = logging.getLogger(__name__)


def _request(claim: Claim, now: dt.datetime, settings: Settings) -> SendRequest:
    return SendRequest(
        phone_number=claim.phone_number,
        body=claim.body,
        ext_id=claim.ext_id or claim.id.hex,
        uniq_key=claim.uniq_key,
        source=claim.sender_id or None,
        # A code's time left, so the carrier drops it too once it stopped being valid.
        validity=privacy.gateway_validity(
            claim.type, claim.expires_at, now, settings.ip2sms_validity
        ),
    )


def send_batch(
    *,
    queue_class: dispatch.QueueClass | None = None,
    ids: Sequence[uuid.UUID] | None = None,
    settings: Settings | None = None,
    client: IP2SMSClient | None = None,
    now: dt.datetime | None = None,
    limit: int | None = None,
    db: _Db | None = None,
) -> BatchResult:
    """Claim, submit and record one batch of due messages of `queue_class` (or of `ids`).

    Safe to run twice at once and twice for the same ids: the claim is conditional and
    skips rows another batch holds.
    """
    settings = settings or get_settings()
    if db is None:
        with _database(settings) as own:
            return send_batch(
                queue_class=queue_class, ids=ids, settings=settings, client=client, now=now,
                limit=limit, db=own,
            )  # fmt: skip
    now = now or utcnow()
    scope = _Scope(queue_class, tuple(ids) if ids is not None else None)
    batch = BatchResult()
    accounts = _accounts(db)
    permissions = {a.id: account_may_send(a, now, settings) for a in accounts.values()}
    blocked = {i: p for i, p in permissions.items() if not p.allowed}
    deferred, later = defer_blocked(scope, blocked, now, db)
    batch.results.update(deferred)
    allowed = sorted(i for i, p in permissions.items() if p.allowed)
    claims = _claim(scope, allowed, now, limit or settings.sms_send_batch_size, settings, db)
    batch.claimed = len(claims)
    if scope.ids is not None and len(claims) < len(scope.ids):
        # Given messages the claim refused because they expired or were superseded end
        # now, explained (a drain leaves those to the privacy sweep).
        for message_id, status in privacy.end_unsendable(settings, now=now, ids=scope.ids):
            batch.results[message_id] = AttemptResult(_ENDED[status], detail=status.value)
    if not claims:
        _kick_later(later)
        return batch
    go, writes = message_rules(claims, accounts, now, settings)
    table = None
    if go:
        with alone(db.auto):
            table = gateway_routes.routes(db.auto, settings)
        at = now
        sent, held = routing.submit(
            go, accounts, table, lambda c: _request(c, at, settings), settings, db, client
        )
        answered = utcnow()
        for claim, reason, wait in held:
            writes.append(_not_sent(claim, Outcome.DEFERRED, reason, wait, answered))
        for claim, gateway, answer in sent:
            bound = claim.gateway is not None and table.routes[0].from_table
            if isinstance(answer, GatewayError) and bound and routing.movable(answer):
                # Bound to a gateway that may have it already, and that refuses for now:
                # it waits for that gateway (the attempt given back), never sent elsewhere.
                wait = settings.sms_gateway_probe_seconds
                why = f"waits for gateway {gateway}, which may have it already: {answer.reason}"
                writes.append(_not_sent(claim, Outcome.DEFERRED, why, wait, answered))
            elif isinstance(answer, GatewayError):
                write = _failed(claim, answer, answered, settings)
                # A definite refusal leaves it free to go anywhere next time (unless an
                # earlier attempt's unknown outcome holds it to its gateway).
                keep = claim.gateway or (None if routing.movable(answer) else gateway)
                writes.append(dataclasses.replace(write, gateway=keep, set_gateway=True))
            else:
                write = _submitted(claim, answer, answered, settings)
                # Post-paid accounts are never charged: their batches never touch accounts.
                prepaid = not accounts[claim.account_id].postpaid
                writes.append(
                    dataclasses.replace(write, charge=prepaid, gateway=gateway, set_gateway=True)
                )
        now = answered
    written = _record(writes, now, db)
    if table is not None:
        routing.after_batch(table, settings, db)
    if written < len(writes):
        log.warning(
            "send batch: %d of %d claims were lost meanwhile", len(writes) - written, len(writes)
        )
    for w in writes:
        batch.results[w.claim.id] = w.result
    _observe(writes, accounts, now, settings)
    later += [
        outbox.Dispatch(w.claim.id, w.claim.type, w.claim.priority, w.result.retry_in)
        for w in writes
        if w.result.retry_in is not None
    ]
    _kick_later(later)
    return batch


def _observe(
    writes: Sequence[_Write], accounts: dict[int, Account], now: dt.datetime, settings: Settings
) -> None:
    """Metrics and logs for a recorded batch: the metrics in one call, the daily caps counted
    once per account, logs per message on DEBUG and per batch on INFO."""
    if not writes:
        return
    sent: list[metrics.Sent] = []
    submitted: dict[int, int] = {}
    for w in writes:
        c = w.claim
        outcome = w.result.outcome
        answer = None
        if outcome is Outcome.SUBMITTED:
            submitted[c.account_id] = submitted.get(c.account_id, 0) + 1
            if w.result.detail is None:  # the gateway answered (not a uniq_key dupe)
                answer = metrics.Answer(
                    gateway_status=w.gateway_status or "",
                    ready_at=c.ready_at,
                    submitted_at=now,
                    status_changed_at=w.status_changed_at or now,
                )
        account = accounts.get(c.account_id)
        sent.append(
            metrics.Sent(
                type=c.type,
                account=account.name if account is not None else "unknown",
                attempts=c.attempt - w.give_back,
                send_status=w.send_status,
                answer=answer,
            )
        )
        if log.isEnabledFor(logging.DEBUG):
            log.debug(
                "message %s to %s attempt %d: %s (%s)",
                c.id,
                mask_phone(c.phone_number),
                c.attempt,
                outcome.value,
                w.gateway_id or w.last_error or "",
            )
        if outcome.is_final_failure:
            log.info(
                "message %s to %s: %s after attempt %d (%s)",
                c.id,
                mask_phone(c.phone_number),
                outcome.value,
                c.attempt,
                w.last_error,
            )
    metrics.messages_sent(sent)
    quotas.count_account_sends(submitted, settings)
    counts: dict[str, int] = {}
    for w in writes:
        counts[w.result.outcome.value] = counts.get(w.result.outcome.value, 0) + 1
    log.info(
        "send batch of %d: %s",
        len(writes),
        ", ".join(f"{n} {k}" for k, n in sorted(counts.items())),
    )


def _kick_later(later: Sequence[outbox.Dispatch]) -> None:
    """Messages that wait a short while (a retry, a rate limit, a pause) get a countdown kick
    (one per queue class, the soonest); longer waits are the sweeper's."""
    longest = outbox.max_countdown()
    soon = [d for d in later if d.countdown is not None and d.countdown <= longest]
    if soon:
        outbox.publish(soon)

"""Delivery-status callbacks: one signed POST per message and final status (docs/api.md).

The periodic sweep records one `callback_events` row per (message, final status), its
unique key making a second sweep harmless, and dispatches a delivery per due event. A
delivery claims its event with one conditional UPDATE, POSTs outside any transaction
through `sms_pipeline.http`, and records the outcome only if its claim still stands: at
least once, so receivers de-duplicate by `X-SMS-Event-Id`. Every callback is signed; an
event whose secret has gone is given up, never sent unsigned. Producers see only "delivery
failed"; the reason stays in our logs.
"""

from __future__ import annotations

import datetime as dt
import enum
import hmac
import json
import logging
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import and_, case, exists, select, update
from sqlalchemy.orm import Session

from sms_pipeline import http
from sms_pipeline.broker import dispatch
from sms_pipeline.db import insert_ignore, session_scope
from sms_pipeline.db.models import ApiKey, CallbackEvent, SmsLog, utcnow
from sms_pipeline.gateway.statuses import FINAL_STATUSES
from sms_pipeline.metrics import hooks as metrics
from sms_pipeline.services.masking import mask_phone
from sms_pipeline.settings import Settings, get_settings

log = logging.getLogger(__name__)

SIGNATURE_HEADER = "X-SMS-Signature"
TIMESTAMP_HEADER = "X-SMS-Timestamp"
EVENT_ID_HEADER = "X-SMS-Event-Id"
USER_AGENT = "sms-pipeline-callbacks/2"
# What producers see (event rows, the API): the detail would make us their port scanner.
COARSE_ERROR = "delivery failed"
_FINAL_GATEWAY = tuple(sorted(s.value for s in FINAL_STATUSES))

# The status an event is about: the gateway's final word when there is one, otherwise
# the send status that ended the message (REJECTED, RETRYCOUNT EXCEEDED, ...).
final_status_expr = case(
    (SmsLog.gateway_status.in_(_FINAL_GATEWAY), SmsLog.gateway_status),
    else_=SmsLog.send_status,
)


def final_status(send_status: str, gateway_status: str | None) -> str:
    if gateway_status in _FINAL_GATEWAY:
        return str(gateway_status)
    return send_status


def _iso(value: dt.datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def signed_string(timestamp: str, event_id: str, body: bytes) -> bytes:
    """What the signature covers: `{timestamp}.{event id}.{body}`."""
    return timestamp.encode("ascii") + b"." + event_id.encode("ascii") + b"." + body


def sign(secret: str, timestamp: str, event_id: str, body: bytes) -> str:
    """The signature header value for event `event_id` with `body`, sent at `timestamp`."""
    mac = hmac.new(secret.encode("utf-8"), signed_string(timestamp, event_id, body), "sha256")
    return "sha256=" + mac.hexdigest()


def verify_signature(
    secret: str,
    timestamp: str,
    event_id: str,
    body: bytes,
    signature: str,
    *,
    tolerance_seconds: float = 300.0,
    now: float | None = None,
) -> bool:
    """What a receiver does: a valid signature over a fresh timestamp (replays fail)."""
    try:
        sent = float(timestamp)
        expected = sign(secret, timestamp, event_id, body)
    except (ValueError, UnicodeEncodeError):
        return False
    current = time.time() if now is None else now
    if abs(current - sent) > tolerance_seconds:
        return False
    return hmac.compare_digest(expected, signature)


# --- creating events ----------------------------------------------------------------------

_EVENT_COLUMNS = (
    SmsLog.id,
    SmsLog.api_key_id,
    SmsLog.type,
    SmsLog.phone_number,
    SmsLog.send_status,
    SmsLog.gateway_status,
    SmsLog.gateway_id,
    SmsLog.attempts,
    SmsLog.last_error,
    SmsLog.ext_id,
    SmsLog.customer_id,
    SmsLog.inserted_at,
    SmsLog.submitted_at,
    SmsLog.status_changed_at,
    SmsLog.final_at,
)


def event_payload(row: Any) -> dict[str, Any]:
    """The event body: status, times and attempts; the number masked, never the body."""
    return {
        "event": "message.final",
        "id": str(row.id),
        "status": final_status(row.send_status, row.gateway_status),
        "send_status": row.send_status,
        "gateway_status": row.gateway_status,
        "gateway_id": row.gateway_id,
        "error": row.last_error,
        "type": row.type,
        "phone_number": mask_phone(row.phone_number),
        "ext_id": row.ext_id,
        "customer_id": row.customer_id,
        "attempts": row.attempts,
        "inserted_at": _iso(row.inserted_at),
        "submitted_at": _iso(row.submitted_at),
        "status_changed_at": _iso(row.status_changed_at),
        "final_at": _iso(row.final_at),
    }


def create_events(session: Session, now: dt.datetime, settings: Settings) -> int:
    """Record an event for each recently final message with a callback URL and none yet."""
    since = now - dt.timedelta(seconds=settings.sms_callback_lookback_seconds)
    recorded = exists().where(
        CallbackEvent.message_id == SmsLog.id, CallbackEvent.status == final_status_expr
    )
    rows = session.execute(
        select(*_EVENT_COLUMNS)
        .where(
            SmsLog.callback_url.is_not(None),
            SmsLog.final_at.is_not(None),
            SmsLog.final_at >= since,
            ~recorded,
        )
        .order_by(SmsLog.final_at)
        .limit(settings.sms_callback_batch_limit)
    ).all()
    if not rows:
        return 0
    values = []
    for row in rows:
        try:
            payload = event_payload(row)
        except Exception:
            # One message whose event cannot be built holds none of the others' events.
            metrics.poller_unit_failed("callbacks")
            log.exception("callback event of message %s could not be built; skipped", row.id)
            continue
        values.append(
            {
                "message_id": row.id,
                "api_key_id": row.api_key_id,
                "status": payload["status"],
                "payload": json.dumps(payload, separators=(",", ":")),
                "attempts": 0,
                "next_attempt_at": now,
                "created_at": now,
            }
        )
    stmt = insert_ignore(session, CallbackEvent, ["message_id", "status"]).returning(
        CallbackEvent.id
    )
    # Only the rows actually inserted come back: a concurrent sweep's rows are skipped.
    return len(session.execute(stmt, values).all())


def due_event_ids(session: Session, now: dt.datetime, limit: int) -> list[int]:
    return list(
        session.scalars(
            select(CallbackEvent.id)
            .where(CallbackEvent.next_attempt_at <= now, CallbackEvent.delivered_at.is_(None))
            .order_by(CallbackEvent.next_attempt_at)
            .limit(limit)
        )
    )


@dataclass(frozen=True)
class CallbackSweep:
    created: int
    dispatched: int


def sweep_callbacks(settings: Settings | None = None) -> CallbackSweep:
    """One pass: record new final-status events, then dispatch every due delivery."""
    settings = settings or get_settings()
    now = utcnow()
    created = dispatched = 0
    # Two steps, each its own unit: events that cannot be recorded this time still leave
    # the due deliveries to be dispatched, and the other way round.
    try:
        with session_scope(settings) as session:
            created = create_events(session, now, settings)
    except Exception:
        metrics.poller_unit_failed("callbacks")
        log.exception("callbacks: recording new events failed; the next sweep retries")
    try:
        with session_scope(settings) as session:
            due = due_event_ids(session, now, settings.sms_callback_batch_limit)
        # A task that waits longer than the next sweep is superseded by that sweep's:
        # letting it expire keeps a backlog from piling up copies (a copy is a no-op).
        expires = max(30.0, 2 * settings.sms_callback_sweep_seconds)
        dispatched = dispatch.callback_deliveries(due, expires)
    except Exception:
        metrics.poller_unit_failed("callbacks")
        log.exception("callbacks: dispatching due deliveries failed; the next sweep retries")
    if created or dispatched:
        log.info("callbacks: %d new events, %d deliveries dispatched", created, dispatched)
    return CallbackSweep(created, dispatched)


# --- delivering one event ------------------------------------------------------------------


def retry_delay(attempt: int, settings: Settings) -> float:
    """Seconds before the attempt after failed attempt number `attempt` (1-based)."""
    return float(settings.sms_callback_backoff_seconds * 2 ** (attempt - 1))


@dataclass(frozen=True)
class _Claim:
    event_id: int
    attempt: int
    message_id: uuid.UUID
    api_key_id: int | None
    payload: str
    url: str | None = field(repr=False)  # may carry the receiver's ?token=
    secret: str | None = field(repr=False)
    dropped: str | None = None  # why it is never sent (recorded on the event)


REVOKED = "dropped: the API key that asked for it was revoked (never sent)"


def _claim(event_id: int, settings: Settings) -> _Claim | None:
    now = utcnow()
    # Longer than one POST can take, so a live delivery is never claimed twice; a dead
    # worker's claim expires and the sweep dispatches the event again.
    lease = dt.timedelta(seconds=4 * settings.sms_callback_timeout_seconds + 30)
    with session_scope(settings) as session:
        row = session.execute(
            update(CallbackEvent)
            .where(
                CallbackEvent.id == event_id,
                CallbackEvent.delivered_at.is_(None),
                CallbackEvent.next_attempt_at <= now,
            )
            .values(attempts=CallbackEvent.attempts + 1, next_attempt_at=now + lease)
            .returning(
                CallbackEvent.attempts,
                CallbackEvent.message_id,
                CallbackEvent.api_key_id,
                CallbackEvent.payload,
            )
        ).one_or_none()
        if row is None:
            return None
        url = session.scalar(select(SmsLog.callback_url).where(SmsLog.id == row.message_id))
        secret = dropped = None
        if row.api_key_id is not None:
            key = session.execute(
                select(ApiKey.signing_secret, ApiKey.active).where(ApiKey.id == row.api_key_id)
            ).one_or_none()
            # A revoked key's callbacks are not signed with its secret any more, nor sent.
            secret = key.signing_secret if key is not None and key.active else None
            dropped = REVOKED if key is not None and not key.active else None
        elif settings.sms_callback_secret is not None:
            secret = settings.sms_callback_secret.get_secret_value() or None
    return _Claim(
        event_id, row.attempts, row.message_id, row.api_key_id, row.payload, url, secret, dropped
    )


def _post(claim: _Claim, settings: Settings) -> http.OutboundError | None:
    """POST the event; None on a 2xx answer, else the failure (its reason is for our logs)."""
    if claim.dropped:
        return http.OutboundError(claim.dropped, permanent=True)
    if not claim.url:
        return http.UnsafeUrlError("no callback URL")
    if not claim.secret:
        return http.OutboundError("no signing secret: never sent unsigned", permanent=True)
    body = claim.payload.encode("utf-8")
    timestamp = str(int(time.time()))
    event_id = str(claim.event_id)
    headers = {
        "Content-Type": "application/json",
        "User-Agent": USER_AGENT,
        EVENT_ID_HEADER: event_id,
        TIMESTAMP_HEADER: timestamp,
        SIGNATURE_HEADER: sign(claim.secret, timestamp, event_id, body),
    }
    try:
        # No redirects, no proxies, the address checked and pinned, one total deadline.
        answer = http.post(
            claim.url,
            body,
            headers,
            deadline_seconds=settings.sms_callback_timeout_seconds,
            allow_private=settings.sms_callback_allow_private,
        )
    except http.OutboundError as exc:
        return exc
    if 200 <= answer.status < 300:
        return None
    return http.OutboundError(f"HTTP {answer.status}")


class Delivery(enum.StrEnum):
    """What one delivery attempt of a callback event did."""

    DELIVERED = "delivered"  # the receiver answered 2xx
    RETRY = "retry"  # failed; tried again after a backoff
    GIVEN_UP = "given up"  # failed for good (permanent, or out of attempts)
    SKIPPED = "skipped"  # delivered, not due, or claimed by a concurrent copy


def deliver_event(event_id: int, settings: Settings | None = None) -> Delivery:
    """One delivery attempt of a due event."""
    settings = settings or get_settings()
    claim = _claim(event_id, settings)
    if claim is None:
        return Delivery.SKIPPED
    failure = _post(claim, settings)
    error = failure.reason if failure is not None else None
    now = utcnow()
    mine = and_(
        CallbackEvent.id == event_id,
        CallbackEvent.attempts == claim.attempt,
        CallbackEvent.delivered_at.is_(None),
    )
    if error is None:
        values: dict[str, Any] = {"delivered_at": now, "next_attempt_at": None, "last_error": None}
        outcome = Delivery.DELIVERED
    elif claim.attempt >= settings.sms_callback_max_attempts or (
        failure is not None and failure.permanent
    ):
        values = {
            "next_attempt_at": None,
            "last_error": claim.dropped
            or f"given up after {claim.attempt} attempts: {COARSE_ERROR}",
        }
        outcome = Delivery.GIVEN_UP
    else:
        delay = retry_delay(claim.attempt, settings)
        values = {"next_attempt_at": now + dt.timedelta(seconds=delay), "last_error": COARSE_ERROR}
        outcome = Delivery.RETRY
    with session_scope(settings) as session:
        session.execute(update(CallbackEvent).where(mine).values(**values))
    if outcome is Delivery.GIVEN_UP:
        log.warning(
            "callback event %s (message %s) given up after %d attempts: %s",
            event_id,
            claim.message_id,
            claim.attempt,
            error,
        )
    elif outcome is Delivery.RETRY:
        log.info("callback event %s attempt %d failed: %s", event_id, claim.attempt, error)
    return outcome

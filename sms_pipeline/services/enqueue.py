"""`enqueue_sms`: validate, write the message row, dispatch after commit."""

from __future__ import annotations

import datetime as dt
import uuid
from dataclasses import dataclass

import phonenumbers
from sqlalchemy import select
from sqlalchemy.orm import Session

from sms_pipeline import http
from sms_pipeline.db import session_scope
from sms_pipeline.db.models import MESSAGE_TYPES, MessageType, OptOut, SendStatus, SmsLog, utcnow
from sms_pipeline.errors import InvalidMessage, OptedOut
from sms_pipeline.gateway.codec import describe_invalid_xml_char
from sms_pipeline.metrics import hooks as metrics
from sms_pipeline.priorities import priority_problem
from sms_pipeline.services import privacy
from sms_pipeline.services.accounts import find_account
from sms_pipeline.services.outbox import dispatch_after_commit, dispatch_of
from sms_pipeline.services.segments import count_segments
from sms_pipeline.settings import Settings, get_settings

# Types that carry something the person needs (a code): they go even after an opt-out.
ESSENTIAL_TYPES = frozenset(
    {MessageType.VERIFICATION.value, MessageType.TWO_FA.value, MessageType.MEDICATION_REQUEST.value}
)
_LIMITS = {"sender_id": 16, "ext_id": 64, "customer_id": 128, "cost_centre": 64}


def normalise_phone_number(raw: object) -> str:
    """E.164 (`+<digits>`) or InvalidMessage. Digits without `+` are read as international."""
    if not isinstance(raw, str) or not raw.strip():
        raise InvalidMessage("phone_number", "a phone number is required")
    text = raw.strip()
    if len(text) > 32:
        raise InvalidMessage("phone_number", "too long for a phone number")
    if text[0].isdigit():
        text = "+" + text
    try:
        parsed = phonenumbers.parse(text, None)
    except phonenumbers.NumberParseException:
        raise InvalidMessage("phone_number", "not a phone number in E.164 form") from None
    if not phonenumbers.is_valid_number(parsed):
        raise InvalidMessage("phone_number", "not a valid phone number")
    return phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164)


@dataclass(frozen=True)
class ValidBody:
    body: str
    segments: int
    encoding: str


def validate_body(body: object, settings: Settings) -> ValidBody:
    if not isinstance(body, str) or not body.strip():
        raise InvalidMessage("body", "the message text is empty")
    validate_xml_text("body", body)
    info = count_segments(body)
    if info.segments > settings.sms_max_segments:
        raise InvalidMessage(
            "body",
            f"needs {info.segments} {info.encoding} segments; "
            f"the maximum is {settings.sms_max_segments}",
        )
    return ValidBody(body, info.segments, info.encoding)


def validate_type(message_type: object) -> str:
    if message_type not in MESSAGE_TYPES:
        raise InvalidMessage("type", f"must be one of {', '.join(MESSAGE_TYPES)}")
    return str(message_type)


def _optional_text(field: str, value: object) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or len(value) > _LIMITS[field]:
        raise InvalidMessage(field, f"must be text of at most {_LIMITS[field]} characters")
    validate_xml_text(field, value)
    if not value.isprintable():
        raise InvalidMessage(field, "contains control characters")
    return value


def validate_xml_text(field: str, value: str) -> str:
    """InvalidMessage naming `field` when `value` holds a character XML 1.0 cannot carry
    (the gateway request could never be built)."""
    problem = describe_invalid_xml_char(value)
    if problem is not None:
        raise InvalidMessage(field, problem)
    return value


def validate_callback_url(url: object, settings: Settings) -> str:
    """An http(s) URL whose host is one we may call (see sms_pipeline.http), or InvalidMessage.

    Checked again at delivery, where the connection is pinned to the checked address; a
    host that does not resolve now is left to that check.
    """
    if not isinstance(url, str):
        raise InvalidMessage("callback_url", "must be an http(s) URL")
    try:
        http.check_url(url, allow_private=settings.sms_callback_allow_private)
    except http.UnsafeUrlError as exc:
        raise InvalidMessage("callback_url", exc.reason) from None
    except http.OutboundError:
        pass
    return url


def is_opted_out(session: Session, phone_number: str) -> bool:
    """Opted out: by number, or (after an erasure) by the number's keyed hash."""
    from sms_pipeline.services import privacy

    if session.get(OptOut, phone_number) is not None:
        return True
    return privacy.erased_opt_out(session, phone_number)


def enqueue_sms(
    phone_number: str,
    body: str,
    type: str = "text",
    *,
    account: str | int | None = None,
    priority: int = 0,
    send_at: dt.datetime | None = None,
    sender_id: str | None = None,
    ext_id: str | None = None,
    customer_id: str | None = None,
    cost_centre: str | None = None,
    callback_url: str | None = None,
    valid_for: float | dt.timedelta | None = None,
    session: Session | None = None,
) -> uuid.UUID:
    """Store a message and dispatch its send once the row is committed.

    Returns the message id, which is also its `sms_log` id for its whole life. With
    `session`, the row joins the caller's transaction and the send is dispatched after
    that transaction commits (nothing is sent if it rolls back). Bad input raises
    `InvalidMessage` naming the field, and nothing is stored. A `text` message to a
    number that opted out is stored as `OPTED OUT` and raises `OptedOut` (with its id).

    `valid_for` (seconds or a timedelta; default SMS_OTP_VALID_SECONDS for verification
    and 2FA) is how long after its send time the message is worth sending: not submitted
    by then, it ends `EXPIRED` (as does any message older than its type's maximum queue
    age). A new verification/2FA message supersedes older ones to the number (SUPERSEDED).
    """
    settings = get_settings()
    number = normalise_phone_number(phone_number)
    valid = validate_body(body, settings)
    message_type = validate_type(type)
    if (problem := priority_problem(priority)) is not None:
        raise InvalidMessage("priority", problem)
    if send_at is not None and (not isinstance(send_at, dt.datetime) or send_at.tzinfo is None):
        raise InvalidMessage("send_at", "must be a timezone-aware datetime")
    sender = _optional_text("sender_id", sender_id)
    ext = _optional_text("ext_id", ext_id)
    customer = _optional_text("customer_id", customer_id)
    cost = _optional_text("cost_centre", cost_centre)
    validity = privacy.parse_valid_for(valid_for)
    if callback_url is not None:
        # Every callback is signed: from Python, with SMS_CALLBACK_SECRET (the API signs
        # with the key's secret and sets the URL itself).
        if (
            settings.sms_callback_secret is None
            or not settings.sms_callback_secret.get_secret_value()
        ):
            raise InvalidMessage("callback_url", "needs SMS_CALLBACK_SECRET to sign callbacks")
        callback_url = validate_callback_url(callback_url, settings)

    def _store(sess: Session) -> uuid.UUID:
        acct = find_account(sess, account)
        if acct is None:
            raise InvalidMessage("account", "no such account")
        if not acct.active:
            raise InvalidMessage("account", "the account is not active")
        now = utcnow()
        message_id = uuid.uuid4()
        opted_out = message_type not in ESSENTIAL_TYPES and is_opted_out(sess, number)
        due_at = max(now, send_at) if send_at else now
        privacy.supersede_older(
            sess,
            new_id=message_id,
            account_id=acct.id,
            phone_number=number,
            message_type=message_type,
            now=now,
            settings=settings,
        )
        message = SmsLog(
            id=message_id,
            phone_number=number,
            type=message_type,
            body=valid.body,
            account_id=acct.id,
            sender_id=sender,
            priority=priority,
            send_after=send_at,
            due_at=due_at,
            expires_at=privacy.expiry_for(message_type, due_at, settings, validity),
            send_status=(SendStatus.OPTED_OUT if opted_out else SendStatus.QUEUED).value,
            ext_id=ext,
            uniq_key=message_id.hex,
            customer_id=customer,
            cost_centre=cost,
            segments=valid.segments,
            encoding=valid.encoding,
            callback_url=callback_url,
            inserted_at=now,
            updated_at=now,
            final_at=now if opted_out else None,
            last_error="number opted out" if opted_out else None,
        )
        if not opted_out:
            dispatch = dispatch_of(message, now)
            if dispatch is not None:
                message.dispatched_at = now
                dispatch_after_commit(sess, dispatch)
        sess.add(message)
        sess.flush()
        metrics.message_stored(sess, message_type, acct.name, message.send_status)
        if opted_out:
            raise OptedOut(message_id)
        return message_id

    if session is not None:
        # An OptedOut raised here leaves its row in the caller's transaction.
        return _store(session)
    refused: OptedOut | None = None
    with session_scope(settings) as own:
        try:
            message_id = _store(own)
        except OptedOut as exc:
            refused = exc  # commit the OPTED OUT row, then tell the caller
    if refused is not None:
        raise refused
    return message_id


def message_by_id(session: Session, message_id: uuid.UUID) -> SmsLog | None:
    return session.scalar(select(SmsLog).where(SmsLog.id == message_id))

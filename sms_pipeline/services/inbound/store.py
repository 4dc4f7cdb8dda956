"""Storing incoming messages: one code path for polled pages and pushed messages.

A message is stored once per (account, gateway, the gateway's id) by ``INSERT ... ON CONFLICT DO
NOTHING``; only a newly stored message changes the opt-out list, so a page fetched twice
cannot replay an old STOP over a newer START.
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass
from typing import Any

from sqlalchemy import case, delete, select
from sqlalchemy.orm import InstrumentedAttribute, Session

from sms_pipeline.db import insert_ignore, session_scope
from sms_pipeline.db.models import OptOut, SmsLog, SmsReply, SmsShortcode, utcnow
from sms_pipeline.errors import InvalidMessage
from sms_pipeline.gateway.inbound import (
    REPLIES,
    SHORTCODES,
    InboundItem,
    Kind,
)
from sms_pipeline.services import privacy
from sms_pipeline.services.accounts import find_account
from sms_pipeline.services.masking import mask_phone
from sms_pipeline.services.numbers import parse_number as normalise_phone_number
from sms_pipeline.services.optout import KeywordAction, classify_message, normalise_keyword
from sms_pipeline.settings import Settings, get_settings

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class StoredInbound:
    """What storing one incoming message did."""

    id: int  # sms_replies.id or sms_shortcodes.id
    kind: Kind
    created: bool  # False: the gateway id was stored before (nothing changed)
    action: KeywordAction | None = None
    message_id: Any = None  # the sms_log id a reply answers, if found


def _number(raw: str) -> str:
    # Opt-outs are keyed on E.164, as enqueue writes numbers; keep what the gateway gave
    # when it is not a phone number (a sender name, a short code).
    try:
        return normalise_phone_number(raw)
    except InvalidMessage:
        return raw.strip()[:32]


def _answered(
    session: Session, account_id: int, gateway_id: str, sent_via: str | None
) -> tuple[Any, str | None]:
    """(sms_log id, customer_id) of the message with this gateway id, preferring the account's
    and, when known, the gateway's that carried it (two gateways' ids may be equal)."""
    via = case((SmsLog.gateway == sent_via, 0), else_=1) if sent_via else None
    row = session.execute(
        select(SmsLog.id, SmsLog.customer_id)
        .where(SmsLog.gateway_id == gateway_id)
        .order_by(
            case((SmsLog.account_id == account_id, 0), else_=1),
            *([via] if via is not None else []),
            SmsLog.inserted_at.desc(),
        )
        .limit(1)
    ).first()
    return (row[0], row[1]) if row is not None else (None, None)


def apply_keyword(
    session: Session,
    number: str,
    action: KeywordAction,
    *,
    when: dt.datetime,
    source: str,
    keyword: str | None,
) -> None:
    """Put a number on the opt-out list (first opt-out kept) or take it off."""
    if action is KeywordAction.OPT_OUT:
        session.execute(
            insert_ignore(session, OptOut, ["phone_number"]).values(
                phone_number=number,
                opted_out_at=when,
                source=source[:16],
                keyword=(keyword or "")[:32] or None,
            )
        )
        log.info("%s opted out (%s)", mask_phone(number), source)
    else:
        session.execute(delete(OptOut).where(OptOut.phone_number == number))
        privacy.forget_erased_opt_out(session, number)
        log.info("%s opted in (%s)", mask_phone(number), source)


def store_inbound(
    session: Session,
    account_id: int,
    item: InboundItem,
    *,
    gateway_item_id: int | None,
    settings: Settings | None = None,
    gateway: str = "",
    sent_via: str | None = None,
) -> StoredInbound:
    """Store one incoming message (once per account, gateway and the gateway's id) and act
    on keywords. `gateway`: the key it was polled under ('' = the settings' inbound API or
    pushed); `sent_via`: the gateway's name, to find the message a reply answers."""
    settings = settings or get_settings()
    number = _number(item.phone_number)
    received = item.received_at or utcnow()
    action = classify_message(item.text, settings)
    if action is None and item.kind == SHORTCODES and not normalise_keyword(item.text):
        # Keyword-routed shortcodes may deliver "STOP" as the keyword with no text.
        action = classify_message(item.keyword, settings)
    keyword = normalise_keyword(item.text or item.keyword or "") if action else None
    flags = {
        "opt_out": action is KeywordAction.OPT_OUT,
        "opt_in": action is KeywordAction.OPT_IN,
    }
    message_id = None
    if item.kind == REPLIES:
        customer_id = None
        if item.in_reply_to:
            message_id, customer_id = _answered(session, account_id, item.in_reply_to, sent_via)
        model: Any = SmsReply
        id_column: InstrumentedAttribute[Any] = SmsReply.gateway_reply_id
        values: dict[str, Any] = {
            "account_id": account_id,
            "gateway": gateway,
            "gateway_reply_id": gateway_item_id,
            "message_id": message_id,
            "phone_number": number,
            "received_data": item.text,
            "received_at": received,
            "customer_id": customer_id,
            **flags,
        }
        conflict = ["account_id", "gateway", "gateway_reply_id"]
    else:
        model = SmsShortcode
        id_column = SmsShortcode.gateway_sc_id
        values = {
            "account_id": account_id,
            "gateway": gateway,
            "gateway_sc_id": gateway_item_id,
            "shortcode": (item.shortcode or "")[:16],
            "keyword": (item.keyword or "")[:64] or None,
            "num_from": number,
            "data": item.text,
            "received_at": received,
            **flags,
        }
        conflict = ["account_id", "gateway", "gateway_sc_id"]
    row_id = session.execute(
        insert_ignore(session, model, conflict).values(**values).returning(model.id)
    ).scalar()
    if row_id is None:
        existing = session.scalar(
            select(model.id).where(
                model.account_id == account_id,
                model.gateway == gateway,
                id_column == gateway_item_id,
            )
        )
        # Only a non-NULL gateway id can conflict, so the earlier row exists.
        assert existing is not None
        return StoredInbound(int(existing), item.kind, created=False, message_id=message_id)
    if action is not None:
        source = "reply" if item.kind == REPLIES else "shortcode"
        apply_keyword(session, number, action, when=received, source=source, keyword=keyword)
    return StoredInbound(int(row_id), item.kind, True, action, message_id)


def record_inbound(
    phone_number: str,
    text: str,
    *,
    account: str | int | None = None,
    gateway_reply_id: int | None = None,
    in_reply_to_gateway_id: str | None = None,
    shortcode: str | None = None,
    keyword: str | None = None,
    received_at: dt.datetime | None = None,
    session: Session | None = None,
) -> int:
    """Store an incoming message a gateway pushed to us; returns its row id.

    With `shortcode` it is a shortcode message (`sms_shortcodes`), otherwise a reply
    (`sms_replies`), linked to the message whose gateway id is `in_reply_to_gateway_id`
    and carrying its customer_id. `gateway_reply_id` (the gateway's id for the incoming
    message) makes a repeated push store once: the first row's id is returned. Opt-out
    and opt-in keywords act as in polling. With `session` it joins the caller's
    transaction. Raises InvalidMessage for bad arguments or an unknown account.
    """
    if not isinstance(phone_number, str) or not phone_number.strip():
        raise InvalidMessage("phone_number", "a phone number is required")
    if len(phone_number.strip()) > 32:
        raise InvalidMessage("phone_number", "too long for a phone number")
    if not isinstance(text, str):
        raise InvalidMessage("text", "must be text")
    if gateway_reply_id is not None and (
        isinstance(gateway_reply_id, bool)
        or not isinstance(gateway_reply_id, int)
        or gateway_reply_id < 1
    ):
        raise InvalidMessage("gateway_reply_id", "must be a positive integer")
    if received_at is not None and (
        not isinstance(received_at, dt.datetime) or received_at.tzinfo is None
    ):
        raise InvalidMessage("received_at", "must be a timezone-aware datetime")
    if shortcode is not None and (not isinstance(shortcode, str) or not shortcode.strip()):
        raise InvalidMessage("shortcode", "must be non-empty text")
    kind: Kind = SHORTCODES if shortcode is not None else REPLIES
    item = InboundItem(
        kind=kind,
        id=gateway_reply_id or 0,
        phone_number=phone_number,
        text=text,
        received_at=received_at,
        in_reply_to=in_reply_to_gateway_id if kind == REPLIES else None,
        shortcode=shortcode.strip() if shortcode else None,
        keyword=keyword,
    )
    settings = get_settings()

    def _store(sess: Session) -> int:
        acct = find_account(sess, account)
        if acct is None:
            raise InvalidMessage("account", "no such account")
        return store_inbound(
            sess, acct.id, item, gateway_item_id=gateway_reply_id, settings=settings
        ).id

    if session is not None:
        return _store(session)
    with session_scope(settings) as own:
        return _store(own)

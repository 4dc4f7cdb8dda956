"""Incoming messages: replies and shortcode messages, polled or pushed, and opt-outs.

One code path stores every incoming message (:func:`store_inbound`): polled pages and
:func:`record_inbound` (a gateway pushing to application code) both go through it. A
message is stored once per (account, gateway id) by ``INSERT ... ON CONFLICT DO
NOTHING``; only a newly stored message changes the opt-out list, so a page fetched twice
cannot replay an old STOP over a newer START.

Polling (SMSPortal's GetRepliesInterval / GetSCInterval, minutes, 0 = off): beat runs
:func:`poll_inbound` every SMS_INBOUND_POLL_SECONDS; an account is due when its
``last_process_*`` is older than its interval. Claiming the round (a conditional update
of ``last_process_*``) keeps two beat ticks or two workers from polling one account at
once. Pages of :data:`MAX_PAGE` are fetched after the high-water mark (``max_replies_id``
/ ``max_sc_id``) and again at once while they come back full; each page's rows and the
mark it advances to commit in one transaction, so a crash re-fetches the page and the
unique key drops what was already stored.

Every account polls with the gateway login from settings (accounts carry no credentials
of their own yet): with one gateway login, enable polling on one account only, or each
account stores its own copy of every incoming message.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import case, delete, or_, select, update
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import InstrumentedAttribute, Session

from sms_pipeline.db import affected, insert_ignore, session_scope
from sms_pipeline.db.models import Account, OptOut, SmsLog, SmsReply, SmsShortcode, utcnow
from sms_pipeline.errors import InvalidMessage
from sms_pipeline.gateway import GatewayError
from sms_pipeline.gateway.inbound import (
    MAX_PAGE,
    REPLIES,
    SHORTCODES,
    InboundClient,
    InboundItem,
    Kind,
)
from sms_pipeline.metrics import hooks as metrics
from sms_pipeline.services import privacy
from sms_pipeline.services.accounts import find_account
from sms_pipeline.services.intake import parse_number as normalise_phone_number
from sms_pipeline.services.masking import mask_phone
from sms_pipeline.services.optout import KeywordAction, classify_message, normalise_keyword
from sms_pipeline.settings import Settings, get_settings

log = logging.getLogger(__name__)

# A runaway gateway (or a huge backlog) cannot keep one poll going forever; the rest
# follows in the next round.
MAX_PAGES_PER_POLL = 1000


@dataclass(frozen=True)
class StoredInbound:
    """What storing one incoming message did."""

    id: int  # sms_replies.id or sms_shortcodes.id
    kind: Kind
    created: bool  # False: the gateway id was stored before (nothing changed)
    action: KeywordAction | None = None
    message_id: Any = None  # the sms_log id a reply answers, if found


@dataclass
class PollResult:
    polled: int = 0  # (account, kind) rounds run
    pages: int = 0
    fetched: int = 0
    stored: int = 0
    opt_outs: int = 0
    opt_ins: int = 0
    errors: int = 0
    skipped: int = 0  # items that could not be read or stored (counted in the metrics)
    details: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, int]:
        return {
            "polled": self.polled,
            "pages": self.pages,
            "fetched": self.fetched,
            "stored": self.stored,
            "opt_outs": self.opt_outs,
            "opt_ins": self.opt_ins,
            "errors": self.errors,
            "skipped": self.skipped,
        }


# --------------------------------------------------------------------------- storing


def _number(raw: str) -> str:
    # Opt-outs are keyed on E.164, as enqueue writes numbers; keep what the gateway gave
    # when it is not a phone number (a sender name, a short code).
    try:
        return normalise_phone_number(raw)
    except InvalidMessage:
        return raw.strip()[:32]


def _answered(session: Session, account_id: int, gateway_id: str) -> tuple[Any, str | None]:
    """(sms_log id, customer_id) of the message with this gateway id, preferring the account's."""
    row = session.execute(
        select(SmsLog.id, SmsLog.customer_id)
        .where(SmsLog.gateway_id == gateway_id)
        .order_by(case((SmsLog.account_id == account_id, 0), else_=1), SmsLog.inserted_at.desc())
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
) -> StoredInbound:
    """Store one incoming message (once per account and gateway id) and act on keywords."""
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
            message_id, customer_id = _answered(session, account_id, item.in_reply_to)
        model: Any = SmsReply
        id_column: InstrumentedAttribute[Any] = SmsReply.gateway_reply_id
        values: dict[str, Any] = {
            "account_id": account_id,
            "gateway_reply_id": gateway_item_id,
            "message_id": message_id,
            "phone_number": number,
            "received_data": item.text,
            "received_at": received,
            "customer_id": customer_id,
            **flags,
        }
        conflict = ["account_id", "gateway_reply_id"]
    else:
        model = SmsShortcode
        id_column = SmsShortcode.gateway_sc_id
        values = {
            "account_id": account_id,
            "gateway_sc_id": gateway_item_id,
            "shortcode": (item.shortcode or "")[:16],
            "keyword": (item.keyword or "")[:64] or None,
            "num_from": number,
            "data": item.text,
            "received_at": received,
            **flags,
        }
        conflict = ["account_id", "gateway_sc_id"]
    row_id = session.execute(
        insert_ignore(session, model, conflict).values(**values).returning(model.id)
    ).scalar()
    if row_id is None:
        existing = session.scalar(
            select(model.id).where(model.account_id == account_id, id_column == gateway_item_id)
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


# --------------------------------------------------------------------------- polling

_MARKS: dict[str, tuple[InstrumentedAttribute[Any], ...]] = {
    # kind: (interval in minutes, last processed, high-water mark)
    REPLIES: (Account.get_replies_interval, Account.last_process_replies, Account.max_replies_id),
    SHORTCODES: (Account.get_sc_interval, Account.last_process_sc, Account.max_sc_id),
}

_client_lock = threading.Lock()
_clients: dict[tuple[str, str], InboundClient] = {}


def get_inbound_client(settings: Settings | None = None) -> InboundClient:
    """The process-wide inbound client (one pooled HTTP session)."""
    settings = settings or get_settings()
    key = (settings.ip2sms_inbound_url, settings.ip2sms_login)
    with _client_lock:
        client = _clients.get(key)
        if client is None:
            client = InboundClient.from_settings(settings)
            _clients[key] = client
        return client


def _claim_round(account_id: int, kind: Kind, now: dt.datetime, settings: Settings) -> bool:
    """Mark the round as started if it is due; False when another poller took it."""
    interval_col, last_col, _ = _MARKS[kind]
    with session_scope(settings) as session:
        interval = session.scalar(
            select(interval_col).where(Account.id == account_id, Account.active.is_(True))
        )
        if not interval:
            return False
        cutoff = now - dt.timedelta(minutes=interval)
        claimed = affected(
            session.execute(
                update(Account)
                .where(Account.id == account_id, or_(last_col.is_(None), last_col <= cutoff))
                .values({last_col.key: now})
                .execution_options(synchronize_session=False)
            )
        )
        return claimed > 0


def _advance_mark(session: Session, account_id: int, kind: Kind, to: int) -> None:
    mark_col = _MARKS[kind][2]
    # Never backwards: a slower concurrent poll may commit an older page after ours.
    session.execute(
        update(Account)
        .where(Account.id == account_id)
        .values({mark_col.key: case((mark_col < to, to), else_=mark_col)})
        .execution_options(synchronize_session=False)
    )


def store_page(
    account_id: int,
    kind: Kind,
    items: list[InboundItem],
    settings: Settings,
    *,
    last_id: int | None = None,
) -> list[StoredInbound | None]:
    """Store one fetched page and advance the mark past it (and past `last_id`, the page's
    unreadable items), in one transaction.

    Each item is stored in its own savepoint: an item the database refuses is skipped
    (None in the result, logged without its text) and the rest of the page, a STOP after
    it included, is stored.
    """
    stored: list[StoredInbound | None] = []
    with session_scope(settings) as session:
        for item in items:
            try:
                with session.begin_nested():
                    stored.append(
                        store_inbound(
                            session, account_id, item, gateway_item_id=item.id, settings=settings
                        )
                    )
            except (DBAPIError, ValueError, OverflowError) as exc:
                log.warning(
                    "account %s: %s item %s could not be stored (%s); skipped",
                    account_id,
                    kind,
                    item.id,
                    type(exc).__name__,
                )
                stored.append(None)
        mark = max(
            [item.id for item in items] + ([last_id] if last_id is not None else []), default=None
        )
        if mark is not None:
            _advance_mark(session, account_id, kind, mark)
    return stored


def poll_account(
    account_id: int,
    kind: Kind,
    *,
    client: InboundClient | None = None,
    settings: Settings | None = None,
    result: PollResult | None = None,
) -> PollResult:
    """Fetch and store everything new of one kind for one account (no interval check).

    Raises GatewayError when the gateway fails; pages stored before that stay stored.
    """
    settings = settings or get_settings()
    client = client or get_inbound_client(settings)
    result = result if result is not None else PollResult()
    mark_col = _MARKS[kind][2]
    result.polled += 1
    new = pages = 0
    for _ in range(MAX_PAGES_PER_POLL):
        with session_scope(settings) as session:
            after = int(session.scalar(select(mark_col).where(Account.id == account_id)) or 0)
        page = client.fetch_page(kind, after, MAX_PAGE)
        items = page.items
        pages += 1
        result.pages += 1
        result.fetched += len(items)
        stored = store_page(account_id, kind, items, settings, last_id=page.last_id)
        skipped = page.skipped + sum(entry is None for entry in stored)
        if skipped:
            result.skipped += skipped
            metrics.inbound_skipped(kind, skipped)
            log.warning("account %s: %d unreadable %s skipped", account_id, skipped, kind)
        for entry in stored:
            if entry is not None and entry.created:
                new += 1
                result.stored += 1
                result.opt_outs += entry.action is KeywordAction.OPT_OUT
                result.opt_ins += entry.action is KeywordAction.OPT_IN
        # A short page is the last; so is one that cannot move the mark (only items
        # beyond what a mark can hold): asking again would return the same page.
        if page.seen < MAX_PAGE or page.last_id is None or page.last_id <= after:
            break
    if new:
        log.info("account %s: %d new %s in %d page(s)", account_id, new, kind, pages)
    return result


def poll_inbound(
    settings: Settings | None = None,
    *,
    client: InboundClient | None = None,
    now: dt.datetime | None = None,
) -> PollResult:
    """Poll every active account whose reply or shortcode interval has passed."""
    settings = settings or get_settings()
    now = now or utcnow()
    with session_scope(settings) as session:
        accounts = session.execute(
            select(
                Account.id,
                Account.get_replies_interval,
                Account.last_process_replies,
                Account.get_sc_interval,
                Account.last_process_sc,
            )
            .where(
                Account.active.is_(True),
                or_(Account.get_replies_interval > 0, Account.get_sc_interval > 0),
            )
            .order_by(Account.id)
        ).all()
    result = PollResult()
    for account_id, replies_every, replies_last, sc_every, sc_last in accounts:
        rounds: tuple[tuple[Kind, int, dt.datetime | None], ...] = (
            (REPLIES, replies_every, replies_last),
            (SHORTCODES, sc_every, sc_last),
        )
        for kind, every, last in rounds:
            if every <= 0 or (last is not None and last > now - dt.timedelta(minutes=every)):
                continue
            if not _claim_round(account_id, kind, now, settings):
                continue
            try:
                poll_account(account_id, kind, client=client, settings=settings, result=result)
            except GatewayError as exc:
                # The next round comes after the interval; the mark keeps what was stored.
                metrics.poller_unit_failed("inbound")
                result.errors += 1
                result.details.append(f"account {account_id} {kind}: {exc.reason}")
                log.warning("account %s: polling %s failed: %s", account_id, kind, exc.reason)
            except Exception as exc:
                # Whatever went wrong with this account, the others are still polled.
                metrics.poller_unit_failed("inbound")
                result.errors += 1
                result.details.append(f"account {account_id} {kind}: {type(exc).__name__}")
                log.exception("account %s: polling %s failed", account_id, kind)
    return result


__all__ = [
    "MAX_PAGES_PER_POLL",
    "PollResult",
    "StoredInbound",
    "apply_keyword",
    "get_inbound_client",
    "poll_account",
    "poll_inbound",
    "record_inbound",
    "store_inbound",
    "store_page",
]

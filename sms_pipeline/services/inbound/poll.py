"""Polling the gateway's inbound pages (SMSPortal's GetRepliesInterval / GetSCInterval).

Beat runs :func:`poll_inbound` every SMS_INBOUND_POLL_SECONDS; an account is due when its
``last_process_*`` is older than its interval (minutes, 0 = off). Claiming the round (a
conditional update of ``last_process_*``) keeps two ticks or two workers from polling one
account at once. Pages of :data:`MAX_PAGE` are fetched after the high-water mark and again
at once while they come back full; each page's rows and the mark it advances to commit in
one transaction, so a crash re-fetches the page and the unique key drops what was stored.

Which inbound APIs an account reads, with whose login, is `sources.sources_for`: the
settings' one (mark on the account) or each active gateway row with an `inbound_url` (mark
per account and gateway in `inbound_marks`); one gateway failing leaves the others polled.
Accounts that share one login on a gateway each store their own copy of its messages.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import case, or_, select, update
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import InstrumentedAttribute, Session

from sms_pipeline.db import affected, insert_ignore, session_scope
from sms_pipeline.db.models import Account, InboundMark, utcnow
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
from sms_pipeline.services.inbound.sources import SETTINGS_KEY, sources_for
from sms_pipeline.services.inbound.store import StoredInbound, store_inbound
from sms_pipeline.services.optout import KeywordAction
from sms_pipeline.settings import Settings, get_settings

log = logging.getLogger(__name__)

# A runaway gateway (or a huge backlog) cannot keep one poll going forever; the rest
# follows in the next round.
MAX_PAGES_PER_POLL = 1000


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


def _read_mark(session: Session, account_id: int, kind: Kind, key: str = SETTINGS_KEY) -> int:
    if key == SETTINGS_KEY:
        mark_col = _MARKS[kind][2]
        return int(session.scalar(select(mark_col).where(Account.id == account_id)) or 0)
    mark = session.scalar(
        select(InboundMark.max_id).where(
            InboundMark.account_id == account_id,
            InboundMark.gateway == key,
            InboundMark.kind == kind,
        )
    )
    return int(mark or 0)


def _advance_mark(
    session: Session, account_id: int, kind: Kind, to: int, key: str = SETTINGS_KEY
) -> None:
    # Never backwards: a slower concurrent poll may commit an older page after ours.
    if key == SETTINGS_KEY:
        mark_col = _MARKS[kind][2]
        session.execute(
            update(Account)
            .where(Account.id == account_id)
            .values({mark_col.key: case((mark_col < to, to), else_=mark_col)})
            .execution_options(synchronize_session=False)
        )
        return
    session.execute(
        insert_ignore(session, InboundMark, ["account_id", "gateway", "kind"]).values(
            account_id=account_id, gateway=key, kind=kind, max_id=0
        )
    )
    session.execute(
        update(InboundMark)
        .where(
            InboundMark.account_id == account_id,
            InboundMark.gateway == key,
            InboundMark.kind == kind,
        )
        .values(max_id=case((InboundMark.max_id < to, to), else_=InboundMark.max_id))
        .execution_options(synchronize_session=False)
    )


def store_page(
    account_id: int,
    kind: Kind,
    items: list[InboundItem],
    settings: Settings,
    *,
    last_id: int | None = None,
    key: str = SETTINGS_KEY,
    gateway: str | None = None,
) -> list[StoredInbound | None]:
    """Store one fetched page and advance the mark past it (and past `last_id`, the page's
    unreadable items), in one transaction. `key`: whose mark and rows ('' = the settings'
    inbound API, else the gateway's name); `gateway`: the gateway's name.

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
                            session,
                            account_id,
                            item,
                            gateway_item_id=item.id,
                            settings=settings,
                            gateway=key,
                            sent_via=gateway,
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
            _advance_mark(session, account_id, kind, mark, key)
    return stored


def poll_account(
    account_id: int,
    kind: Kind,
    *,
    client: InboundClient | None = None,
    settings: Settings | None = None,
    result: PollResult | None = None,
    key: str = SETTINGS_KEY,
    gateway: str | None = None,
) -> PollResult:
    """Fetch and store everything new of one kind for one account from one inbound API (no
    interval check): `key` '' is the settings' one, else the gateway `key`'s.

    Raises GatewayError when the gateway fails; pages stored before that stay stored.
    """
    settings = settings or get_settings()
    client = client or get_inbound_client(settings)
    result = result if result is not None else PollResult()
    result.polled += 1
    new = pages = 0
    for _ in range(MAX_PAGES_PER_POLL):
        with session_scope(settings) as session:
            after = _read_mark(session, account_id, kind, key)
        page = client.fetch_page(kind, after, MAX_PAGE)
        items = page.items
        pages += 1
        result.pages += 1
        result.fetched += len(items)
        stored = store_page(
            account_id, kind, items, settings, last_id=page.last_id, key=key, gateway=gateway
        )
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
        where = f" from gateway {key}" if key else ""
        log.info("account %s: %d new %s%s in %d page(s)", account_id, new, kind, where, pages)
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
        accounts = list(
            session.scalars(
                select(Account)
                .where(
                    Account.active.is_(True),
                    or_(Account.get_replies_interval > 0, Account.get_sc_interval > 0),
                )
                .order_by(Account.id)
            )
        )
        session.expunge_all()
    result = PollResult()
    for account in accounts:
        rounds: tuple[tuple[Kind, int, dt.datetime | None], ...] = (
            (REPLIES, account.get_replies_interval, account.last_process_replies),
            (SHORTCODES, account.get_sc_interval, account.last_process_sc),
        )
        for kind, every, last in rounds:
            if every <= 0 or (last is not None and last > now - dt.timedelta(minutes=every)):
                continue
            if not _claim_round(account.id, kind, now, settings):
                continue
            default_client = client or get_inbound_client(settings)
            for source in sources_for(account, settings, default_client):
                _poll_source(
                    account.id, kind, source.scope, source.gateway, source.client, settings, result
                )
    return result


def _poll_source(
    account_id: int,
    kind: Kind,
    key: str,
    gateway: str,
    client: InboundClient,
    settings: Settings,
    result: PollResult,
) -> None:
    """One account's round on one inbound API; its failure leaves the others polled."""
    where = f" on gateway {gateway}" if key else ""
    try:
        poll_account(
            account_id, kind, client=client, settings=settings, result=result, key=key,
            gateway=gateway,
        )  # fmt: skip
    except GatewayError as exc:
        # The next round comes after the interval; the mark keeps what was stored.
        metrics.poller_unit_failed("inbound")
        result.errors += 1
        result.details.append(f"account {account_id} {kind}{where}: {exc.reason}")
        log.warning("account %s: polling %s%s failed: %s", account_id, kind, where, exc.reason)
    except Exception as exc:
        # Whatever went wrong with this account, the others are still polled.
        metrics.poller_unit_failed("inbound")
        result.errors += 1
        result.details.append(f"account {account_id} {kind}{where}: {type(exc).__name__}")
        log.exception("account %s: polling %s%s failed", account_id, kind, where)

"""Our inbound API next to IP2SMS: replies and shortcode messages, fetched in pages.

IP2SMS defines no way to fetch incoming messages, so this small protocol is ours (its
requests and answers: docs/inbound.md), in the gateway's conventions: a POST of a small XML
document with Basic auth, XML answers, the same error classes. Both sides live here, like
`codec`: the client (`InboundClient`) and the helpers the simulator answers with. A page
holding `limit` items means "there may be more: ask again after the last id".
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from types import TracebackType
from typing import TYPE_CHECKING, Final, Literal, Self

from sms_pipeline.gateway.client import IP2SMSClient
from sms_pipeline.gateway.codec import (
    DEFAULT_MAX_BYTES,
    RequestParseError,
    check_xml_text,
    parse_gateway_date,
    parse_root,
    prepare_xml,
    safe_fromstring,
    xml_bytes,
)
from sms_pipeline.gateway.errors import GatewayError
from sms_pipeline.settings import mask_url

if TYPE_CHECKING:
    from sms_pipeline.settings import Settings

Kind = Literal["replies", "shortcodes"]
REPLIES: Final[Kind] = "replies"
SHORTCODES: Final[Kind] = "shortcodes"
KINDS: Final[tuple[Kind, ...]] = ("replies", "shortcodes")
ITEM_TAG: Final[dict[str, str]] = {REPLIES: "reply", SHORTCODES: "shortcode"}
# The most items one page carries; a client asking for more gets this many.
MAX_PAGE: Final = 100
# Item ids are stored as BIGINT (and are the high-water mark): larger ones are skipped.
MAX_ITEM_ID: Final = 2**63 - 1
# 100 items of up to a few KB each; larger answers are refused like any oversized answer.
DEFAULT_INBOUND_MAX_BYTES: Final = max(DEFAULT_MAX_BYTES, 1024 * 1024)


@dataclass(frozen=True, slots=True)
class InboundItem:
    """One incoming message as the gateway reports it.

    ``in_reply_to`` (replies) is the gateway id of the message answered; ``shortcode``
    and ``keyword`` are set for shortcode messages. ``text`` is personal data: never log it.
    """

    kind: Kind
    id: int
    phone_number: str
    text: str = field(repr=False)
    received_at: datetime | None = None
    date_raw: str | None = None
    in_reply_to: str | None = None
    shortcode: str | None = None
    keyword: str | None = None


# --------------------------------------------------------------------------- requests


def build_page_request(kind: Kind, after: int, limit: int = MAX_PAGE) -> bytes:
    """``<request after=".." limit="..">replies</request>``."""
    if kind not in KINDS:
        raise ValueError(f"unknown inbound kind {kind!r}")
    if after < 0 or limit < 1:
        raise ValueError("after must be >= 0 and limit >= 1")
    root = ET.Element("request", {"after": str(after), "limit": str(limit)})
    root.text = kind
    return xml_bytes(root)


def parse_page_request(raw: bytes) -> tuple[Kind, int, int]:
    """(kind, after, limit) of a page request; RequestParseError when it is not one.

    ``limit`` is capped at :data:`MAX_PAGE`; a missing ``after`` means 0.
    """
    try:
        root = safe_fromstring(prepare_xml(raw))
    except ValueError as exc:
        raise RequestParseError(str(exc)) from None
    if root.tag.rsplit("}", 1)[-1].lower() != "request":
        raise RequestParseError("expected <request>")
    kind = (root.text or "").strip().lower()
    if kind not in KINDS:
        raise RequestParseError("request is not for replies or shortcodes")
    try:
        after = int((root.get("after") or "0").strip())
        limit = int((root.get("limit") or str(MAX_PAGE)).strip())
    except ValueError:
        raise RequestParseError("after and limit must be integers") from None
    if after < 0 or limit < 1:
        raise RequestParseError("after must be >= 0 and limit >= 1")
    return kind, after, min(limit, MAX_PAGE)


# --------------------------------------------------------------------------- answers


def build_page_answer(kind: Kind, items: Iterable[InboundItem], *, date: str) -> bytes:
    """The answer document for one page (the simulator's side)."""
    root = ET.Element(str(kind), {"date": date})
    for item in items:
        attrs = {"id": str(item.id), "from": check_xml_text(item.phone_number, "from")}
        if item.date_raw:
            attrs["date"] = item.date_raw
        if kind == REPLIES and item.in_reply_to is not None:
            attrs["ref"] = check_xml_text(item.in_reply_to, "ref")
        if kind == SHORTCODES:
            attrs["code"] = check_xml_text(item.shortcode or "", "code")
            if item.keyword:
                attrs["keyword"] = check_xml_text(item.keyword, "keyword")
        element = ET.SubElement(root, ITEM_TAG[kind], attrs)
        element.text = check_xml_text(item.text, "text")
    return xml_bytes(root)


def _clean(value: str | None) -> str | None:
    value = (value or "").strip()
    return value or None


@dataclass(frozen=True, slots=True)
class InboundPage:
    """One fetched page.

    ``items`` are the readable items above ``after``, in increasing id order. ``skipped``
    counts items that could not be read (no numeric id, an id out of range, no number):
    they are never stored, and they never stop the items around them. ``seen`` is every
    item element on the page (a full page means "ask again"); ``last_id`` is the highest
    id above ``after`` the high-water mark may move to (skipped items included, so a
    poison item is not fetched for ever), or None.
    """

    items: list[InboundItem]
    skipped: int = 0
    seen: int = 0
    last_id: int | None = None


def parse_page(
    raw: bytes, kind: Kind, *, after: int = 0, max_bytes: int = DEFAULT_INBOUND_MAX_BYTES
) -> InboundPage:
    """Parse one page; unreadable items are skipped and counted, not fatal.

    Raises GatewayProtocolError (transient) for anything that is not such a page at all:
    plain text, ``<error>``, DTDs/entities, another root. Items whose id is not above
    ``after`` are dropped (a gateway repeating itself is harmless). The reason never
    quotes the answer.
    """
    root = parse_root(raw, kind, max_bytes=max_bytes)
    items: dict[int, InboundItem] = {}
    tag = ITEM_TAG[kind]
    skipped = seen = 0
    last_id: int | None = None
    for child in root:
        if child.tag.rsplit("}", 1)[-1].lower() != tag:
            continue
        seen += 1
        try:
            item_id = int((child.get("id") or "").strip())
        except ValueError:
            skipped += 1
            continue
        if not 0 < item_id <= MAX_ITEM_ID:
            skipped += 1  # cannot be stored, nor be a mark: it stays after the mark
            continue
        if item_id <= after:
            continue
        last_id = item_id if last_id is None else max(last_id, item_id)
        number = _clean(child.get("from"))
        if number is None:
            skipped += 1
            continue
        date_raw = child.get("date")
        items[item_id] = InboundItem(
            kind=kind,
            id=item_id,
            phone_number=number,
            text=child.text or "",
            received_at=parse_gateway_date(date_raw),
            date_raw=date_raw,
            in_reply_to=_clean(child.get("ref")) if kind == REPLIES else None,
            shortcode=_clean(child.get("code")) if kind == SHORTCODES else None,
            keyword=_clean(child.get("keyword")) if kind == SHORTCODES else None,
        )
    return InboundPage([items[key] for key in sorted(items)], skipped, seen, last_id)


# --------------------------------------------------------------------------- client


def page_url(base_url: str, kind: Kind) -> str:
    return base_url.rstrip("/") + "/" + kind


class InboundClient:
    """Fetches pages of replies and shortcode messages; thread-safe like IP2SMSClient.

    The HTTP exchange (timeouts, size limit, redirects refused, HTTP errors sorted into
    :mod:`sms_pipeline.gateway.errors`) is IP2SMSClient's own, so both sides of the
    gateway fail the same way.
    """

    def __init__(
        self,
        base_url: str,
        login: str,
        password: str,
        timeout: tuple[float, float] = (3.05, 10.0),
        *,
        max_response_bytes: int = DEFAULT_INBOUND_MAX_BYTES,
        pool_size: int = 4,
    ) -> None:
        self.base_url = base_url
        self.login = login
        self.max_response_bytes = max_response_bytes
        self._http = IP2SMSClient(
            base_url,
            base_url,
            login,
            password,
            source="",
            timeout=timeout,
            max_response_bytes=max_response_bytes,
            pool_size=pool_size,
        )

    @classmethod
    def from_settings(cls, settings: Settings | None = None) -> InboundClient:
        if settings is None:
            from sms_pipeline.settings import get_settings

            settings = get_settings()
        return cls(
            settings.ip2sms_inbound_url,
            settings.ip2sms_login,
            settings.ip2sms_password.get_secret_value(),
            (settings.ip2sms_connect_timeout, settings.ip2sms_read_timeout),
            max_response_bytes=max(settings.ip2sms_max_response_bytes, DEFAULT_INBOUND_MAX_BYTES),
        )

    def __repr__(self) -> str:
        return (
            f"InboundClient(base_url={mask_url(self.base_url)!r}, login={self.login!r}, "
            "password='***')"
        )

    __str__ = __repr__

    def fetch_page(self, kind: Kind, after: int, limit: int = MAX_PAGE) -> InboundPage:
        """One page of `kind` with ids above `after`, with its skipped-item count.
        Raises GatewayError."""
        payload = build_page_request(kind, after, limit)
        try:
            raw = self._http.post_xml(page_url(self.base_url, kind), payload)
            return parse_page(raw, kind, after=after, max_bytes=self.max_response_bytes)
        except GatewayError as exc:
            # The transport exception may quote URLs or answers: the reason says enough.
            exc.__cause__ = exc.__context__ = None
            raise

    def fetch(self, kind: Kind, after: int, limit: int = MAX_PAGE) -> list[InboundItem]:
        """The readable items of one page of `kind` with ids above `after`."""
        return self.fetch_page(kind, after, limit).items

    def replies(self, after: int, limit: int = MAX_PAGE) -> list[InboundItem]:
        return self.fetch(REPLIES, after, limit)

    def shortcodes(self, after: int, limit: int = MAX_PAGE) -> list[InboundItem]:
        return self.fetch(SHORTCODES, after, limit)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


__all__ = [
    "KINDS",
    "MAX_ITEM_ID",
    "MAX_PAGE",
    "REPLIES",
    "SHORTCODES",
    "InboundClient",
    "InboundItem",
    "InboundPage",
    "Kind",
    "build_page_answer",
    "build_page_request",
    "page_url",
    "parse_page",
    "parse_page_request",
]

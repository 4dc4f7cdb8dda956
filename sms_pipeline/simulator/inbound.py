"""The simulator's side of our inbound API (docs/inbound.md): replies and shortcode messages.

Register it with ``SimulatorConfig(extra_routes=(register_inbound,))`` (or
``inbound_routes(auto_reply_probability=0.2)`` for the demo). Endpoints:

- ``POST /ip2sms-inbound/replies``     a page of replies (Basic auth, XML)
- ``POST /ip2sms-inbound/shortcodes``  a page of shortcode messages (Basic auth, XML)
- ``POST /_sim/replies``     JSON ``{gateway_id, text}``: the recipient of that message
  answers it; 404 for an unknown message
- ``POST /_sim/shortcodes``  JSON ``{shortcode, keyword, num_from, text}``
- ``GET  /_sim/inbound``     counts and the auto-reply settings
- ``POST /_sim/inbound/config``  JSON ``{auto_reply_probability, auto_reply_texts, seed}``
- ``POST /_sim/inbound/reset``   forget every inbound message

Auto-replies are decided lazily, like the status clock: when a page of replies is
asked for, every message that became Delivered since the last look answers with the
configured probability, in order of submission. Texts are kept in memory only.
"""

from __future__ import annotations

import base64
import hmac
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from sms_pipeline.simulator import EXTRA_HINT

try:
    from aiohttp import web
except ImportError as exc:  # the production image has no simulator extra
    raise ImportError(EXTRA_HINT) from exc

from sms_pipeline.gateway.codec import RequestParseError, check_xml_text
from sms_pipeline.gateway.inbound import (
    REPLIES,
    SHORTCODES,
    InboundItem,
    Kind,
    build_page_answer,
    parse_page_request,
)
from sms_pipeline.gateway.statuses import GatewayStatus
from sms_pipeline.simulator.rules import MALFORMED_ANSWER
from sms_pipeline.simulator.server import CONFIG_KEY, STATE_KEY, RouteRegistrar
from sms_pipeline.simulator.state import SimState, gateway_date

INBOUND_PATH: Final = "/ip2sms-inbound/"
MAX_REQUEST_BYTES: Final = 64 * 1024
MAX_TEXT_CHARS: Final = 2000
# What a person answers in the demo: mostly chatter, sometimes an opt-out.
DEFAULT_AUTO_TEXTS: Final = ("OK, thanks", "Дякую!", "Who is this?", "STOP", "СТОП", "Stop!")


@dataclass
class InboundStore:
    """Incoming messages in id order, the auto-reply settings and how far they looked."""

    auto_reply_probability: float = 0.0
    auto_reply_texts: Sequence[str] = DEFAULT_AUTO_TEXTS
    rng: random.Random = field(default_factory=random.Random)
    replies: list[InboundItem] = field(default_factory=list)
    shortcodes: list[InboundItem] = field(default_factory=list)
    # Highest gateway id already considered for an auto-reply (ids only grow).
    auto_cursor: int = 0
    _next_id: dict[str, int] = field(default_factory=lambda: {REPLIES: 1, SHORTCODES: 1})

    def add(self, kind: Kind, **values: Any) -> InboundItem:
        item_id = self._next_id[kind]
        self._next_id[kind] = item_id + 1
        item = InboundItem(kind=kind, id=item_id, date_raw=gateway_date(), **values)
        (self.replies if kind == REPLIES else self.shortcodes).append(item)
        return item

    def page(self, kind: Kind, after: int, limit: int) -> list[InboundItem]:
        items = self.replies if kind == REPLIES else self.shortcodes
        # Ids are list positions + 1, so the page starts at index `after`.
        return items[after : after + limit]

    def reset(self) -> None:
        self.replies.clear()
        self.shortcodes.clear()
        self._next_id = {REPLIES: 1, SHORTCODES: 1}

    def auto_reply(self, state: SimState) -> int:
        """Let newly delivered messages answer; returns how many replies were added."""
        if self.auto_reply_probability <= 0 or not self.auto_reply_texts:
            return 0
        fresh = []
        for message in reversed(state.messages.values()):
            if int(message.gateway_id) <= self.auto_cursor:
                break
            fresh.append(message)
        now = state.clock()
        added = 0
        for message in reversed(fresh):
            status, _ = message.status_at(now, state.enroute_after, state.deliver_after)
            if not status.is_final and not message.never_final:
                break  # this one and every younger one are still on their way
            self.auto_cursor = int(message.gateway_id)
            if status is not GatewayStatus.DELIVERED:
                continue
            if self.rng.random() < self.auto_reply_probability:
                text = self.rng.choice(list(self.auto_reply_texts))
                self.add(
                    REPLIES,
                    phone_number=message.phone_number,
                    text=text,
                    in_reply_to=message.gateway_id,
                )
                added += 1
        return added

    def as_dict(self) -> dict[str, Any]:
        return {
            "replies": len(self.replies),
            "shortcodes": len(self.shortcodes),
            "auto_reply_probability": self.auto_reply_probability,
            "auto_reply_texts": len(self.auto_reply_texts),
        }


INBOUND_KEY: Final = web.AppKey("sms_sim_inbound", InboundStore)


def _expected_auth(app: web.Application) -> bytes:
    config = app[CONFIG_KEY]
    token = base64.b64encode(f"{config.login}:{config.password}".encode()).decode("ascii")
    return f"Basic {token}".encode()


async def _json(request: web.Request) -> dict[str, Any] | None:
    try:
        data = await request.json()
    except ValueError:
        return None
    return data if isinstance(data, dict) else None


def _text_field(data: dict[str, Any], name: str, *, required: bool = True) -> str | None:
    value = data.get(name)
    if value is None and not required:
        return None
    if not isinstance(value, str) or (required and not value.strip()):
        raise ValueError(f"{name} must be a non-empty string")
    if len(value) > MAX_TEXT_CHARS:
        raise ValueError(f"{name} is longer than {MAX_TEXT_CHARS} characters")
    return check_xml_text(value, name)


def _bad(reason: str) -> web.Response:
    return web.json_response({"error": reason}, status=400)


class _InboundHandlers:
    def __init__(self, app: web.Application) -> None:
        self.app = app
        self.expected_auth = _expected_auth(app)

    @property
    def store(self) -> InboundStore:
        return self.app[INBOUND_KEY]

    @property
    def state(self) -> SimState:
        return self.app[STATE_KEY]

    async def page(self, request: web.Request) -> web.Response:
        header = request.headers.get("Authorization", "")
        if not hmac.compare_digest(header.encode("utf-8", "replace"), self.expected_auth):
            self.state.stats["auth_failures"] += 1
            return web.Response(
                status=401,
                text="Unauthorized",
                headers={"WWW-Authenticate": 'Basic realm="ip2sms"'},
            )
        raw = await request.content.read(MAX_REQUEST_BYTES + 1)
        if len(raw) > MAX_REQUEST_BYTES:
            return web.Response(status=413, text="Request Entity Too Large")
        try:
            kind, after, limit = parse_page_request(raw)
        except RequestParseError:
            self.state.stats["bad_requests"] += 1
            return web.Response(body=MALFORMED_ANSWER, content_type="text/plain")
        if kind != request.match_info["kind"]:
            self.state.stats["bad_requests"] += 1
            return web.Response(body=MALFORMED_ANSWER, content_type="text/plain")
        if kind == REPLIES:
            self.store.auto_reply(self.state)
        self.state.stats[f"inbound_{kind}_pages"] += 1
        body = build_page_answer(kind, self.store.page(kind, after, limit), date=gateway_date())
        return web.Response(body=body, content_type="text/xml", charset="utf-8")

    async def add_reply(self, request: web.Request) -> web.Response:
        data = await _json(request)
        if data is None:
            return _bad("a JSON object is required")
        try:
            gateway_id = _text_field(data, "gateway_id")
            text = _text_field(data, "text")
        except ValueError as exc:
            return _bad(str(exc))
        assert gateway_id is not None and text is not None
        message = self.state.messages.get(gateway_id)
        if message is None:
            return web.json_response({"error": "no such message"}, status=404)
        item = self.store.add(
            REPLIES, phone_number=message.phone_number, text=text, in_reply_to=gateway_id
        )
        return web.json_response({"id": item.id}, status=201)

    async def add_shortcode(self, request: web.Request) -> web.Response:
        data = await _json(request)
        if data is None:
            return _bad("a JSON object is required")
        try:
            shortcode = _text_field(data, "shortcode")
            keyword = _text_field(data, "keyword", required=False)
            num_from = _text_field(data, "num_from")
            text = _text_field(data, "text")
        except ValueError as exc:
            return _bad(str(exc))
        assert shortcode is not None and num_from is not None and text is not None
        item = self.store.add(
            SHORTCODES,
            phone_number=num_from.strip(),
            text=text,
            shortcode=shortcode.strip(),
            keyword=(keyword or "").strip() or None,
        )
        return web.json_response({"id": item.id}, status=201)

    async def info(self, request: web.Request) -> web.Response:
        return web.json_response(self.store.as_dict())

    async def configure(self, request: web.Request) -> web.Response:
        data = await _json(request)
        if data is None:
            return _bad("a JSON object is required")
        store = self.store
        if "auto_reply_probability" in data:
            value = data["auto_reply_probability"]
            if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= 1:
                return _bad("auto_reply_probability must be a number from 0 to 1")
            store.auto_reply_probability = float(value)
        if "auto_reply_texts" in data:
            texts = data["auto_reply_texts"]
            if not isinstance(texts, list) or not all(isinstance(t, str) and t for t in texts):
                return _bad("auto_reply_texts must be a list of non-empty strings")
            store.auto_reply_texts = tuple(texts)
        if "seed" in data:
            store.rng.seed(data["seed"])
        return web.json_response(store.as_dict())

    async def reset(self, request: web.Request) -> web.Response:
        self.store.reset()
        return web.json_response({"reset": True})


def inbound_routes(
    auto_reply_probability: float = 0.0,
    auto_reply_texts: Sequence[str] = DEFAULT_AUTO_TEXTS,
    seed: int | None = None,
) -> RouteRegistrar:
    """A registrar for ``SimulatorConfig.extra_routes`` with the given auto-reply setup."""
    if not 0 <= auto_reply_probability <= 1:
        raise ValueError("auto_reply_probability must be from 0 to 1")

    def register(app: web.Application) -> None:
        app[INBOUND_KEY] = InboundStore(
            auto_reply_probability=auto_reply_probability,
            auto_reply_texts=tuple(auto_reply_texts),
            rng=random.Random(seed if seed is not None else time.time_ns()),
        )
        handlers = _InboundHandlers(app)
        app.router.add_post(INBOUND_PATH + "{kind:replies|shortcodes}", handlers.page)
        app.router.add_post("/_sim/replies", handlers.add_reply)
        app.router.add_post("/_sim/shortcodes", handlers.add_shortcode)
        app.router.add_get("/_sim/inbound", handlers.info)
        app.router.add_post("/_sim/inbound/config", handlers.configure)
        app.router.add_post("/_sim/inbound/reset", handlers.reset)

    return register


register_inbound: Final = inbound_routes()
"""The inbound API without auto-replies (switch them on via ``/_sim/inbound/config``)."""


__all__ = [
    "DEFAULT_AUTO_TEXTS",
    "INBOUND_KEY",
    "INBOUND_PATH",
    "InboundStore",
    "inbound_routes",
    "register_inbound",
]

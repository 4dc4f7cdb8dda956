"""The IP2SMS gateway simulator: an aiohttp application speaking the gateway's XML.

Endpoints (send and status need HTTP Basic auth, like the real gateway):

- ``POST /ip2sms/``            send one message (``<message>``)
- ``POST /ip2sms-request/``    status of one message (``<request id="..">status</request>``)
- ``GET  /_sim/stats``         JSON counters (and ``peak_in_flight``: most requests at once)
- ``GET  /_sim/rules``         the fault table in use
- ``GET  /_sim/messages/{id}`` one message as JSON (never its body; the number masked
  unless the request carries the gateway's Basic auth)
- ``GET  /_sim/submissions?uniq_key=K``  how many times a message reached the gateway
- ``POST /_sim/reset``         forget everything

Faults are chosen by the destination number's last digits: see
:mod:`sms_pipeline.simulator.rules`. Other modules (e.g. an inbound API) add routes
through ``SimulatorConfig.extra_routes`` and reach the store via ``app[STATE_KEY]``.

`runner` serves it (foreground, or a background thread for tests and the demo).
"""

from __future__ import annotations

import asyncio
import base64
import hmac
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Final

from sms_pipeline.simulator import EXTRA_HINT

try:
    from aiohttp import web
except ImportError as exc:  # the production image has no simulator extra
    raise ImportError(EXTRA_HINT) from exc

from sms_pipeline.gateway.codec import (
    ParsedState,
    RequestParseError,
    build_answer,
    parse_send_request,
    parse_status_request,
)
from sms_pipeline.gateway.statuses import GatewayStatus
from sms_pipeline.services.masking import mask_phone
from sms_pipeline.simulator.rules import DEFAULT_RULES, MALFORMED_ANSWER, Action, Rule
from sms_pipeline.simulator.state import SimState, gateway_date

log = logging.getLogger(__name__)

SEND_PATH: Final = "/ip2sms/"
STATUS_PATH: Final = "/ip2sms-request/"
MAX_REQUEST_BYTES: Final = 64 * 1024
XML_TYPE: Final = "text/xml"
# The gateway's own literal dupe answer (single quotes and an empty date, as seen).
DUPE_ANSWER: Final = b"<status date=''><state error='uniq_key dupe'>Rejected</state></status>"

RouteRegistrar = Callable[[web.Application], None]
_Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass(frozen=True)
class SimulatorConfig:
    """Everything the simulator can be told. ``port=0`` picks a free port."""

    host: str = "127.0.0.1"
    port: int = 8080
    login: str = "demo"
    password: str = field(default="demo", repr=False)
    # More (login, password) pairs it accepts: accounts with logins of their own.
    logins: tuple[tuple[str, str], ...] = field(default=(), repr=False)
    latency_ms: float = 0.0
    enroute_after: float = 1.0
    deliver_after: float = 2.0
    slow_seconds: float = 15.0
    rules: Sequence[Rule] = DEFAULT_RULES
    extra_routes: Sequence[RouteRegistrar] = ()
    shutdown_timeout: float = 1.0


STATE_KEY: Final = web.AppKey("sms_sim_state", SimState)
CONFIG_KEY: Final = web.AppKey("sms_sim_config", SimulatorConfig)


def _expected_auth(config: SimulatorConfig) -> bytes:
    return _basic(config.login, config.password)


def _basic(login: str, password: str) -> bytes:
    token = base64.b64encode(f"{login}:{password}".encode()).decode("ascii")
    return f"Basic {token}".encode()


class _Handlers:
    """The request handlers, with the per-app values they need bound once."""

    def __init__(self, config: SimulatorConfig, state: SimState) -> None:
        self.config = config
        self.state = state
        self.expected_auth = _expected_auth(config)
        self.others = tuple((_basic(lg, pw), lg) for lg, pw in config.logins)
        self.latency = config.latency_ms / 1000.0

    def _login(self, request: web.Request) -> str | None:
        """The login a request authenticated as, or None."""
        header = request.headers.get("Authorization", "").encode("utf-8", "replace")
        if hmac.compare_digest(header, self.expected_auth):
            return self.config.login
        for expected, login in self.others:
            if hmac.compare_digest(header, expected):
                return login
        return None

    def _authorized(self, request: web.Request) -> bool:
        return self._login(request) is not None

    @staticmethod
    def _xml(body: bytes, status: int = 200) -> web.Response:
        return web.Response(body=body, status=status, content_type=XML_TYPE, charset="utf-8")

    @staticmethod
    def _malformed() -> web.Response:
        return web.Response(body=MALFORMED_ANSWER, content_type="text/plain")

    def _unauthorized(self) -> web.Response:
        self.state.stats["auth_failures"] += 1
        return web.Response(
            status=401,
            text="Unauthorized",
            headers={"WWW-Authenticate": 'Basic realm="ip2sms"'},
        )

    async def _read(self, request: web.Request) -> bytes | None:
        if request.content_length is not None and request.content_length > MAX_REQUEST_BYTES:
            return None
        raw = await request.content.read(MAX_REQUEST_BYTES + 1)
        return None if len(raw) > MAX_REQUEST_BYTES else raw

    async def _admit(self, request: web.Request) -> bytes | web.Response:
        """The latency, the login and the size limit every request goes through first:
        the body, or the answer that refuses it."""
        if self.latency:
            await asyncio.sleep(self.latency)
        if self.state.fail_all is not None:
            # A gateway answering one error status to everything (an outage behind a proxy).
            return web.Response(status=self.state.fail_all, text="Service Unavailable")
        login = self._login(request)
        if login is None:
            return self._unauthorized()
        self.state.by_login[f"{request.path} {login}"] += 1
        raw = await self._read(request)
        if raw is None:
            return web.Response(status=413, text="Request Entity Too Large")
        return raw

    async def send(self, request: web.Request) -> web.Response:
        raw = await self._admit(request)
        if isinstance(raw, web.Response):
            return raw
        try:
            req = parse_send_request(raw)
        except RequestParseError:
            self.state.stats["bad_requests"] += 1
            return self._malformed()
        state = self.state
        decision = state.submit(req)
        action = decision.action
        if action is Action.ACCEPT:
            pass
        elif action is Action.DUPLICATE:
            return self._xml(DUPE_ANSWER)
        elif action is Action.HTTP_ERROR:
            rule = decision.rule
            assert rule is not None
            headers = {}
            if rule.retry_after is not None:
                headers["Retry-After"] = f"{rule.retry_after:g}"
            text = "Too Many Requests" if rule.http_status == 429 else "Application Error"
            return web.Response(status=rule.http_status, text=text, headers=headers)
        elif action is Action.REJECT:
            assert decision.rule is not None
            item = ParsedState(None, GatewayStatus.REJECTED, decision.rule.error)
            return self._xml(build_answer([item], date=gateway_date()))
        elif action is Action.MALFORMED:
            return self._malformed()
        elif action is Action.SLOW:
            rule = decision.rule
            delay = rule.delay if rule and rule.delay is not None else self.config.slow_seconds
            await asyncio.sleep(delay)
            # A retry may have been accepted while this one slept: the real gateway
            # would refuse the late one by uniq_key too.
            if state.is_duplicate(req.uniq_key):
                state.count_late_duplicate()
                return self._xml(DUPE_ANSWER)
        message = state.accept(req, decision)
        if req.uniq_key:
            state.accepted_login[req.uniq_key] = self._login(request) or ""
        item = ParsedState(message.gateway_id, GatewayStatus.ACCEPTED)
        return self._xml(build_answer([item], date=gateway_date(), ext_id=req.ext_id))

    async def status(self, request: web.Request) -> web.Response:
        raw = await self._admit(request)
        if isinstance(raw, web.Response):
            return raw
        try:
            gateway_id = parse_status_request(raw)
        except RequestParseError:
            self.state.stats["bad_requests"] += 1
            return self._malformed()
        found = self.state.status(gateway_id)
        if found is None:
            item = ParsedState(gateway_id, GatewayStatus.UNKNOWN, "Message not found")
            return self._xml(build_answer([item], date=gateway_date()))
        message, status, date = found
        item = ParsedState(gateway_id, status)
        return self._xml(build_answer([item], date=date, ext_id=message.ext_id))

    # ------------------------------------------------------------------ introspection

    async def stats(self, request: web.Request) -> web.Response:
        return web.json_response(self.state.stats_dict())

    async def rules(self, request: web.Request) -> web.Response:
        return web.json_response([rule.to_dict() for rule in self.state.rules.rules])

    async def message(self, request: web.Request) -> web.Response:
        data = self.state.message_dict(request.match_info["gateway_id"])
        if data is None:
            return web.json_response({"error": "not found"}, status=404)
        if not self._authorized(request):
            # Full numbers only to whoever holds the gateway login (like the inbound API).
            data["phone_number"] = mask_phone(data["phone_number"])
        return web.json_response(data)

    async def submissions(self, request: web.Request) -> web.Response:
        uniq_key = request.query.get("uniq_key")
        if not uniq_key:
            return web.json_response({"error": "uniq_key required"}, status=400)
        return web.json_response(self.state.submissions_for(uniq_key))

    async def reset(self, request: web.Request) -> web.Response:
        self.state.reset()
        return web.json_response({"reset": True})


def create_app(config: SimulatorConfig, state: SimState | None = None) -> web.Application:
    """The simulator application; ``app[STATE_KEY]`` is its message store."""
    if state is None:
        state = SimState(
            rules=config.rules,
            enroute_after=config.enroute_after,
            deliver_after=config.deliver_after,
        )
    handlers = _Handlers(config, state)

    @web.middleware
    async def count_in_flight(request: web.Request, handler: _Handler) -> web.StreamResponse:
        if request.path not in (SEND_PATH, STATUS_PATH):
            return await handler(request)
        state.request_started()
        try:
            return await handler(request)
        finally:
            state.request_ended()

    app = web.Application(client_max_size=MAX_REQUEST_BYTES, middlewares=[count_in_flight])
    app[STATE_KEY] = state
    app[CONFIG_KEY] = config
    app.router.add_post(SEND_PATH, handlers.send)
    app.router.add_post(STATUS_PATH, handlers.status)
    app.router.add_get("/_sim/stats", handlers.stats)
    app.router.add_get("/_sim/rules", handlers.rules)
    app.router.add_get("/_sim/messages/{gateway_id}", handlers.message)
    app.router.add_get("/_sim/submissions", handlers.submissions)
    app.router.add_post("/_sim/reset", handlers.reset)
    for register in config.extra_routes:
        register(app)
    return app


__all__ = [
    "CONFIG_KEY",
    "DUPE_ANSWER",
    "SEND_PATH",
    "STATE_KEY",
    "STATUS_PATH",
    "RouteRegistrar",
    "SimulatorConfig",
    "create_app",
]

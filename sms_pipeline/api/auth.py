"""The API's guard: body size limit and API-key authentication, before any parsing.

It is plain ASGI middleware rather than a FastAPI dependency because FastAPI reads and
decodes the JSON body before it runs dependencies: a request without a valid key would
otherwise be answered 422 for a malformed body instead of 401, and an oversized body would
be read in full. Here a request is refused on its headers alone (Content-Length too large:
413; no valid key: 401) and a body without Content-Length is read only up to the limit.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from fastapi import Request
from fastapi.security import HTTPBearer
from sqlalchemy.exc import SQLAlchemyError
from starlette.concurrency import run_in_threadpool
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from sms_pipeline.api.schemas import error_body
from sms_pipeline.services.accounts.api_keys import Principal, authenticate_alone
from sms_pipeline.services.intake.enqueue import held_rows

log = logging.getLogger(__name__)

PROTECTED_PREFIX = "/v1/"
PRINCIPAL_KEY = "sms_principal"

# Documents the scheme in OpenAPI (the "Authorize" button); the middleware enforces it.
bearer_scheme = HTTPBearer(
    auto_error=False,
    description="An API key from `sms-pipeline api-key create`: `Authorization: Bearer sk_...`",
)


async def _answer(
    send: Send, status: int, body: dict[str, Any], headers: list[tuple[bytes, bytes]] | None = None
) -> None:
    raw = json.dumps(body).encode("utf-8")
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(raw)).encode()),
                *(headers or []),
            ],
        }
    )
    await send({"type": "http.response.body", "body": raw})


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", []):
        if key.lower() == name:
            return bytes(value).decode("latin-1")
    return None


def _lookup(presented: str) -> Principal | None:
    # One statement, no ORM session per request, on the held connection enqueue then uses.
    return authenticate_alone(presented, held_rows=held_rows)


class ApiGuard:
    def __init__(self, app: ASGIApp, *, max_body_bytes: int) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not str(scope.get("path", "")).startswith(PROTECTED_PREFIX):
            await self.app(scope, receive, send)
            return
        limit = self.max_body_bytes
        too_large = error_body("too_large", f"the request body is larger than {limit} bytes")
        length = _header(scope, b"content-length")
        if length is not None:
            if not length.isdigit():
                await _answer(send, 400, error_body("bad_request", "invalid Content-Length"))
                return
            if int(length) > limit:
                await _answer(send, 413, too_large)
                return

        authorization = _header(scope, b"authorization") or ""
        scheme, _, presented = authorization.partition(" ")
        principal = None
        if scheme.lower() == "bearer" and presented.strip():
            try:
                principal = await run_in_threadpool(_lookup, presented.strip())
            except SQLAlchemyError:
                log.warning("api: key lookup failed: database unavailable")
                await _answer(send, 503, error_body("unavailable", "the database is unavailable"))
                return
        if principal is None:
            await _answer(
                send,
                401,
                error_body("unauthorized", "a valid API key is required (Authorization: Bearer)"),
                [(b"www-authenticate", b"Bearer")],
            )
            return

        # Read the body here, at most `limit` bytes, then replay it to the application.
        chunks: list[bytes] = []
        size = 0
        more = True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                await _answer(send, 413, too_large)
                return
            chunks.append(chunk)
            more = message.get("more_body", False)
        body = b"".join(chunks)
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        scope.setdefault("state", {})[PRINCIPAL_KEY] = principal
        await self.app(scope, replay, send)


def get_principal(request: Request) -> Principal:
    """The caller the guard authenticated (every /v1/ route has one)."""
    principal = request.scope.get("state", {}).get(PRINCIPAL_KEY)
    if not isinstance(principal, Principal):  # a route outside the guard's prefix
        raise RuntimeError("route is not behind the API guard")
    return principal

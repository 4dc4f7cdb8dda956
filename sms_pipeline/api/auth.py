"""The API's guard: body size limit and API-key authentication, before any parsing.

It is plain ASGI middleware rather than a FastAPI dependency because FastAPI reads and
decodes the JSON body before it runs dependencies: a request without a valid key would
otherwise be answered 422 for a malformed body instead of 401, and an oversized body would
be read in full. Here a request is refused on its headers alone (Content-Length too large:
413; no valid key: 401) and a body without Content-Length is read only up to the limit.

A key found valid is trusted for KEY_CACHE_SECONDS without asking the database again (a
round trip and a thread-pool hop per request otherwise): a revoked key is refused within
that time. Only valid keys are kept, by their hash, a bounded number; the per-key limits
are counted per request as before (in the route).
"""

from __future__ import annotations

import json
import logging
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

from fastapi import Request
from fastapi.security import HTTPBearer
from sqlalchemy.exc import SQLAlchemyError
from starlette.concurrency import run_in_threadpool
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from sms_pipeline.api.schemas import error_body
from sms_pipeline.db.held import held_rows
from sms_pipeline.services.accounts.api_keys import Principal, authenticate_alone, hash_key

log = logging.getLogger(__name__)

PROTECTED_PREFIX = "/v1/"
PRINCIPAL_KEY = "sms_principal"
# How long a key found valid is trusted (a revocation takes effect within this), and how
# many keys are remembered (least recently used first out).
KEY_CACHE_SECONDS = 1.0
KEY_CACHE_SIZE = 256
_clock: Callable[[], float] = time.monotonic

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


class _KeyCache:
    """Valid keys' principals by the key's hash, each trusted until its deadline. Used from
    the event loop only (no lock)."""

    def __init__(self) -> None:
        self._found: OrderedDict[str, tuple[Principal, float]] = OrderedDict()

    def get(self, digest: str) -> Principal | None:
        hit = self._found.get(digest)
        if hit is None:
            return None
        if hit[1] <= _clock():
            del self._found[digest]
            return None
        self._found.move_to_end(digest)
        return hit[0]

    def put(self, digest: str, principal: Principal, asked_at: float) -> None:
        # From the moment the lookup began: a revocation committed during it counts.
        self._found[digest] = (principal, asked_at + KEY_CACHE_SECONDS)
        self._found.move_to_end(digest)
        while len(self._found) > KEY_CACHE_SIZE:
            self._found.popitem(last=False)


class ApiGuard:
    def __init__(self, app: ASGIApp, *, max_body_bytes: int) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes
        self._keys = _KeyCache()

    async def _principal(self, presented: str) -> Principal | None:
        """The key's principal: remembered, or looked up (in the thread pool)."""
        digest = hash_key(presented)
        principal = self._keys.get(digest)
        if principal is not None:
            return principal
        asked_at = _clock()
        principal = await run_in_threadpool(_lookup, presented)
        if principal is not None:
            self._keys.put(digest, principal, asked_at)
        return principal

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
                principal = await self._principal(presented.strip())
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


async def get_principal(request: Request) -> Principal:
    """The caller the guard authenticated (every /v1/ route has one). Async: FastAPI runs a
    plain `def` dependency in the thread pool, a hop per request for a dictionary read."""
    principal = request.scope.get("state", {}).get(PRINCIPAL_KEY)
    if not isinstance(principal, Principal):  # a route outside the guard's prefix
        raise RuntimeError("route is not behind the API guard")
    return principal

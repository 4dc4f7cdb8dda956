"""The HTTP API: producers in any language enqueue messages and read their state.

`sms-pipeline api` serves `create_app()` with uvicorn: the routes, their error answers and
the health check. Routes are plain `def`: they run in the thread pool and use the same
sessions and services as the rest of the pipeline (the message routes' work: `messages`).
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Header, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError
from starlette.exceptions import HTTPException as StarletteHTTPException

from sms_pipeline.api import message_rules
from sms_pipeline.api.auth import ApiGuard, bearer_scheme, get_principal
from sms_pipeline.api.messages import (
    IDEMPOTENCY_HEADER,
    create_message,
    read_message,
)
from sms_pipeline.api.schemas import (
    ErrorOut,
    FieldError,
    Health,
    MessageCreated,
    MessageIn,
    MessageOut,
    error_body,
)
from sms_pipeline.api.subjects import router as subjects_router
from sms_pipeline.db import get_engine
from sms_pipeline.services.accounts.api_keys import Principal
from sms_pipeline.settings import Settings, get_settings, require_production_gateway

log = logging.getLogger(__name__)

__all__ = ["broker_reachable", "create_app", "create_message", "database_reachable", "read_message"]


def _errors(*codes: int) -> dict[int | str, dict[str, Any]]:
    described = {
        401: "No valid API key.",
        403: "The key may not use the account named.",
        404: "No such message (or not this key's account).",
        409: "The number opted out of text messages: stored as OPTED OUT, not sent (`id`).",
        413: "The request body is larger than SMS_API_MAX_BODY_BYTES.",
        422: "Invalid input; `errors` names each field and why. Also: an Idempotency-Key "
        "reused with a different body (`error` = idempotency_mismatch).",
        429: "This API key used up its rate (SMS_API_KEY_RATE_PER_MINUTE) or daily cap "
        "(SMS_API_KEY_DAILY_CAP); `Retry-After` says in how many seconds to try again.",
        503: "The database is unavailable.",
    }
    return {code: {"model": ErrorOut, "description": described[code]} for code in codes}


def database_reachable() -> None:
    with get_engine().connect() as conn:
        conn.execute(text("SELECT 1"))


def broker_reachable(url: str | None = None) -> None:
    """Connect to the broker (the Celery app's, or `url`) or raise."""
    from sms_pipeline.broker.app import app as celery_app

    conn = celery_app.connection_for_write(url) if url else celery_app.connection_for_write()
    with conn:
        conn.ensure_connection(max_retries=1, interval_start=0, interval_step=0.2, timeout=3)


def _field_of(loc: tuple[Any, ...] | list[Any]) -> str:
    parts = [str(p) for p in loc]
    if parts and parts[0] in {"body", "header", "path", "query"}:
        parts = parts[1:] or parts
    return ".".join(parts) or "body"


def create_app(
    settings: Settings | None = None,
    *,
    broker_check: Callable[[], None] | None = None,
) -> FastAPI:
    settings = settings or get_settings()
    require_production_gateway(settings)  # fail closed: no privacy key, the simulator, demo
    check_broker = broker_check or broker_reachable
    from sms_pipeline.api.access_log import install as mask_numbers_in_access_log

    mask_numbers_in_access_log()  # no phone number in uvicorn's access log, whoever runs it
    api = FastAPI(
        title="sms-pipeline API",
        version="1",
        description="Enqueue SMS and read their delivery state. Authenticate with "
        "`Authorization: Bearer <API key>`. Numbers are masked in answers and bodies are "
        "never returned.",
    )
    api.add_middleware(ApiGuard, max_body_bytes=settings.sms_api_max_body_bytes)

    @api.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [
            FieldError(
                # A JSON syntax error's loc is ("body", <character offset>): the field at
                # fault is the body itself, not one named "1".
                field="body" if err.get("type") == "json_invalid" else _field_of(err["loc"]),
                reason=str(err.get("msg", "")),
            )
            for err in exc.errors()
        ]
        if request.url.path == "/v1/messages" and isinstance(exc.body, dict):
            # The message rules on what the model could read: every field at fault at once.
            readable = message_rules.readable_fields(exc.body)
            errors = message_rules.merged(errors, message_rules.intake_problems(readable, settings))
        return JSONResponse(error_body("invalid", "invalid request", errors), status_code=422)

    @api.exception_handler(StarletteHTTPException)
    async def _http_error(_request: Request, exc: StarletteHTTPException) -> JSONResponse:
        if exc.status_code == 400 and "parsing the body" in str(exc.detail):
            # Bytes that are not JSON text (e.g. not UTF-8): the body is at fault, as for
            # any other JSON that cannot be read (422, documented).
            errors = [FieldError(field="body", reason="must be JSON text (UTF-8)")]
            return JSONResponse(error_body("invalid", "invalid request", errors), status_code=422)
        codes = {403: "forbidden", 404: "not_found", 405: "method_not_allowed"}
        return JSONResponse(
            error_body(codes.get(exc.status_code, "error"), str(exc.detail)),
            status_code=exc.status_code,
            headers=exc.headers,
        )

    async def _db_down(_request: Request, exc: Exception) -> JSONResponse:
        # Every database failure, not only a lost connection: its text may quote a row
        # (a constraint's "Failing row contains ..."), so only the type is logged.
        log.warning("api: database error: %s", type(exc).__name__)
        return JSONResponse(
            error_body("unavailable", "the database is unavailable"), status_code=503
        )

    api.add_exception_handler(SQLAlchemyError, _db_down)

    auth = [Depends(bearer_scheme)]

    @api.post(
        "/v1/messages",
        status_code=201,
        response_model=MessageCreated,
        responses=_errors(401, 403, 409, 413, 422, 429, 503),
        dependencies=auth,
        summary="Enqueue a message",
    )
    def post_message(
        message: MessageIn,
        principal: Annotated[Principal, Depends(get_principal)],
        idempotency_key: Annotated[
            str | None,
            Header(
                alias=IDEMPOTENCY_HEADER,
                pattern=r"^[\x21-\x7e]{1,128}$",
                description="Any unique string (e.g. a UUID) per logical message: a retry "
                "with the same key and body returns the first answer instead of sending again.",
            ),
        ] = None,
    ) -> JSONResponse:
        return create_message(message, principal, idempotency_key)

    @api.get(
        "/v1/messages/{message_id}",
        response_model=MessageOut,
        responses=_errors(401, 404, 413, 422, 503),
        dependencies=auth,
        summary="A message's state",
    )
    def get_message(
        message_id: uuid.UUID, principal: Annotated[Principal, Depends(get_principal)]
    ) -> MessageOut:
        found = read_message(message_id, principal)
        if found is None:
            raise StarletteHTTPException(404, "no such message")
        return found

    api.include_router(subjects_router)  # data protection: export and erasure (admin keys)

    @api.get(
        "/healthz",
        response_model=Health,
        responses={503: {"model": Health, "description": "Database or broker unreachable."}},
        summary="Database and broker reachable",
    )
    def healthz() -> JSONResponse:
        result = {"database": "ok", "broker": "ok"}
        try:
            database_reachable()
        except Exception as exc:
            result["database"] = f"unreachable ({type(exc).__name__})"
        try:
            check_broker()
        except Exception as exc:
            result["broker"] = f"unreachable ({type(exc).__name__})"
        ok = result == {"database": "ok", "broker": "ok"}
        return JSONResponse(result, status_code=200 if ok else 503)

    return api

"""The HTTP API: producers in any language enqueue messages and read their state.

`sms-pipeline api` serves `create_app()` with uvicorn. Routes are plain `def`: they run in
the thread pool and use the same sessions and services as the rest of the pipeline; a
message created here goes through `enqueue_sms` in the request's transaction, so its send
is dispatched only after the row (and its idempotency record) commit.
"""

from __future__ import annotations

import hashlib
import json
import logging
import uuid
from collections.abc import Callable
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Header, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy import select, text
from sqlalchemy.exc import IntegrityError, SQLAlchemyError
from sqlalchemy.orm import Session, defer
from starlette.exceptions import HTTPException as StarletteHTTPException

from sms_pipeline.api import message_rules
from sms_pipeline.api.auth import ApiGuard, bearer_scheme, get_principal
from sms_pipeline.api.schemas import (
    CallbackState,
    ErrorOut,
    FieldError,
    Health,
    MessageCreated,
    MessageIn,
    MessageOut,
    error_body,
)
from sms_pipeline.api.subjects import router as subjects_router
from sms_pipeline.db import get_engine, get_sessionmaker
from sms_pipeline.db.models import Account, CallbackEvent, IdempotencyRecord, SendStatus, SmsLog
from sms_pipeline.errors import InvalidMessage, OptedOut
from sms_pipeline.services.accounts import quotas
from sms_pipeline.services.accounts.api_keys import Principal
from sms_pipeline.services.callbacks import final_status
from sms_pipeline.services.intake.enqueue import store_checked
from sms_pipeline.services.masking import mask_phone
from sms_pipeline.settings import Settings, get_settings, require_production_gateway

log = logging.getLogger(__name__)

IDEMPOTENCY_HEADER = "Idempotency-Key"
REPLAYED_HEADER = "Idempotent-Replayed"


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


def _request_hash(message: MessageIn) -> str:
    canonical = json.dumps(message.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def _created(message_id: uuid.UUID, send_status: str, *, replayed: bool) -> JSONResponse:
    headers = {REPLAYED_HEADER: "true"} if replayed else None
    if send_status == SendStatus.OPTED_OUT.value:
        body = error_body(
            "opted_out",
            "the number opted out of non-essential messages: stored, not sent",
            [FieldError(field="phone_number", reason="the number opted out")],
            id=message_id,
        )
        return JSONResponse(body, status_code=409, headers=headers)
    return JSONResponse({"id": str(message_id)}, status_code=201, headers=headers)


def _replay(
    session: Session, principal: Principal, key: str, request_hash: str
) -> JSONResponse | None:
    """The stored answer for an Idempotency-Key already used by this API key, or None."""
    record = session.get(IdempotencyRecord, (principal.key_id, key))
    if record is None:
        return None
    if record.request_hash != request_hash:
        return JSONResponse(
            error_body(
                "idempotency_mismatch",
                f"this {IDEMPOTENCY_HEADER} was used with a different request body",
            ),
            status_code=422,
        )
    send_status = session.scalar(select(SmsLog.send_status).where(SmsLog.id == record.message_id))
    return _created(record.message_id, send_status or "", replayed=True)


def _account_for(
    session: Callable[[], Session], principal: Principal, named: str | None
) -> str | int | None:
    """The account to enqueue under; a key limited to an account may name only that one."""
    if principal.account_id is None:
        return named
    if named is not None:
        own = session().scalar(select(Account.name).where(Account.id == principal.account_id))
        if named != own:
            raise StarletteHTTPException(403, "this API key may only send for its own account")
    return principal.account_id


def create_message(
    message: MessageIn, principal: Principal, idempotency_key: str | None
) -> JSONResponse:
    """Check the message once (the intake core), then one INSERT that also writes the key
    and the callback URL: alone in autocommit (one statement, as `enqueue_sms` does) or,
    with an Idempotency-Key, in one transaction with its record."""
    settings = get_settings()
    request_hash = _request_hash(message) if idempotency_key is not None else ""
    opened: list[Session] = []

    def session() -> Session:
        # Only a replay, a named account or an Idempotency-Key needs one: not the hot path.
        if not opened:
            opened.append(get_sessionmaker()())
        return opened[0]

    try:
        if idempotency_key is not None:
            replay = _replay(session(), principal, idempotency_key, request_hash)
            if replay is not None:
                return replay  # a replay sends nothing: not counted against the limits
        refusal = quotas.check_api_key(principal.prefix or str(principal.key_id), principal.name)
        if refusal is not None:
            log.warning("api: key %s refused by its %s limit", principal.name, refusal.limit)
            return JSONResponse(
                error_body("rate_limited", f"this API key reached its {refusal.limit} limit"),
                status_code=429,
                headers={"Retry-After": str(refusal.retry_after)},
            )
        account = _account_for(session, principal, message.account)
        checked = message_rules.checked_message(message.model_dump(), settings, account)
        if isinstance(checked, list):
            # Every field at fault in one answer, in the words every door uses.
            errors = message_rules.merged([], checked)
            return JSONResponse(error_body("invalid", str(checked[0]), errors), status_code=422)
        # The callback URL is signed with this key's secret: the key is on the row.
        extra = {"api_key_id": principal.key_id}
        own = session() if idempotency_key is not None else None
        try:
            message_id = store_checked(checked, session=own, extra=extra, settings=settings)
            send_status = SendStatus.QUEUED.value
        except OptedOut as exc:
            # The OPTED OUT row is stored (in this transaction with a key): the log explains it.
            message_id = exc.message_id
            send_status = SendStatus.OPTED_OUT.value
        except InvalidMessage as exc:
            if opened:
                opened[0].rollback()
            return JSONResponse(
                error_body(
                    "invalid",
                    str(exc),
                    [FieldError(field=exc.field, reason=exc.reason)],
                ),
                status_code=422,
            )
        if idempotency_key is not None:
            own = session()
            own.add(
                IdempotencyRecord(
                    api_key_id=principal.key_id,
                    key=idempotency_key,
                    request_hash=request_hash,
                    message_id=message_id,
                )
            )
            try:
                own.commit()  # the send is dispatched after this commit, not before
            except IntegrityError:
                # Two identical requests raced: the other one's record committed first (the
                # primary key made this insert wait for it). Ours is rolled back, nothing was
                # dispatched; answer with the winner's message.
                own.rollback()
                replay = _replay(own, principal, idempotency_key, request_hash)
                if replay is None:
                    raise
                return replay
        if log.isEnabledFor(logging.INFO):
            log.info(
                "api: key %s enqueued %s to %s",
                principal.name,
                message_id,
                mask_phone(checked.phone_number),
            )
        return _created(message_id, send_status, replayed=False)
    finally:
        if opened:
            opened[0].close()


def read_message(message_id: uuid.UUID, principal: Principal) -> MessageOut | None:
    with get_sessionmaker()() as session:
        row = session.scalar(
            select(SmsLog).options(defer(SmsLog.body)).where(SmsLog.id == message_id)
        )
        if row is None:
            return None
        if principal.account_id is not None and row.account_id != principal.account_id:
            return None  # not "forbidden": another account's ids are not even confirmed
        account = session.scalar(select(Account.name).where(Account.id == row.account_id))
        events = session.scalars(
            select(CallbackEvent)
            .where(CallbackEvent.message_id == row.id)
            .order_by(CallbackEvent.id)
        ).all()
        return MessageOut(
            id=row.id,
            status=final_status(row.send_status, row.gateway_status),
            final=row.final_at is not None,
            send_status=row.send_status,
            gateway_status=row.gateway_status,
            gateway_id=row.gateway_id,
            error=row.last_error,
            type=row.type,
            phone_number=mask_phone(row.phone_number),
            account=account,
            priority=row.priority,
            attempts=row.attempts,
            segments=row.segments,
            ext_id=row.ext_id,
            customer_id=row.customer_id,
            send_after=row.send_after,
            inserted_at=row.inserted_at,
            updated_at=row.updated_at,
            submitted_at=row.submitted_at,
            status_changed_at=row.status_changed_at,
            final_at=row.final_at,
            callbacks=[
                CallbackState(
                    status=e.status,
                    attempts=e.attempts,
                    delivered_at=e.delivered_at,
                    next_attempt_at=e.next_attempt_at,
                    last_error=e.last_error,
                )
                for e in events
            ],
        )


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

"""POST and GET /v1/messages: a message checked once and stored (with its Idempotency-Key
record, when given), and a message's state read back for its key's account."""

from __future__ import annotations

import hashlib
import json
import logging
import uuid
from collections.abc import Callable

from fastapi.responses import JSONResponse
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, defer
from starlette.exceptions import HTTPException as StarletteHTTPException

from sms_pipeline.api import message_rules
from sms_pipeline.api.schemas import (
    CallbackState,
    FieldError,
    MessageIn,
    MessageOut,
    error_body,
)
from sms_pipeline.db import get_sessionmaker
from sms_pipeline.db.models import Account, CallbackEvent, IdempotencyRecord, SendStatus, SmsLog
from sms_pipeline.errors import InvalidMessage, OptedOut
from sms_pipeline.services.accounts import quotas
from sms_pipeline.services.accounts.api_keys import Principal
from sms_pipeline.services.callbacks import final_status
from sms_pipeline.services.intake.enqueue import store_checked
from sms_pipeline.services.masking import mask_phone
from sms_pipeline.settings import get_settings

log = logging.getLogger(__name__)

IDEMPOTENCY_HEADER = "Idempotency-Key"
REPLAYED_HEADER = "Idempotent-Replayed"


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

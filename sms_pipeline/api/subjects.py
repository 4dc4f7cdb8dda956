"""`GET/DELETE /v1/subjects/{phone}`: one person's data, export and erasure (admin keys).

A key created with `sms-pipeline api-key create NAME --admin` may call these; any other
key gets 403. Every call writes an audit row naming the key and the person by keyed hash.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from sms_pipeline.api.auth import bearer_scheme, get_principal
from sms_pipeline.api.schemas import ErrorOut, error_body
from sms_pipeline.db import session_scope
from sms_pipeline.errors import InvalidMessage
from sms_pipeline.services import privacy
from sms_pipeline.services.api_keys import Principal

router = APIRouter(dependencies=[Depends(bearer_scheme)], tags=["data protection"])
_ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorOut} for code in (401, 403, 422, 503)
}


def _admin(principal: Principal) -> str:
    if not principal.admin:
        raise StarletteHTTPException(403, "an admin API key is required (api-key create --admin)")
    return f"api:{principal.name}"


def _invalid(exc: InvalidMessage) -> JSONResponse:
    return JSONResponse(error_body("invalid", str(exc)), status_code=422)


@router.get(
    "/v1/subjects/{phone}",
    responses=_ERRORS,
    summary="Every row about one phone number (subject access request; audited)",
)
def export_subject(
    phone: str, principal: Annotated[Principal, Depends(get_principal)]
) -> JSONResponse:
    actor = _admin(principal)
    try:
        with session_scope() as session:
            data = privacy.export_subject(session, phone, actor)
    except InvalidMessage as exc:
        return _invalid(exc)
    return JSONResponse(data)


@router.delete(
    "/v1/subjects/{phone}",
    responses=_ERRORS,
    summary="Erase every row holding one phone number (opt-out kept as a keyed hash; audited)",
)
def erase_subject(
    phone: str, principal: Annotated[Principal, Depends(get_principal)]
) -> JSONResponse:
    actor = _admin(principal)
    try:
        with session_scope() as session:
            removed = privacy.erase_subject(session, phone, actor)
    except InvalidMessage as exc:
        return _invalid(exc)
    return JSONResponse({"removed": removed})

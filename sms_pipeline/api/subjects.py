"""`POST /v1/subjects/export` and `POST /v1/subjects/erase`: one person's data (admin keys).

The number travels in the JSON body, never in the URL: paths end up in access logs,
proxies' logs and browser histories. Who may call:
- an account admin (`api-key create NAME --account ACCOUNT --admin`): that account's rows
  only (messages, replies, shortcode messages, queue rows and their events);
- a platform admin (`api-key create NAME --platform-admin`, command line only): every
  account, the opt-out list and the verification service's rows (read only);
- any other key: 403.
Every call writes an audit row naming the key, the account it was limited to, and the
person by keyed hash only.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from sms_pipeline.api.auth import bearer_scheme, get_principal
from sms_pipeline.api.schemas import ErrorOut, Text, error_body
from sms_pipeline.db import session_scope
from sms_pipeline.errors import InvalidMessage
from sms_pipeline.services import privacy
from sms_pipeline.services.accounts.api_keys import Principal

router = APIRouter(dependencies=[Depends(bearer_scheme)], tags=["data protection"])
_ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorOut} for code in (401, 403, 422, 503)
}


class SubjectIn(BaseModel):
    """The person, by phone number (in the body: never in a URL or an access log)."""

    model_config = ConfigDict(
        extra="forbid", json_schema_extra={"examples": [{"phone_number": "+380931234567"}]}
    )

    phone_number: Text = Field(
        min_length=1, max_length=32, repr=False, description="E.164 number, e.g. +380931234567."
    )


def _scope(principal: Principal) -> int | None:
    """The account this key's export/erasure is limited to (None: every account), or 403."""
    try:
        return principal.subject_scope
    except PermissionError as exc:
        raise StarletteHTTPException(403, str(exc)) from None


def _invalid(exc: InvalidMessage) -> JSONResponse:
    return JSONResponse(error_body("invalid", str(exc)), status_code=422)


@router.post(
    "/v1/subjects/export",
    responses=_ERRORS,
    summary="Every row about one phone number in the key's scope (subject access; audited)",
)
def export_subject(
    subject: SubjectIn, principal: Annotated[Principal, Depends(get_principal)]
) -> JSONResponse:
    account_id = _scope(principal)
    try:
        with session_scope() as session:
            data = privacy.export_subject(
                session, subject.phone_number, f"api:{principal.name}", account_id=account_id
            )
    except InvalidMessage as exc:
        return _invalid(exc)
    return JSONResponse(data)


@router.post(
    "/v1/subjects/erase",
    responses=_ERRORS,
    summary="Erase every row holding one phone number in the key's scope (audited)",
)
def erase_subject(
    subject: SubjectIn, principal: Annotated[Principal, Depends(get_principal)]
) -> JSONResponse:
    account_id = _scope(principal)
    try:
        with session_scope() as session:
            removed = privacy.erase_subject(
                session, subject.phone_number, f"api:{principal.name}", account_id=account_id
            )
    except InvalidMessage as exc:
        return _invalid(exc)
    return JSONResponse({"removed": removed})

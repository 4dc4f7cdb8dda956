"""Request and response bodies of the HTTP API.

The request model checks JSON types only; the message rules (E.164 number, body length
in segments, known type and account, ...) are `enqueue_sms`'s, so the API and Python
producers are refused for the same reasons with the same words. What the model does
refuse on its own is what the database could not store at all (NUL characters, lone
surrogates, times that do not fit UTC, integers beyond 32 bits): left to the database,
those would be server errors instead of answers naming the field.
"""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StrictInt, StrictStr

INT32_MIN, INT32_MAX = -(2**31), 2**31 - 1


def _storable_text(value: str) -> str:
    if "\x00" in value:
        raise ValueError("must not contain NUL characters")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("must be valid Unicode text") from None
    return value


def _utc_representable(value: dt.datetime | None) -> dt.datetime | None:
    if value is not None and value.tzinfo is not None:
        try:
            value.astimezone(dt.UTC)
        except OverflowError:
            raise ValueError("is outside the supported range of times") from None
    return value


Text = Annotated[StrictStr, AfterValidator(_storable_text)]


class MessageIn(BaseModel):
    """A message to send; the same fields as `enqueue_sms`."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "phone_number": "+380931234567",
                    "body": "Your code is 123456",
                    "type": "verification",
                    "callback_url": "https://example.org/sms-events",
                }
            ]
        },
    )

    phone_number: Text = Field(description="E.164 number, e.g. +380931234567.")
    body: Text = Field(description="The text; at most SMS_MAX_SEGMENTS segments.")
    type: Text = Field("text", description="One of verification, medication_request, text, 2FA.")
    account: Text | None = Field(
        None,
        description="Account name; default: the key's account, else the default account.",
    )
    priority: StrictInt = Field(0, ge=INT32_MIN, le=INT32_MAX, description="Higher goes first.")
    send_at: Annotated[dt.datetime | None, AfterValidator(_utc_representable)] = Field(
        None, description="Not before this time; needs a UTC offset (ISO 8601)."
    )
    sender_id: Text | None = Field(None, description="Sender id (source), at most 16 chars.")
    ext_id: Text | None = Field(None, description="Your own id, at most 64 chars.")
    customer_id: Text | None = Field(None, description="At most 128 chars.")
    cost_centre: Text | None = Field(None, description="At most 64 chars.")
    callback_url: Text | None = Field(
        None, description="http(s) URL that receives a signed event at the final status."
    )


class MessageCreated(BaseModel):
    id: uuid.UUID


class CallbackState(BaseModel):
    status: str
    attempts: int
    delivered_at: dt.datetime | None
    next_attempt_at: dt.datetime | None
    last_error: str | None


class MessageOut(BaseModel):
    """A message's state. The number is masked; the body is never returned."""

    id: uuid.UUID
    status: str = Field(
        description="The gateway's final status when there is one, else the send status."
    )
    final: bool
    send_status: str
    gateway_status: str | None
    gateway_id: str | None
    error: str | None
    type: str
    phone_number: str = Field(description="Masked.")
    account: str | None
    priority: int
    attempts: int
    segments: int
    ext_id: str | None
    customer_id: str | None
    send_after: dt.datetime | None
    inserted_at: dt.datetime
    updated_at: dt.datetime
    submitted_at: dt.datetime | None
    status_changed_at: dt.datetime | None
    final_at: dt.datetime | None
    callbacks: list[CallbackState]


class FieldError(BaseModel):
    field: str
    reason: str


class ErrorOut(BaseModel):
    """Every error answer: a stable code, a sentence, and the fields at fault."""

    error: str = Field(description="Stable code, e.g. invalid, unauthorized, not_found.")
    message: str
    errors: list[FieldError] = Field(default_factory=list)
    id: uuid.UUID | None = Field(None, description="The stored message, when there is one.")


class Health(BaseModel):
    database: str
    broker: str


def error_body(
    code: str, message: str, errors: list[FieldError] | None = None, **extra: Any
) -> dict[str, Any]:
    return ErrorOut(error=code, message=message, errors=errors or [], **extra).model_dump(
        mode="json"
    )

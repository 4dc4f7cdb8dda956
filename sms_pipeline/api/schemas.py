"""Request and response bodies of the HTTP API.

The request model checks JSON types and documents the limits; the message rules (E.164
number, body length in segments, known type and account, ...) are the intake core's
(services/intake), so the API and Python producers are refused for the same reasons with
the same words, every field at fault in one answer (api/message_rules.py). What the model does
refuse on its own is what the database could not store at all (NUL characters, lone
surrogates, times that do not fit UTC, integers beyond 32 bits): left to the database,
those would be server errors instead of answers naming the field.
"""

from __future__ import annotations

import datetime as dt
import re
import uuid
from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictInt,
    StrictStr,
    WithJsonSchema,
)

from sms_pipeline.db.models import MESSAGE_TYPES
from sms_pipeline.priorities import PRIORITY_DEFAULT, PRIORITY_MAX, PRIORITY_MIN
from sms_pipeline.services.intake.numbers import PATTERN as PHONE_PATTERN

# RFC 3339 date-time (JSON Schema's `date-time`): a full date, a time, and an offset.
_RFC3339 = re.compile(r"^\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:\d{2}(?:\.\d+)?(?:[Zz]|[+-]\d{2}:\d{2})$")


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


def _rfc3339_text(value: object) -> object:
    # Before pydantic's own parsing, which would also take 0, 1900000000 or "0".
    if not isinstance(value, str) or not _RFC3339.match(value):
        raise ValueError("must be an RFC 3339 time with an offset, e.g. 2030-01-01T08:00:00+02:00")
    return value


Text = Annotated[StrictStr, AfterValidator(_storable_text)]
Rfc3339Time = Annotated[
    dt.datetime,
    BeforeValidator(_rfc3339_text),
    AfterValidator(_utc_representable),
    WithJsonSchema({"type": "string", "format": "date-time"}),
]


_NOT_SHOWN = frozenset({"phone_number", "body", "callback_url"})


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
                    "callback_url": "https://receiver.example.invalid/sms-events",
                }
            ]
        },
    )

    phone_number: Text = Field(
        min_length=1,
        max_length=32,
        pattern=PHONE_PATTERN,
        description="E.164 number, e.g. +380931234567: digits (spaces, dashes, dots and "
        "brackets allowed), a valid mobile or fixed-line number, no letters, no extension, "
        "not in SMS_REFUSED_PREFIXES (premium-rate and satellite ranges).",
    )
    body: Text = Field(
        min_length=1,
        description="The text: not blank, no control characters other than tab and line "
        "breaks, no C1 controls, no bidirectional overrides or isolates (U+202A-U+202E, "
        "U+2066-U+2069), no line/paragraph separators (U+2028, U+2029), at most "
        "SMS_MAX_SEGMENTS segments (6: 918 GSM-7 or 402 UCS-2 characters).",
    )
    # The enum documents the rule; enqueue_sms enforces it, with the same words as Python.
    type: Text = Field(
        "text", json_schema_extra={"enum": list(MESSAGE_TYPES)}, description="Message type."
    )
    account: Text | None = Field(
        None,
        min_length=1,
        description="Account name; default: the key's account, else the default account.",
    )
    priority: StrictInt = Field(
        PRIORITY_DEFAULT,
        ge=PRIORITY_MIN,
        le=PRIORITY_MAX,
        description=f"From {PRIORITY_MIN} to {PRIORITY_MAX}; higher goes first.",
    )
    send_at: Rfc3339Time | None = Field(
        None,
        description="Not before this time: an RFC 3339 time with an offset "
        "(2030-01-01T08:00:00+02:00 or ...Z); nothing else, and at most "
        "SMS_MAX_SCHEDULE_DAYS (366) days ahead.",
    )
    # Short texts: "" is read as none; the characters refused in the body are refused here.
    sender_id: Text | None = Field(None, max_length=16, description="Sender id (source).")
    ext_id: Text | None = Field(None, max_length=64, description="Your own id.")
    customer_id: Text | None = Field(None, max_length=128)
    cost_centre: Text | None = Field(None, max_length=64)
    callback_url: Text | None = Field(
        None,
        max_length=2000,
        pattern=r"^https?://",
        json_schema_extra={"format": "uri"},
        description="http(s) URL that receives a signed event at the final status.",
    )

    def __repr_args__(self):  # type: ignore[no-untyped-def]
        # A number, a code and a receiver's token (?token=) never reach a log through a repr.
        for name, value in super().__repr_args__():
            yield name, ("***" if name in _NOT_SHOWN and value is not None else value)


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

"""The message routes' refusals: every field at fault in one 422, in the intake's words.

The request model (schemas.MessageIn) checks JSON types and documents the limits; the
rules are the intake core's (services/intake), the same for every door. A refused request
lists every field at fault: the intake's reason where the intake refuses the field (the
words a Python producer or the SQL route gets), the model's where only the model does
(a JSON type, an unknown field).
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Mapping
from typing import Any

from sms_pipeline.api.schemas import FieldError
from sms_pipeline.errors import InvalidMessage
from sms_pipeline.services import intake
from sms_pipeline.settings import Settings

_CHECKED = frozenset(intake.FIELDS) - {"callback_url", "valid_for"}


def checked_message(
    values: Mapping[str, Any], settings: Settings, account: str | int | None = None
) -> intake.Message | list[InvalidMessage]:
    """A message (as JSON gave it) checked once by the intake core: the `Message` to store
    (its callback URL checked as the API signs it, with the key's secret), or every field
    the intake refuses, in order."""
    fields = {k: v for k, v in values.items() if k in _CHECKED}
    checked = intake.check_message(
        settings,
        fields.pop("phone_number", None),
        fields.pop("body", None),
        fields.pop("type", "text"),
        account=account,
        priority=fields.pop("priority", 0),
        send_at=fields.pop("send_at", None),
        **fields,
    )
    problems = checked if isinstance(checked, list) else []
    url = values.get("callback_url")
    if url is not None:
        try:
            intake.validate_callback_url(url, settings)
        except InvalidMessage as exc:
            problems.append(exc)
    if problems or isinstance(checked, list):
        return problems
    return dataclasses.replace(checked, callback_url=url) if url is not None else checked


def intake_problems(values: Mapping[str, Any], settings: Settings) -> list[InvalidMessage]:
    """Every field of a message (as JSON gave it) that the intake core refuses, in order;
    the callback URL is checked as the API signs it (with the key's secret)."""
    checked = checked_message(values, settings)
    return checked if isinstance(checked, list) else []


_REQUIRED = ("phone_number", "body")
_TEXTS = ("phone_number", "body", "type", "sender_id", "ext_id", "customer_id", "cost_centre")


def readable_fields(body: Mapping[str, Any]) -> dict[str, Any]:
    """The fields of a refused request body the rules can judge: those of the right JSON
    type (a wrong type is the model's to explain); `send_at` parsed as the model reads it."""
    from pydantic import TypeAdapter, ValidationError

    from sms_pipeline.api.schemas import Rfc3339Time

    fields: dict[str, Any] = {}
    for name in _TEXTS:
        if isinstance(body.get(name), str) or (name in _REQUIRED and name not in body):
            fields[name] = body.get(name)
    priority = body.get("priority", 0)
    if isinstance(priority, int) and not isinstance(priority, bool):
        fields["priority"] = priority
    if body.get("send_at") is not None:
        with contextlib.suppress(ValidationError):
            fields["send_at"] = TypeAdapter(Rfc3339Time).validate_python(body["send_at"])
    if isinstance(body.get("callback_url"), str):
        fields["callback_url"] = body["callback_url"]
    return fields


def merged(model_errors: list[FieldError], problems: list[InvalidMessage]) -> list[FieldError]:
    """One list: each field once, the intake's reason first, then the model's other fields."""
    ours = {p.field: p.reason for p in problems}
    result = [FieldError(field=p.field, reason=p.reason) for p in problems]
    seen = set(ours)
    for error in model_errors:
        if error.field not in seen:
            result.append(error)
            seen.add(error.field)
    return result

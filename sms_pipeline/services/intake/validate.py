"""A message's fields → one normalised `Message`, or every reason it is refused.

Every door maps its own shape onto `check_message` (Python arguments, API JSON, a queue
row, a verification row) and gets the same verdict and the same words. The order of the
checks is the order of `FIELDS`: a door that reports one reason reports the first.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from sms_pipeline import http
from sms_pipeline.db.models import MESSAGE_TYPES, utcnow
from sms_pipeline.errors import InvalidMessage
from sms_pipeline.priorities import priority_problem
from sms_pipeline.services import privacy
from sms_pipeline.settings import Settings

from .numbers import destination
from .texts import ValidBody, optional_text, validate_body
from .times import check_send_at

FIELDS = (
    "phone_number", "body", "type", "priority", "send_at", "sender_id", "ext_id",
    "customer_id", "cost_centre", "callback_url", "valid_for",
)  # fmt: skip


@dataclass(frozen=True)
class Message:
    """One message, validated: the row's values known before the database is asked."""

    phone_number: str
    body: ValidBody
    type: str
    priority: int
    send_at: dt.datetime | None
    sender_id: str | None
    ext_id: str | None
    customer_id: str | None
    cost_centre: str | None
    callback_url: str | None
    account: str | int | None
    valid_for: dt.timedelta | None = None

    def __repr__(self) -> str:
        # Never the number, the text or the callback URL (its query may hold a token).
        return (
            f"Message(type={self.type!r}, priority={self.priority!r}, "
            f"segments={self.body.segments!r}, account={self.account!r})"
        )

    __str__ = __repr__


def validate_type(message_type: object) -> str:
    if message_type not in MESSAGE_TYPES:
        raise InvalidMessage("type", f"must be one of {', '.join(MESSAGE_TYPES)}")
    return str(message_type)


def validate_priority(priority: object) -> int:
    if (problem := priority_problem(priority)) is not None:
        raise InvalidMessage("priority", problem)
    assert isinstance(priority, int)
    return priority


def validate_callback_url(url: object, settings: Settings) -> str:
    """An http(s) URL whose host is one we may call (see sms_pipeline.http), or InvalidMessage.

    Checked again at delivery, where the connection is pinned to the checked address; a
    host that does not resolve now is left to that check.
    """
    if not isinstance(url, str):
        raise InvalidMessage("callback_url", "must be an http(s) URL")
    try:
        http.check_url(url, allow_private=settings.sms_callback_allow_private)
    except http.UnsafeUrlError as exc:
        raise InvalidMessage("callback_url", exc.reason) from None
    except http.OutboundError:
        pass
    return url


def _signed_callback(url: object, settings: Settings) -> str | None:
    if url is None:
        return None
    # Every callback is signed: from Python, with SMS_CALLBACK_SECRET (the API signs with
    # the key's secret and sets the URL itself).
    secret = settings.sms_callback_secret
    if secret is None or not secret.get_secret_value():
        raise InvalidMessage("callback_url", "needs SMS_CALLBACK_SECRET to sign callbacks")
    return validate_callback_url(url, settings)


def check_message(
    settings: Settings,
    phone_number: object,
    body: object,
    type: object = "text",
    *,
    account: str | int | None = None,
    priority: object = 0,
    send_at: object = None,
    sender_id: object = None,
    ext_id: object = None,
    customer_id: object = None,
    cost_centre: object = None,
    callback_url: object = None,
    valid_for: object = None,
    now: dt.datetime | None = None,
) -> Message | list[InvalidMessage]:
    """The normalised message, or every field at fault (in the order of FIELDS)."""
    now = now or utcnow()
    problems: list[InvalidMessage] = []
    values: dict[str, object] = {}
    checks = (
        ("phone_number", lambda: destination(phone_number, settings)),
        ("body", lambda: validate_body(body, settings)),
        ("type", lambda: validate_type(type)),
        ("priority", lambda: validate_priority(priority)),
        ("send_at", lambda: check_send_at(send_at, settings, now)),
        ("sender_id", lambda: optional_text("sender_id", sender_id)),
        ("ext_id", lambda: optional_text("ext_id", ext_id)),
        ("customer_id", lambda: optional_text("customer_id", customer_id)),
        ("cost_centre", lambda: optional_text("cost_centre", cost_centre)),
        ("callback_url", lambda: _signed_callback(callback_url, settings)),
        ("valid_for", lambda: privacy.parse_valid_for(valid_for)),
    )
    for field, check in checks:
        try:
            values[field] = check()
        except InvalidMessage as exc:
            problems.append(exc)
    if problems:
        return problems
    return Message(account=account, **values)  # type: ignore[arg-type]


def validate_message(settings: Settings, *args: object, **fields: object) -> Message:
    """`check_message`, raising the first reason (what enqueue_sms raises)."""
    checked = check_message(settings, *args, **fields)  # type: ignore[arg-type]
    if isinstance(checked, list):
        raise checked[0]
    return checked

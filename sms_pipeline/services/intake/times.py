"""Times: `send_at` at every door, one bound (SMS_MAX_SCHEDULE_DAYS ahead).

A time further ahead than the bound, `infinity`, text that is not a time and a time that
does not fit UTC are refused with a reason naming `send_at`; nothing past the bound ever
reaches date arithmetic (where year 9999 overflowed).
"""

from __future__ import annotations

import datetime as dt

from sms_pipeline.errors import InvalidMessage
from sms_pipeline.settings import Settings

FIELD = "send_at"


def check_send_at(value: object, settings: Settings, now: dt.datetime) -> dt.datetime | None:
    """The send time in UTC, None for none, or InvalidMessage."""
    if value is None:
        return None
    if not isinstance(value, dt.datetime) or value.tzinfo is None:
        raise InvalidMessage(FIELD, "must be a timezone-aware datetime")
    try:
        moment = value.astimezone(dt.UTC)
    except (OverflowError, ValueError):
        raise InvalidMessage(FIELD, "is outside the supported range of times") from None
    days = settings.sms_max_schedule_days
    if moment - now > dt.timedelta(days=days):
        raise InvalidMessage(FIELD, f"is more than {days} days ahead (SMS_MAX_SCHEDULE_DAYS)")
    return moment


def stored_time(field: str, text: str | None) -> dt.datetime | None:
    """A time as a database shows it in text (PostgreSQL timestamptz, SQLite UTC text),
    aware; InvalidMessage for `infinity` or text that is not a time."""
    if text is None:
        return None
    value = text.strip()
    if value.lower() in {"infinity", "-infinity"}:
        raise InvalidMessage(field, f"is {value.lower()}, not a time")
    try:
        moment = dt.datetime.fromisoformat(value)
    except ValueError:
        raise InvalidMessage(field, "is not a time (e.g. 2030-01-01 08:00:00+00)") from None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=dt.UTC)

"""The API's access log without phone numbers.

uvicorn writes every request's path and query to `uvicorn.access`; a client that puts a
number in a URL (`/v1/subjects/+380…`, `?phone=380…`, answered 401 or 404 as it may be)
would put it in our log. `NumberMaskingFilter` rewrites any run of 7 or more digits (with
an optional `+` or `%2B`, and `-`, space or `%20` between digits) to its masked form
(`+380*******67`) before the line is formatted, whatever handler or format prints it.
"""

from __future__ import annotations

import logging
import re

from sms_pipeline.services.masking import mask_phone

# A digit, 5+ more digits or separators, a digit; at least 7 digits in all (checked below).
_PHONE_LIKE = re.compile(r"(?<![0-9A-Za-z])(?:\+|%2[Bb])?\d(?:\d|[- ]|%20){5,}\d(?![0-9A-Za-z])")
_MIN_DIGITS = 7
ACCESS_LOGGERS = ("uvicorn.access", "uvicorn.error")


def mask_numbers(text: str) -> str:
    """`text` with every phone-like run of digits masked."""

    def masked(found: re.Match[str]) -> str:
        raw = found.group(0)
        digits = re.sub(r"\D", "", raw.replace("%20", "").replace("%2B", "").replace("%2b", ""))
        if len(digits) < _MIN_DIGITS:
            return raw
        return mask_phone(("+" if raw[:1] in "+%" else "") + digits)

    return _PHONE_LIKE.sub(masked, text)


class NumberMaskingFilter(logging.Filter):
    """Masks phone-like digit runs in a record's message and arguments (never drops it)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.msg, str):
            record.msg = mask_numbers(record.msg)
        if isinstance(record.args, tuple):
            record.args = tuple(mask_numbers(a) if isinstance(a, str) else a for a in record.args)
        elif isinstance(record.args, dict):
            record.args = {
                k: mask_numbers(v) if isinstance(v, str) else v for k, v in record.args.items()
            }
        return True


def install() -> None:
    """Put the filter on uvicorn's loggers (once; create_app calls it)."""
    for name in ACCESS_LOGGERS:
        logger = logging.getLogger(name)
        if not any(isinstance(f, NumberMaskingFilter) for f in logger.filters):
            logger.addFilter(NumberMaskingFilter())

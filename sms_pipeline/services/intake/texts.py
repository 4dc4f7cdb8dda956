"""Texts: the body and the short text fields (sender, ids), the same rule at every door.

Refused anywhere in a text: what XML 1.0 cannot carry (the gateway request could never be
built), bidirectional overrides and isolates (U+202A-U+202E, U+2066-U+2069: they can make a
code read differently), C1 controls (U+0080-U+009F) and the line and paragraph separators
(U+2028, U+2029). Each reason names the character and its position, never the text (it may
be a one-time code).
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass, field

from sms_pipeline.errors import InvalidMessage
from sms_pipeline.gateway.codec import describe_invalid_xml_char
from sms_pipeline.services.segments import count_segments
from sms_pipeline.settings import Settings

# Short text fields and their longest length (the API documents the same limits).
LIMITS = {"sender_id": 16, "ext_id": 64, "customer_id": 128, "cost_centre": 64}


_REFUSED = re.compile("[\u0080-\u009f\u2028-\u202e\u2066-\u2069]")


def _name(char: str) -> str:
    code = ord(char)
    if 0x80 <= code <= 0x9F:
        return f"C1 control U+{code:04X}"
    return f"{unicodedata.name(char, 'character')} (U+{code:04X})"


def text_problem(value: str) -> str | None:
    """Why `value` cannot go into a message, or None."""
    problem = describe_invalid_xml_char(value)
    if problem is not None:
        return problem
    found = _REFUSED.search(value)
    if found is not None:
        return f"contains {_name(found.group())} at position {found.start()}"
    return None


def check_text(field: str, value: str) -> str:
    """`value`, or InvalidMessage naming `field` and the character at fault."""
    problem = text_problem(value)
    if problem is not None:
        raise InvalidMessage(field, problem)
    return value


@dataclass(frozen=True)
class ValidBody:
    body: str = field(repr=False)  # one-time codes: never in a repr, a log or a traceback
    segments: int
    encoding: str


def validate_body(body: object, settings: Settings) -> ValidBody:
    if not isinstance(body, str) or not body.strip():
        raise InvalidMessage("body", "the message text is empty")
    check_text("body", body)
    info = count_segments(body)
    if info.segments > settings.sms_max_segments:
        raise InvalidMessage(
            "body",
            f"needs {info.segments} {info.encoding} segments; "
            f"the maximum is {settings.sms_max_segments}",
        )
    return ValidBody(body, info.segments, info.encoding)


def optional_text(field: str, value: object) -> str | None:
    """A short text field (LIMITS) or None (also for ""); InvalidMessage naming the field."""
    if value is None or value == "":
        return None
    if not isinstance(value, str) or len(value) > LIMITS[field]:
        raise InvalidMessage(field, f"must be text of at most {LIMITS[field]} characters")
    check_text(field, value)
    if not value.isprintable():
        raise InvalidMessage(field, "contains control characters")
    return value

"""Phone numbers: the one rule for what a message may be sent to.

A destination is a plain E.164 number (digits, optionally written with spaces, dashes,
dots or brackets) that phonenumbers reads as a valid mobile or fixed-line number, outside
the refused ranges (SMS_REFUSED_PREFIXES: premium-rate and satellite ranges used by SMS
pumping). Letters are never read as keypad digits and extensions are never dropped.
"""

from __future__ import annotations

import functools
import re

import phonenumbers
from phonenumbers import PhoneNumberType

from sms_pipeline.errors import InvalidMessage
from sms_pipeline.settings import Settings

FIELD = "phone_number"
MAX_LENGTH = 32
# The characters a number may be written with, for documents (OpenAPI): the rules above
# refuse more (invalid, non-plain, refused ranges), never less.
PATTERN = r"^\s*\+?[0-9 ().\-/]+\s*$"
# What may appear in a written number besides digits: a leading +, and separators.
_SEPARATORS = frozenset(" -.()/")
_EXTENSION = re.compile(r"(;\s*ext|\bext\b|\bx\s*\d|#|,)", re.IGNORECASE)
_PLAIN_TYPES = frozenset(
    {PhoneNumberType.MOBILE, PhoneNumberType.FIXED_LINE, PhoneNumberType.FIXED_LINE_OR_MOBILE}
)
_TYPE_NAMES = {
    PhoneNumberType.TOLL_FREE: "toll-free",
    PhoneNumberType.PREMIUM_RATE: "premium-rate",
    PhoneNumberType.SHARED_COST: "shared-cost",
    PhoneNumberType.VOIP: "VoIP",
    PhoneNumberType.PERSONAL_NUMBER: "personal",
    PhoneNumberType.PAGER: "pager",
    PhoneNumberType.UAN: "UAN",
    PhoneNumberType.VOICEMAIL: "voicemail",
    PhoneNumberType.UNKNOWN: "unknown-type",
}


def _refuse(reason: str) -> InvalidMessage:
    return InvalidMessage(FIELD, reason)


def parse_number(raw: object) -> str:
    """The E.164 form (`+<digits>`) of a written number, or InvalidMessage.

    Digits without `+` are read as international. Letters, extensions and any character
    that is not a digit or a separator are refused, never converted or dropped.
    """
    parsed = _parse(raw)
    if not phonenumbers.is_valid_number(parsed):
        raise _refuse("not a valid phone number")
    return _e164(parsed)


def _e164(parsed: phonenumbers.PhoneNumber) -> str:
    return phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164)


def _parse(raw: object) -> phonenumbers.PhoneNumber:
    if not isinstance(raw, str) or not raw.strip():
        raise _refuse("a phone number is required")
    text = raw.strip()
    if len(text) > MAX_LENGTH:
        raise _refuse("too long for a phone number")
    if _EXTENSION.search(text):
        raise _refuse("has an extension: an SMS goes to a plain number without one")
    for position, char in enumerate(text):
        if (char.isascii() and char.isdigit()) or char in _SEPARATORS:
            continue
        if position == 0 and char == "+":
            continue
        if char.isalpha():
            raise _refuse("contains letters: a phone number has digits only")
        raise _refuse(f"contains U+{ord(char):04X} at position {position}: digits only")
    if text[0] != "+":
        text = "+" + text
    try:
        parsed = phonenumbers.parse(text, None)
    except phonenumbers.NumberParseException:
        raise _refuse("not a phone number in E.164 form") from None
    return parsed


def _read(raw: object) -> tuple[str, int] | str:
    """The number's E.164 form and type, or the reason it is refused (settings aside)."""
    try:
        parsed = _parse(raw)
    except InvalidMessage as exc:
        return exc.reason
    # The number's type is what validity is decided on (is_valid_number asks for it too):
    # asked once, it answers both.
    kind = phonenumbers.number_type(parsed)
    if kind is PhoneNumberType.UNKNOWN or phonenumbers.region_code_for_number(parsed) is None:
        return "not a valid phone number"
    return _e164(parsed), kind


# The same written number reads the same every time (phonenumbers' metadata is fixed for
# the process), and patients get message after message: remembered, least recently used
# first out. Only short texts are kept (a longer one is refused anyway, and read anew).
_read_remembered = functools.lru_cache(maxsize=4096)(_read)
_REMEMBERED_LENGTH = 2 * MAX_LENGTH


def destination(raw: object, settings: Settings) -> str:
    """A number a message may be sent to (E.164), or InvalidMessage saying why not."""
    short = isinstance(raw, str) and len(raw) <= _REMEMBERED_LENGTH
    read = _read_remembered(raw) if short else _read(raw)
    if isinstance(read, str):
        raise _refuse(read)
    number, kind = read
    for prefix in settings.sms_refused_prefixes:
        if number.startswith(prefix):
            raise _refuse(
                f"starts with {prefix}, a refused range (premium-rate or satellite; "
                "SMS_REFUSED_PREFIXES)"
            )
    if kind not in _PLAIN_TYPES:
        name = _TYPE_NAMES.get(kind, "special")
        raise _refuse(f"is a {name} number, not a mobile or fixed-line one")
    return number

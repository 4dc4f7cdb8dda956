"""Opt-out and opt-in keywords in incoming messages.

A message is a keyword when the WHOLE message, normalised, equals a normalised keyword.
Normalising: Unicode NFKC, casefold, and every character that is not a letter or a digit
removed (spaces, punctuation, emoji). So " stop ", "Stop!", "S T O P", "stop all" (for
STOPALL), "стоп", "ВІДПИСКА." all match; "Stop sending me codes" does not.

Why not the first word as well: in a health-care channel people answer with sentences
such as "Cancel my appointment" or "End of treatment?", and CANCEL / END are standard
opt-out words; reading those as an opt-out would silently stop someone's notices. A
whole-message keyword is what carriers' STOP handling uses too. The keyword lists are
settings (SMS_OPT_OUT_KEYWORDS / SMS_OPT_IN_KEYWORDS, comma-separated).
"""

from __future__ import annotations

import enum
import functools
import unicodedata
from collections.abc import Iterable
from typing import Any

from sms_pipeline.settings import Settings, get_settings

# --- the rule: who an opt-out stops --------------------------------------------------------

# Types that carry something the person needs (a code, a medication request): they go even
# after an opt-out. The only statement of the rule; enqueue, the SQL route and the send
# path all ask `stops(...)`.
ESSENTIAL_TYPES = frozenset({"verification", "2FA", "medication_request"})


def stops(message_type: str) -> bool:
    """Whether an opt-out of the number stops a message of this type."""
    return message_type not in ESSENTIAL_TYPES


def opted_out_clause(phone_number: Any, phone_hash: Any = None) -> Any:
    """SQL: the number (a column or a value) has opted out; with `phone_hash` (the number's
    keyed hash, a value), also an opt-out kept only as a hash after an erasure."""
    from sqlalchemy import exists, or_

    from sms_pipeline.db.models import OptOut, OptOutHash

    by_number = exists().where(OptOut.phone_number == phone_number)
    if phone_hash is None:
        return by_number
    return or_(by_number, exists().where(OptOutHash.phone_hash == phone_hash))


class KeywordAction(enum.StrEnum):
    OPT_OUT = "opt_out"
    OPT_IN = "opt_in"


def normalise_keyword(text: str) -> str:
    """NFKC, casefolded, letters and digits only."""
    folded = unicodedata.normalize("NFKC", text).casefold()
    return "".join(ch for ch in folded if unicodedata.category(ch)[0] in "LN")


@functools.lru_cache(maxsize=32)
def _keyword_set(keywords: tuple[str, ...]) -> frozenset[str]:
    return frozenset(k for k in (normalise_keyword(word) for word in keywords) if k)


def classify(
    text: str | None, opt_out: Iterable[str], opt_in: Iterable[str]
) -> KeywordAction | None:
    """OPT_OUT, OPT_IN or None for a message text, given the keyword lists."""
    if not text:
        return None
    word = normalise_keyword(text)
    if not word:
        return None
    # A word in both lists is read as an opt-out: the safe side for the person.
    if word in _keyword_set(tuple(opt_out)):
        return KeywordAction.OPT_OUT
    if word in _keyword_set(tuple(opt_in)):
        return KeywordAction.OPT_IN
    return None


def classify_message(text: str | None, settings: Settings | None = None) -> KeywordAction | None:
    """`classify` with the configured keyword lists."""
    settings = settings or get_settings()
    return classify(text, settings.sms_opt_out_keywords, settings.sms_opt_in_keywords)


__all__ = ["KeywordAction", "classify", "classify_message", "normalise_keyword"]

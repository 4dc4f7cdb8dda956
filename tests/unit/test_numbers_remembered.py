"""Destination numbers are read once and remembered; the refused ranges are not."""

from __future__ import annotations

import pytest

from sms_pipeline.errors import InvalidMessage
from sms_pipeline.services import numbers
from sms_pipeline.settings import Settings

MOBILE = "+380 93 123 4567"


def test_a_remembered_number_still_meets_the_refused_ranges_of_the_settings_asked() -> None:
    assert numbers.destination(MOBILE, Settings()) == "+380931234567"
    refusing = Settings(SMS_REFUSED_PREFIXES="+38093")
    with pytest.raises(InvalidMessage, match=r"starts with \+38093, a refused range"):
        numbers.destination(MOBILE, refusing)
    assert numbers.destination(MOBILE, Settings()) == "+380931234567"


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        ("+38093123456a", "contains letters"),
        ("+1 800 555 0100", "is a toll-free number"),
        ("+380 12", "not a valid phone number"),
        ("+999 123", "not a phone number in E.164 form"),
    ],
)
def test_a_refused_number_is_refused_with_the_same_words_every_time(raw: str, reason: str) -> None:
    for _ in range(2):
        with pytest.raises(InvalidMessage, match=reason):
            numbers.destination(raw, Settings())


def test_a_long_text_is_not_remembered() -> None:
    before = numbers._read_remembered.cache_info().currsize
    with pytest.raises(InvalidMessage, match="too long"):
        numbers.destination("1" * 1000, Settings())
    assert numbers._read_remembered.cache_info().currsize == before

"""How many SMS segments a body needs: GSM-7 (160 / 153 per part) or UCS-2 (70 / 67)."""

from __future__ import annotations

import re
from dataclasses import dataclass

import gsm0338  # noqa: F401  (registers the "gsm03.38" codec)

GSM7 = "GSM-7"
UCS2 = "UCS-2"


@dataclass(frozen=True)
class SegmentInfo:
    encoding: str
    units: int  # septets for GSM-7 (escapes count 2), UTF-16 code units for UCS-2
    segments: int


def _ascii_table() -> tuple[re.Pattern[str], str]:
    """What the codec makes of each ASCII character, asked once: those it cannot encode
    (as a pattern) and those it escapes (two septets)."""
    refused, escaped = [], []
    for code in range(128):
        char = chr(code)
        try:
            if len(char.encode("gsm03.38")) == 2:
                escaped.append(char)
        except UnicodeEncodeError:
            refused.append(char)
    return re.compile("[" + re.escape("".join(refused)) + "]"), "".join(escaped)


_ASCII_REFUSED, _ASCII_ESCAPED = _ascii_table()


def _gsm_units(body: str) -> int:
    """Septets in GSM-7, or UnicodeEncodeError. Most bodies are ASCII: counted from the
    codec's own table without encoding (the same answer, a fraction of the time)."""
    if not body.isascii():
        return len(body.encode("gsm03.38"))
    if _ASCII_REFUSED.search(body):
        raise UnicodeEncodeError("gsm03.38", body, 0, 1, "not in GSM 03.38")
    return len(body) + sum(body.count(char) for char in _ASCII_ESCAPED)


def count_segments(body: str) -> SegmentInfo:
    try:
        units = _gsm_units(body)
        single, multi, encoding = 160, 153, GSM7
    except UnicodeEncodeError:
        # UCS-2 on the air; characters outside the BMP take two code units.
        units = len(body.encode("utf-16-le")) // 2
        single, multi, encoding = 70, 67, UCS2
    segments = 1 if units <= single else -(-units // multi)
    return SegmentInfo(encoding=encoding, units=units, segments=segments)

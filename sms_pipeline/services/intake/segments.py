"""How many SMS segments a body needs: GSM-7 (160 / 153 per part) or UCS-2 (70 / 67)."""

from __future__ import annotations

from dataclasses import dataclass

import gsm0338  # noqa: F401  (registers the "gsm03.38" codec)

GSM7 = "GSM-7"
UCS2 = "UCS-2"


@dataclass(frozen=True)
class SegmentInfo:
    encoding: str
    units: int  # septets for GSM-7 (escapes count 2), UTF-16 code units for UCS-2
    segments: int


def count_segments(body: str) -> SegmentInfo:
    try:
        units = len(body.encode("gsm03.38"))
        single, multi, encoding = 160, 153, GSM7
    except UnicodeEncodeError:
        # UCS-2 on the air; characters outside the BMP take two code units.
        units = len(body.encode("utf-16-le")) // 2
        single, multi, encoding = 70, 67, UCS2
    segments = 1 if units <= single else -(-units // multi)
    return SegmentInfo(encoding=encoding, units=units, segments=segments)

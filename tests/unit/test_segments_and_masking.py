from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sms_pipeline.services.intake.segments import GSM7, UCS2, SegmentInfo, count_segments
from sms_pipeline.services.masking import mask_phone


def _by_the_codec(body: str) -> SegmentInfo:
    """What the codec itself says (the counting above skips encoding ASCII bodies)."""
    try:
        units, single, multi, encoding = len(body.encode("gsm03.38")), 160, 153, GSM7
    except UnicodeEncodeError:
        units, single, multi, encoding = len(body.encode("utf-16-le")) // 2, 70, 67, UCS2
    return SegmentInfo(encoding, units, 1 if units <= single else -(-units // multi))


@given(st.text(alphabet=st.characters(max_codepoint=127), max_size=400))
def test_an_ascii_body_counts_as_the_codec_encodes_it(body: str) -> None:
    assert count_segments(body) == _by_the_codec(body)


@pytest.mark.parametrize(
    "body", ["a`b", "tab\there", "[x]{y}~^|\\", "a\x0cb", "del\x7f", "ok é", "€5 ~"]
)
def test_edge_characters_count_as_the_codec_encodes_them(body: str) -> None:
    assert count_segments(body) == _by_the_codec(body)


@pytest.mark.parametrize(
    ("body", "encoding", "segments"),
    [
        ("a" * 160, GSM7, 1),
        ("a" * 161, GSM7, 2),
        ("a" * 306, GSM7, 2),
        ("a" * 307, GSM7, 3),
        ("€" * 80, GSM7, 1),  # an extension character costs two septets
        ("€" * 81, GSM7, 2),
        ("ї" * 70, UCS2, 1),
        ("ї" * 71, UCS2, 2),
        ("ї" * 134, UCS2, 2),
        ("ї" * 135, UCS2, 3),
        ("😀" * 35, UCS2, 1),  # outside the BMP: two UTF-16 units each
        ("😀" * 36, UCS2, 2),
    ],
)
def test_segment_count_follows_gsm7_and_ucs2_limits(
    body: str, encoding: str, segments: int
) -> None:
    info = count_segments(body)
    assert (info.encoding, info.segments) == (encoding, segments)


def test_masked_number_keeps_head_and_tail_only() -> None:
    masked = mask_phone("+380931234567")
    assert masked.startswith("+380") and masked.endswith("67")
    assert "1234" not in masked
    assert len(masked) == len("+380931234567")
    assert mask_phone(None) == "-"

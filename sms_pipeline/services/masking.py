"""What may appear in logs: masked phone numbers and URLs, never bodies or passwords."""

from __future__ import annotations

from sms_pipeline.settings import mask_url

__all__ = ["mask_phone", "mask_url"]


def mask_phone(number: str | None) -> str:
    """`+380931234567` → `+380*******67`: enough to tell numbers apart, not to dial."""
    if not number:
        return "-"
    keep_head = min(6, max(1, len(number) // 3))
    keep_tail = 2 if len(number) > 8 else 1
    hidden = max(1, len(number) - keep_head - keep_tail)
    return number[:keep_head] + "*" * hidden + number[-keep_tail:]

"""The access-log filter masks phone numbers in every spelling, and nothing else a reader needs."""

from __future__ import annotations

import logging

import pytest

from sms_pipeline.api.access_log import NumberMaskingFilter, mask_numbers


@pytest.mark.parametrize(
    "line",
    [
        "GET /v1/subjects/+380931234567 HTTP/1.1",
        "GET /v1/subjects/%2B380931234567 HTTP/1.1",
        "GET /v1/subjects/%2b380931234567 HTTP/1.1",
        "GET /x?phone=380931234567&y=1 HTTP/1.1",
        "GET /x?phone=+380%2093%20123%2045%2067 HTTP/1.1",
        "GET /x?phone=380-93-123-45-67 HTTP/1.1",
        "GET /x/0931234567 HTTP/1.1",
    ],
)
def test_numbers_in_paths_and_queries_are_masked(line: str) -> None:
    masked = mask_numbers(line)
    assert "1234567" not in masked.replace("%20", "").replace("-", "").replace(" ", "")
    assert "*" in masked


@pytest.mark.parametrize(
    "line",
    [
        '192.168.100.200:55555 - "GET /v1/messages/9857e29b-64bc-4c48-b1eb-7d69593e6f6a '
        'HTTP/1.1" 200',
        '127.0.0.1:8000 - "GET /healthz HTTP/1.1" 503',
        "Finished server process [123456]",
    ],
)
def test_addresses_ids_and_short_numbers_are_kept(line: str) -> None:
    assert mask_numbers(line) == line


def test_the_filter_masks_a_records_arguments_before_formatting() -> None:
    record = logging.LogRecord(
        "uvicorn.access", logging.INFO, __file__, 1, '%s - "%s %s HTTP/%s" %d',
        ("127.0.0.1:5000", "GET", "/v1/subjects/+380931234567", "1.1", 401), None,
    )  # fmt: skip
    assert NumberMaskingFilter().filter(record)
    assert record.getMessage() == '127.0.0.1:5000 - "GET /v1/subjects/+380*******67 HTTP/1.1" 401'

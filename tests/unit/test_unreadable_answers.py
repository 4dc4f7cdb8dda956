"""Characters XML cannot carry, and answers after a 2xx that cannot be fully read.

The predicate is one function next to the codec; requests that cannot be built are a
permanent, explained error of the client (nothing is sent); an accepted answer with an
unreadable date, an id too long to keep or an odd encoding is still an accepted answer.
"""

from __future__ import annotations

from concurrent.futures import Future
from typing import Any

import pytest

from sms_pipeline import InvalidMessage, enqueue_sms
from sms_pipeline.gateway import GatewayRequestInvalid, GatewayStatus, IP2SMSClient, parse_answer
from sms_pipeline.gateway.codec import (
    MAX_GATEWAY_ID_LENGTH,
    first_invalid_xml_char,
    parse_gateway_date,
)
from sms_pipeline.gateway.transport import Reply


def _answered(reply: Reply) -> Future[Reply]:
    """A transport future already settled with `reply` (no network)."""
    future: Future[Reply] = Future()
    future.set_result(reply)
    return future


NUMBER = "+380931234567"
OVERFLOW_DATE = "Fri, 31 Dec 9999 23:59:00 -0100"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("hello", None),
        ("tab\tnewline\ncr\r", None),
        ("привіт 👋 \u00a0\u0085", None),
        ("a\ufffeb", (1, "\ufffe")),
        ("\uffff", (0, "\uffff")),
        ("ab\x0b", (2, "\x0b")),
        ("\x00", (0, "\x00")),
        ("x\ud800", (1, "\ud800")),
    ],
)
def test_first_invalid_xml_char_finds_what_xml_10_cannot_carry(
    text: str, expected: tuple[int, str] | None
) -> None:
    assert first_invalid_xml_char(text) == expected


@pytest.mark.parametrize(
    ("field", "kwargs"),
    [
        ("body", {"body": "code \ufffe 1234"}),
        ("body", {"body": "code \x0b 1234"}),
        ("sender_id", {"sender_id": "HEALTH\x0b"}),
        ("sender_id", {"sender_id": "HEALTH\ufffe"}),
        ("ext_id", {"ext_id": "order-\uffff"}),
        ("customer_id", {"customer_id": "c-\ufffe"}),
    ],
)
def test_enqueue_refuses_characters_xml_cannot_carry_naming_the_field(
    field: str, kwargs: dict[str, Any]
) -> None:
    arguments: dict[str, Any] = {"phone_number": NUMBER, "body": "hello", **kwargs}
    with pytest.raises(InvalidMessage) as info:
        enqueue_sms(**arguments)  # validation comes first: no database is touched
    assert info.value.field == field
    assert "XML 1.0" in info.value.reason or "control" in info.value.reason
    assert "1234" not in str(info.value)  # never the text itself


def test_a_request_that_cannot_be_built_is_a_permanent_error_and_nothing_is_sent(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    client = IP2SMSClient("http://127.0.0.1:9/s", "http://127.0.0.1:9/q", "u", "p", "SRC")

    def no_network(op: str, url: str, payloads: Any) -> Any:
        assert not payloads, "nothing may be sent"
        return []

    monkeypatch.setattr(client, "_submit", no_network)
    with pytest.raises(GatewayRequestInvalid) as info:
        client.send(NUMBER, "code \ufffe 123456")
    assert info.value.permanent
    assert info.value.outcome == "invalid_request"
    assert "U+FFFE" in info.value.reason and "body" in info.value.reason
    assert "123456" not in info.value.reason
    with pytest.raises(GatewayRequestInvalid):
        client.status("id\x0b")


def test_a_date_whose_utc_is_out_of_range_is_unreadable_not_a_crash() -> None:
    assert parse_gateway_date(OVERFLOW_DATE) is None
    answer = parse_answer(
        f'<status id="8072817" date="{OVERFLOW_DATE}"><state>Accepted</state></status>'.encode()
    )
    assert answer.first.gateway_id == "8072817"
    assert answer.first.status is GatewayStatus.ACCEPTED
    assert answer.date is None and answer.date_raw == OVERFLOW_DATE
    assert any(OVERFLOW_DATE in p for p in answer.problems)


@pytest.mark.parametrize("where", ["attribute", "element"])
def test_an_id_too_long_to_keep_is_refused_not_cut_and_the_answer_still_counts(
    where: str,
) -> None:
    long_id = "9" * (MAX_GATEWAY_ID_LENGTH + 1)
    raw = (
        f'<status id="{long_id}" date=""><state>Accepted</state></status>'
        if where == "attribute"
        else f'<status date=""><id>{long_id}</id><state>Accepted</state></status>'
    )
    answer = parse_answer(raw.encode())
    assert [(i.gateway_id, i.status) for i in answer.items] == [(None, GatewayStatus.ACCEPTED)]
    assert any("cannot be polled" in p for p in answer.problems)
    fits = "9" * MAX_GATEWAY_ID_LENGTH
    kept = parse_answer(f'<status id="{fits}"><state>Accepted</state></status>'.encode())
    assert kept.first.gateway_id == fits


@pytest.mark.parametrize("codec", ["utf-16", "utf-16-be", "utf-32"])
def test_answers_in_utf16_or_utf32_with_a_bom_are_read(codec: str) -> None:
    text = (
        '<?xml version="1.0" encoding="UTF-16"?><status id="42"><state>Delivered</state></status>'
    )
    raw = text.encode(codec)
    if not raw.startswith((b"\xff\xfe", b"\xfe\xff")):
        raw = "\ufeff".encode(codec) + raw
    answer = parse_answer(raw)
    assert (answer.first.gateway_id, answer.first.status) == ("42", GatewayStatus.DELIVERED)


def test_an_undeclared_8bit_answer_is_read_as_windows_1251() -> None:
    raw = '<status id="42"><state error="Невірний номер">Rejected</state></status>'.encode("cp1251")
    answer = parse_answer(raw)
    assert answer.first.status is GatewayStatus.REJECTED
    assert answer.first.error == "Невірний номер"


def test_any_other_failure_reading_a_2xx_answer_is_a_transient_protocol_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from sms_pipeline.gateway import GatewayProtocolError
    from sms_pipeline.gateway import client as client_module

    def broken_parser(raw: bytes, **kwargs: Any) -> Any:
        raise OverflowError("date value out of range")

    monkeypatch.setattr(client_module, "parse_answer", broken_parser)
    client = IP2SMSClient("http://127.0.0.1:9/s", "http://127.0.0.1:9/q", "u", "p", "SRC")

    def answer(op: str, url: str, payloads: Any) -> Any:
        return [_answered(Reply(200, (), b"<status/>", 0.01)) for _ in payloads]

    monkeypatch.setattr(client, "_submit", answer)
    with pytest.raises(GatewayProtocolError) as info:
        client.send(NUMBER, "hello")
    assert not info.value.permanent
    assert info.value.reason == "answer could not be read (OverflowError)"

"""The IP2SMS XML codec: escaping, every answer shape, hostile XML."""

from __future__ import annotations

import re
import time
import xml.etree.ElementTree as ET
from datetime import UTC, datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sms_pipeline.gateway import GatewayProtocolError, GatewayStatus, parse_answer
from sms_pipeline.gateway.codec import (
    ParsedState,
    RequestParseError,
    build_answer,
    build_send_xml,
    build_status_xml,
    parse_gateway_date,
    parse_send_request,
    parse_status_request,
    safe_fromstring,
    xml_bytes,
)

_XML_INVALID = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")
xml_text = st.text(
    alphabet=st.characters(exclude_categories=["Cs"]).filter(
        lambda c: _XML_INVALID.match(c) is None
    ),
    max_size=300,
)

# ------------------------------------------------------------------ building requests


def _element_tree_bytes(root: ET.Element) -> bytes:
    """What the codec wrote before it had a serialiser of its own (ElementTree, CR kept)."""
    data: bytes = ET.tostring(root, encoding="utf-8", xml_declaration=False)
    return data.replace(b"\r", b"&#13;")


@settings(max_examples=300, deadline=None)
@given(attr=xml_text, text=xml_text, tail=xml_text, child_text=xml_text)
def test_xml_bytes_writes_what_element_tree_writes(
    attr: str, text: str, tail: str, child_text: str
) -> None:
    root = ET.Element("message", {"a": attr, "b": "1"})
    root.text = text or None
    child = ET.SubElement(root, "to", {"ext_id": attr})
    child.text = child_text or None
    child.tail = tail or None
    ET.SubElement(root, "empty", {"x": text})
    assert xml_bytes(root) == _element_tree_bytes(root)
    assert safe_fromstring(xml_bytes(root)).get("a") == attr


def test_xml_bytes_refuses_namespaced_elements() -> None:
    with pytest.raises(ValueError, match="plain elements"):
        xml_bytes(ET.Element("{urn:x}message"))


def test_send_xml_has_the_protocol_shape() -> None:
    xml = build_send_xml("+380931234567", "text", source="SENDER", ext_id="E1")
    assert xml == (
        b'<message><service id="single" source="SENDER" />'
        b'<to ext_id="E1">+380931234567</to>'
        b'<body content-type="text/plain" encoding="plain">text</body></message>'
    )


def test_optional_attributes_are_omitted_when_none() -> None:
    xml = build_send_xml("+380931234567", "t", source="S")
    for name in (b"ext_id", b"uniq_key", b"start", b"validity"):
        assert name not in xml


def test_optional_attributes_are_sent_when_given() -> None:
    xml = build_send_xml(
        "+380931234567",
        "t",
        source="S",
        uniq_key="k-1",
        start="2024-01-01 10:00",
        validity="+2 hour",
    )
    req = parse_send_request(xml)
    assert (req.uniq_key, req.start, req.validity) == ("k-1", "2024-01-01 10:00", "+2 hour")


@pytest.mark.parametrize(
    "body",
    [
        "</body><to>+1</to>",
        "a & b &amp; <![CDATA[x]]>",
        "quotes \" and ' and `",
        "Ваш код: 123456",
        "emoji 😀🇺🇦",
        "  leading and trailing spaces  ",
        "line\r\nbreaks\rand\ttabs\n",
        "",
    ],
)
def test_body_survives_build_then_parse_byte_identical(body: str) -> None:
    req = parse_send_request(build_send_xml("+380931234567", body, source="S"))
    assert req.body == body


@settings(max_examples=300, deadline=None)
@given(body=xml_text, ext_id=xml_text, uniq_key=xml_text.filter(lambda s: s.strip() == s and s))
def test_any_text_round_trips_through_the_request(body: str, ext_id: str, uniq_key: str) -> None:
    xml = build_send_xml("+380931234567", body, source="S", ext_id=ext_id, uniq_key=uniq_key)
    req = parse_send_request(xml)
    assert req.body == body
    assert req.ext_id == ext_id
    assert req.uniq_key == uniq_key
    assert req.phone_number == "+380931234567"


def test_markup_in_body_cannot_add_a_recipient() -> None:
    xml = build_send_xml("+380931234567", "</body><to>+1</to><body>", source="S")
    assert xml.count(b"<to") == 1


@pytest.mark.parametrize("char", ["\x00", "\x01", "\x08", "\x0b", "\x1f", "\ufffe", "\ud800"])
def test_characters_xml_cannot_carry_are_refused_naming_the_field(char: str) -> None:
    secret = f"code 123456{char}"
    with pytest.raises(ValueError, match=r"body contains U\+[0-9A-F]{4} at position 11") as info:
        build_send_xml("+380931234567", secret, source="S")
    assert "123456" not in str(info.value)


def test_control_character_in_an_attribute_is_refused() -> None:
    with pytest.raises(ValueError, match="ext_id"):
        build_send_xml("+380931234567", "x", source="S", ext_id="a\x00b")


def test_status_request_round_trips() -> None:
    xml = build_status_xml("3806712345671174984921384")
    assert xml == b'<request id="3806712345671174984921384">status</request>'
    assert parse_status_request(xml) == "3806712345671174984921384"


def test_status_request_id_is_escaped() -> None:
    assert parse_status_request(build_status_xml('a"<&>b')) == 'a"<&>b'


@pytest.mark.parametrize(
    "raw",
    [
        b"<request>status</request>",
        b'<request id="1">delete</request>',
        b"<message/>",
        b"not xml",
    ],
)
def test_bad_status_requests_are_refused(raw: bytes) -> None:
    with pytest.raises(RequestParseError):
        parse_status_request(raw)


@pytest.mark.parametrize(
    "raw",
    [
        b"<message><body>x</body></message>",
        b"<message><to>+380931234567</to></message>",
        b"<request id='1'>status</request>",
        b'<!DOCTYPE m [<!ENTITY e "x">]><message><to>+1</to><body>&e;</body></message>',
    ],
)
def test_bad_send_requests_are_refused(raw: bytes) -> None:
    with pytest.raises(RequestParseError):
        parse_send_request(raw)


# ------------------------------------------------------------------ answers from SPEC §1


def test_answer_with_id_attribute_and_newlines() -> None:
    answer = parse_answer(
        b'<status id="3806712345671174984921384" date="Wed, 28 Mar 2007 12:35:00 +0300">\n'
        b"<state>Accepted</state>\n</status>"
    )
    assert answer.items == (ParsedState("3806712345671174984921384", GatewayStatus.ACCEPTED),)
    assert answer.date == datetime(2007, 3, 28, 9, 35, tzinfo=UTC)


def test_answer_on_one_line() -> None:
    answer = parse_answer(
        b'<status id="8072817" date="Fri, 06 Sep 2013 19:11:16 +0300">'
        b"<state>Accepted</state></status>"
    )
    assert answer.first.gateway_id == "8072817"
    assert answer.first.status is GatewayStatus.ACCEPTED


def test_accepted_with_error_and_no_id_keeps_the_error() -> None:
    answer = parse_answer(
        b'<status date="Fri, 06 Sep 2013 19:11:16 +0300">'
        b'<state error="Invalid message">Accepted</state></status>'
    )
    assert answer.items == (ParsedState(None, GatewayStatus.ACCEPTED, "Invalid message"),)


def test_rejected_without_reason() -> None:
    answer = parse_answer(
        b'<status id="8072382" date="Fri, 06 Sep 2013 21:38:47 +0300">'
        b"<state>Rejected</state></status>"
    )
    assert answer.items == (ParsedState("8072382", GatewayStatus.REJECTED, None),)


def test_id_as_child_element_and_single_quotes() -> None:
    answer = parse_answer(
        b"<status date='Wed, 25 May 2016 17:29:56 +0300'><id>380502535130309161501</id>"
        b"<state>Accepted</state></status>"
    )
    assert answer.first.gateway_id == "380502535130309161501"
    assert answer.date == datetime(2016, 5, 25, 14, 29, 56, tzinfo=UTC)


def test_group_answer_yields_one_item_per_id() -> None:
    answer = parse_answer(
        b'<status groupid="593589" date="Fri, 06 Sep 2013 22:11:05 +0300"><id>8076414</id>'
        b"<id>8076415</id><state>Accepted</state><state>Accepted</state></status>"
    )
    assert answer.group_id == "593589"
    assert [i.gateway_id for i in answer.items] == ["8076414", "8076415"]
    assert all(i.status is GatewayStatus.ACCEPTED for i in answer.items)


def test_group_answer_with_one_state_applies_it_to_every_id() -> None:
    answer = parse_answer(b"<status date=''><id>1</id><id>2</id><state>Enroute</state></status>")
    assert [(i.gateway_id, i.status) for i in answer.items] == [
        ("1", GatewayStatus.ENROUTE),
        ("2", GatewayStatus.ENROUTE),
    ]


def test_uniq_key_dupe_answer_with_empty_date() -> None:
    answer = parse_answer(b"<status date=''><state error='uniq_key dupe'>Rejected</state></status>")
    assert answer.items == (ParsedState(None, GatewayStatus.REJECTED, "uniq_key dupe"),)
    assert answer.date is None
    assert answer.date_raw == ""


def test_ext_id_attribute_is_kept() -> None:
    answer = parse_answer(
        b'<status id="x" date="..." ext_id="OPTIONAL-OWN-ID">'
        b'<state error="...">Accepted</state></status>'
    )
    assert answer.ext_id == "OPTIONAL-OWN-ID"
    assert answer.first.error == "..."
    assert answer.date is None
    assert answer.date_raw == "..."


def test_empty_id_attribute_counts_as_missing() -> None:
    answer = parse_answer(b'<status id="" date=""><state>Accepted</state></status>')
    assert answer.first.gateway_id is None


def test_windows_1251_declaration_is_decoded() -> None:
    raw = (
        '<?xml version="1.0" encoding="windows-1251"?>'
        '<status id="7" date=""><state error="Невірний номер">Rejected</state></status>'
    ).encode("cp1251")
    assert parse_answer(raw).first.error == "Невірний номер"


def test_surrounding_whitespace_and_bom_are_ignored() -> None:
    raw = (
        b"\r\n  \xef\xbb\xbf<?xml version='1.0'?>\n"
        b"<status id='1'><state>Delivered</state></status>\n"
    )
    assert parse_answer(raw).first.status is GatewayStatus.DELIVERED


@pytest.mark.parametrize("word", ["delivered", "DELIVERED", "  Delivered\n", "\tdElIvErEd "])
def test_status_words_in_any_case_and_whitespace(word: str) -> None:
    raw = f'<status id="1"><state>{word}</state></status>'.encode()
    assert parse_answer(raw).first.status is GatewayStatus.DELIVERED


def test_unknown_attributes_and_elements_are_ignored() -> None:
    raw = (
        b'<status id="1" date="" extra="x"><price>0.5</price>'
        b'<state foo="bar">Enroute<!-- c --></state><note/></status>'
    )
    assert parse_answer(raw).first.status is GatewayStatus.ENROUTE


def test_unknown_status_word_is_a_protocol_error() -> None:
    with pytest.raises(GatewayProtocolError) as info:
        parse_answer(b'<status id="1"><state>Teleported</state></status>')
    assert info.value.permanent is False


@pytest.mark.parametrize(
    "raw",
    [
        b"Request not recognized - xml parse failed",
        b"<error>Internal error</error>",
        b"<html><body>502 Bad Gateway</body></html>",
        b"<status id='1'></status>",
        b"<status id='1'><state>Accepted</state>",
        b"",
        b"   ",
        b"<status><id>1</id><id>2</id><id>3</id><state>A</state><state>B</state></status>",
        b"<status><id>1</id><id>2</id><id>3</id>"
        b"<state>Accepted</state><state>Accepted</state></status>",
    ],
)
def test_answers_that_are_not_the_expected_xml_are_transient_protocol_errors(raw: bytes) -> None:
    with pytest.raises(GatewayProtocolError) as info:
        parse_answer(raw)
    assert info.value.permanent is False
    assert info.value.outcome == "parse_error"


def test_protocol_error_reason_does_not_quote_the_answer() -> None:
    with pytest.raises(GatewayProtocolError) as info:
        parse_answer(b"<error>secret 123456</error>")
    assert "123456" not in str(info.value)


BILLION_LAUGHS = b"""<?xml version="1.0"?>
<!DOCTYPE lolz [
 <!ENTITY lol "lol">
 <!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
 <!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">
 <!ENTITY lol4 "&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;">
 <!ENTITY lol5 "&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;">
 <!ENTITY lol6 "&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;">
 <!ENTITY lol7 "&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;">
 <!ENTITY lol8 "&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;">
 <!ENTITY lol9 "&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;">
]>
<status id="1"><state error="&lol9;">Accepted</state></status>"""


def test_billion_laughs_is_refused_without_expansion() -> None:
    started = time.perf_counter()
    with pytest.raises(GatewayProtocolError, match="DTD"):
        parse_answer(BILLION_LAUGHS)
    assert time.perf_counter() - started < 0.5


def test_external_entity_is_refused() -> None:
    raw = (
        b'<!DOCTYPE x [<!ENTITY e SYSTEM "file:///etc/passwd">]>'
        b'<status id="1"><state error="&e;">Accepted</state></status>'
    )
    with pytest.raises(GatewayProtocolError, match="DTD") as info:
        parse_answer(raw)
    assert "root:" not in str(info.value)


def test_oversized_answer_is_refused_before_parsing() -> None:
    raw = b'<status id="1"><state>Accepted</state>' + b" " * 2000 + b"</status>"
    with pytest.raises(GatewayProtocolError, match="larger than 1024"):
        parse_answer(raw, max_bytes=1024)
    assert parse_answer(raw, max_bytes=4096).first.status is GatewayStatus.ACCEPTED


# ------------------------------------------------------------------ dates


def test_date_with_offset_becomes_aware_utc() -> None:
    parsed = parse_gateway_date("Fri, 06 Sep 2013 19:11:16 +0300")
    assert parsed == datetime(2013, 9, 6, 16, 11, 16, tzinfo=UTC)
    assert parsed is not None
    assert parsed.utcoffset() is not None


def test_date_without_known_zone_is_taken_as_utc() -> None:
    assert parse_gateway_date("Fri, 06 Sep 2013 19:11:16 -0000") == datetime(
        2013, 9, 6, 19, 11, 16, tzinfo=UTC
    )


@pytest.mark.parametrize("raw", [None, "", "   ", "...", "yesterday", "Fri, 99 Foo 2013 99:99:99"])
def test_empty_or_garbage_date_is_none(raw: str | None) -> None:
    assert parse_gateway_date(raw) is None


def test_garbage_date_keeps_its_raw_text_in_the_answer() -> None:
    answer = parse_answer(b'<status id="1" date="32/13/2013"><state>Accepted</state></status>')
    assert answer.date is None
    assert answer.date_raw == "32/13/2013"


# ------------------------------------------------------------------ simulator answers


def test_built_group_answer_parses_back() -> None:
    items = [ParsedState("1", GatewayStatus.ACCEPTED), ParsedState("2", GatewayStatus.REJECTED)]
    raw = build_answer(items, date="Fri, 06 Sep 2013 22:11:05 +0300", group_id="9")
    answer = parse_answer(raw)
    assert answer.items == tuple(items)
    assert answer.group_id == "9"


def test_built_single_answer_uses_id_attribute_and_ext_id() -> None:
    raw = build_answer([ParsedState("42", GatewayStatus.ACCEPTED)], date="", ext_id='own"<id>')
    assert raw.startswith(b'<status id="42"')
    assert parse_answer(raw).ext_id == 'own"<id>'

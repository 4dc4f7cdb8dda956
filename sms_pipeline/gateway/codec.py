"""IP2SMS XML, every request and answer in one place (long: one parser per answer shape).

Building requests and answers, parsing them safely.

Everything is built with :mod:`xml.etree.ElementTree`, so user text (the body, ext_id,
uniq_key, ...) is escaped by the library and can never become markup. Everything is
parsed with :mod:`defusedxml` with DTDs forbidden: entity bombs and external entities are
refused before any expansion happens.

Client side: :func:`build_send_xml`, :func:`build_status_xml`, :func:`parse_answer`.
Gateway side (the simulator): :func:`parse_send_request`, :func:`parse_status_request`,
:func:`build_answer`.
"""

from __future__ import annotations

import email.utils
import re
import xml.etree.ElementTree as ET
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Final
from xml.sax.saxutils import escape as xml_escape

import defusedxml
from defusedxml import ElementTree as DefusedElementTree

from sms_pipeline.gateway.errors import GatewayProtocolError
from sms_pipeline.gateway.statuses import GatewayStatus

DEFAULT_MAX_BYTES: Final = 65536

# XML 1.0 "Char": tab, LF, CR and everything from U+0020 except surrogates, FFFE, FFFF.
_INVALID_XML_CHAR = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")
_BOM: Final = b"\xef\xbb\xbf"
# Byte-order marks of the wider Unicode encodings, longest first (UTF-32 LE starts like
# UTF-16 LE).
_WIDE_BOMS: Final = (
    (b"\xff\xfe\x00\x00", "utf-32"),
    (b"\x00\x00\xfe\xff", "utf-32"),
    (b"\xff\xfe", "utf-16"),
    (b"\xfe\xff", "utf-16"),
)
_DECLARATION = re.compile(r"^\s*<\?xml[^>]*\?>")
_DECLARED_ENCODING = re.compile(rb"^\s*<\?xml[^>]*encoding=", re.IGNORECASE)
# The 8-bit encoding an undeclared, non-UTF-8 answer is read in: the gateway is Ukrainian.
FALLBACK_ENCODING: Final = "cp1251"
# The longest gateway id kept (the width of sms_log.gateway_id). Real ids are digit
# strings of up to ~25 characters; a longer one is refused rather than cut (a cut id
# would ask about another message): the answer still counts as accepted, without an id.
MAX_GATEWAY_ID_LENGTH: Final = 64


class RequestParseError(ValueError):
    """A request to the (simulated) gateway is not the IP2SMS XML it expects."""


class UnsafeXMLError(ValueError):
    """The document declares a DTD or entities; it was refused without expansion."""


# --------------------------------------------------------------------------- helpers


def first_invalid_xml_char(text: str) -> tuple[int, str] | None:
    """(position, character) of the first character XML 1.0 cannot carry, or None.

    The one predicate for "can this text go into a request": enqueue validation, the SQL
    route, replication and the request builders all use it. XML 1.0 carries tab, LF, CR
    and everything from U+0020 except the surrogates U+D800-U+DFFF and U+FFFE, U+FFFF.
    """
    match = _INVALID_XML_CHAR.search(text)
    return None if match is None else (match.start(), match.group())


def describe_invalid_xml_char(text: str) -> str | None:
    """ "contains U+FFFE at position 3, a character XML 1.0 cannot carry", or None.

    Names the code point and its position, never the text (it may be a one-time code).
    """
    found = first_invalid_xml_char(text)
    if found is None:
        return None
    position, char = found
    return f"contains U+{ord(char):04X} at position {position}, a character XML 1.0 cannot carry"


def check_xml_text(value: str, field: str) -> str:
    """Return ``value`` unchanged, or raise ValueError if XML 1.0 cannot carry it.

    The message names the field, the code point and its position, never the text itself
    (the text may be a one-time code).
    """
    problem = describe_invalid_xml_char(value)
    if problem is not None:
        raise ValueError(f"{field} {problem}")
    return value


def _local(tag: str) -> str:
    # Tolerate namespaces and letter case: the gateway's markup is not formally specified.
    return tag.rsplit("}", 1)[-1].lower()


def _clean(value: str | None) -> str | None:
    if value is None:
        return None
    value = value.strip()
    return value or None


def prepare_xml(raw: bytes) -> bytes:
    # A declaration must be the very first thing, so drop leading whitespace and a BOM.
    for bom, codec in _WIDE_BOMS:
        if raw.startswith(bom):
            # UTF-16/32 with a BOM: re-encode as UTF-8 (and drop the declaration that
            # would now name the wrong encoding).
            try:
                text = raw.decode(codec)
            except UnicodeDecodeError:
                return raw
            return _DECLARATION.sub("", text.lstrip("\ufeff"), count=1).strip().encode()
    raw = raw.strip()
    if raw.startswith(_BOM):
        raw = raw[len(_BOM) :].lstrip()
    return raw


def _undeclared_8bit(data: bytes) -> bytes | None:
    """An answer without an encoding declaration whose bytes are not UTF-8, re-encoded
    from FALLBACK_ENCODING; None when that does not apply (the parse error stands)."""
    if _DECLARED_ENCODING.match(data):
        return None
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return data.decode(FALLBACK_ENCODING, errors="replace").encode("utf-8")
    return None


def safe_fromstring(raw: bytes) -> ET.Element:
    """Parse with DTDs, entities and external references forbidden.

    Raises UnsafeXMLError for DTD/entity documents, ValueError for anything malformed.
    """
    try:
        root: ET.Element = DefusedElementTree.fromstring(
            raw, forbid_dtd=True, forbid_entities=True, forbid_external=True
        )
        return root
    except defusedxml.DefusedXmlException as exc:
        raise UnsafeXMLError(f"XML with a DTD or entities refused ({type(exc).__name__})") from None
    except ET.ParseError as exc:
        raise ValueError(f"malformed XML (line {exc.position[0]})") from None
    except (LookupError, UnicodeError):
        raise ValueError("XML in an unknown or wrong character encoding") from None


# What ElementTree escapes, plus CR in text: XML parsers turn a literal CR into LF, a
# character reference survives.
_TEXT_ESCAPES: Final = {"\r": "&#13;"}
_ATTR_ESCAPES: Final = {'"': "&quot;", "\r": "&#13;", "\n": "&#10;", "\t": "&#09;"}
# Most values (numbers, ids, a plain body) hold none of these: one scan in C instead of
# escape()'s replace per character, nine values a request.
_TEXT_SPECIAL: Final = re.compile("[&<>\r]")
_ATTR_SPECIAL: Final = re.compile('[&<>"\r\n\t]')


def _text(value: str) -> str:
    return xml_escape(value, _TEXT_ESCAPES) if _TEXT_SPECIAL.search(value) else value


def _attr(value: str) -> str:
    return xml_escape(value, _ATTR_ESCAPES) if _ATTR_SPECIAL.search(value) else value


def xml_bytes(root: ET.Element) -> bytes:
    """The UTF-8 bytes of a small document without namespaces, as ElementTree writes it.

    Every send and status request is serialised here: `ET.tostring` spent 12 % of the
    worker's CPU on its writer and namespace machinery for these flat documents. The
    escaping is ElementTree's, done by `xml.sax.saxutils.escape` (tests compare the two).
    """
    out: list[str] = []
    _write(root, out)
    return "".join(out).encode("utf-8")


def _write(element: ET.Element, out: list[str]) -> None:
    tag = element.tag
    if not isinstance(tag, str) or tag.startswith("{"):
        raise ValueError("xml_bytes writes plain elements only (no namespaces, comments)")
    attrs = "".join(f' {name}="{_attr(value)}"' for name, value in element.attrib.items())
    if element.text or len(element):
        out.append(f"<{tag}{attrs}>")
        if element.text:
            out.append(_text(element.text))
        for child in element:
            _write(child, out)
        out.append(f"</{tag}>")
    else:
        out.append(f"<{tag}{attrs} />")
    if element.tail:
        out.append(_text(element.tail))


def parse_gateway_date(raw: str | None) -> datetime | None:
    """An RFC 1123 date with offset as an aware UTC datetime; None if empty or garbage."""
    if raw is None or not raw.strip():
        return None
    try:
        parsed = email.utils.parsedate_to_datetime(raw.strip())
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if parsed.tzinfo is None:
        # "-0000" means "UTC, origin unknown" (RFC 5322); parsedate returns it naive.
        parsed = parsed.replace(tzinfo=UTC)
    try:
        # 31 Dec 9999 23:59 -0100 is a valid local time whose UTC falls in year 10000.
        return parsed.astimezone(UTC)
    except (OverflowError, ValueError):
        return None


def format_gateway_date(moment: datetime) -> str:
    """``Wed, 28 Mar 2007 12:35:00 +0300``: the gateway's date format (aware datetime)."""
    return email.utils.format_datetime(moment)


# --------------------------------------------------------------------------- requests


def build_send_xml(
    phone_number: str,
    body: str,
    *,
    source: str,
    ext_id: str | None = None,
    uniq_key: str | None = None,
    start: str | None = None,
    validity: str | None = None,
    encoding: str | None = "plain",
    service: str = "single",
) -> bytes:
    """The UTF-8 ``<message>`` document that submits one SMS.

    Optional attributes are omitted when None. Raises ValueError when any value holds a
    character XML 1.0 cannot carry (the message says which field and code point).
    """
    service_attrs: dict[str, str] = {"id": check_xml_text(service, "service")}
    service_attrs["source"] = check_xml_text(source, "source")
    for name, value in (("start", start), ("validity", validity), ("uniq_key", uniq_key)):
        if value is not None:
            service_attrs[name] = check_xml_text(value, name)
    root = ET.Element("message")
    ET.SubElement(root, "service", service_attrs)
    to_attrs = {} if ext_id is None else {"ext_id": check_xml_text(ext_id, "ext_id")}
    to = ET.SubElement(root, "to", to_attrs)
    to.text = check_xml_text(phone_number, "phone_number")
    body_attrs = {"content-type": "text/plain"}
    if encoding is not None:
        body_attrs["encoding"] = check_xml_text(encoding, "encoding")
    body_el = ET.SubElement(root, "body", body_attrs)
    body_el.text = check_xml_text(body, "body")
    return xml_bytes(root)


def build_status_xml(gateway_id: str) -> bytes:
    """The ``<request id="...">status</request>`` document for one message."""
    root = ET.Element("request", {"id": check_xml_text(gateway_id, "gateway_id")})
    root.text = "status"
    return xml_bytes(root)


@dataclass(frozen=True, slots=True)
class SendRequest:
    """A parsed ``<message>`` as the gateway sees it (used by the simulator)."""

    phone_number: str
    body: str
    source: str | None
    service: str | None = None
    ext_id: str | None = None
    uniq_key: str | None = None
    start: str | None = None
    validity: str | None = None
    encoding: str | None = None
    content_type: str | None = None


def _request_root(raw: bytes, expected: str) -> ET.Element:
    try:
        root = safe_fromstring(prepare_xml(raw))
    except ValueError as exc:
        raise RequestParseError(str(exc)) from None
    if _local(root.tag) != expected:
        raise RequestParseError(f"expected <{expected}>, got <{_local(root.tag)[:30]}>")
    return root


def parse_send_request(raw: bytes) -> SendRequest:
    """Parse a send request; raises RequestParseError when it is not one.

    The body text is returned exactly as sent (no stripping): it is the message.
    """
    root = _request_root(raw, "message")
    service = to = body = None
    for child in root:
        name = _local(child.tag)
        if name == "service" and service is None:
            service = child
        elif name == "to" and to is None:
            to = child
        elif name == "body" and body is None:
            body = child
    if to is None or not _clean(to.text):
        raise RequestParseError("no <to> number")
    if body is None:
        raise RequestParseError("no <body>")
    attrs = service.attrib if service is not None else {}
    return SendRequest(
        phone_number=(to.text or "").strip(),
        body=body.text or "",
        source=attrs.get("source"),
        service=attrs.get("id"),
        ext_id=to.get("ext_id"),
        uniq_key=_clean(attrs.get("uniq_key")),
        start=attrs.get("start"),
        validity=attrs.get("validity"),
        encoding=body.get("encoding"),
        content_type=body.get("content-type"),
    )


def parse_status_request(raw: bytes) -> str:
    """The gateway id asked about in ``<request id="...">status</request>``."""
    root = _request_root(raw, "request")
    gateway_id = _clean(root.get("id"))
    if gateway_id is None:
        raise RequestParseError("status request without an id")
    if (root.text or "").strip().lower() != "status":
        raise RequestParseError("request is not a status request")
    return gateway_id


# --------------------------------------------------------------------------- answers


@dataclass(frozen=True, slots=True)
class ParsedState:
    """One (id, state, error) triple of an answer; group answers have several."""

    gateway_id: str | None
    status: GatewayStatus
    error: str | None = None


@dataclass(frozen=True, slots=True)
class ParsedAnswer:
    """A parsed ``<status>`` answer.

    ``date`` is aware UTC or None; ``date_raw`` keeps the text as received so the caller
    can log a date it could not read.
    """

    items: tuple[ParsedState, ...]
    date: datetime | None
    date_raw: str | None
    group_id: str | None = None
    ext_id: str | None = None
    # What could not be read in an otherwise usable answer (an unreadable date, an id too
    # long to keep), in words safe to log and store; the caller decides what it means.
    problems: tuple[str, ...] = ()

    @property
    def first(self) -> ParsedState:
        return self.items[0]


def parse_root(raw: bytes, expected: str, *, max_bytes: int = DEFAULT_MAX_BYTES) -> ET.Element:
    """Parse an answer safely and check its root element's name (any letter case).

    Raises GatewayProtocolError (transient) for answers that are too large, empty, plain
    text, not well-formed, carry a DTD/entities, or have another root. The reason never
    quotes the answer.
    """
    if len(raw) > max_bytes:
        raise GatewayProtocolError(f"answer larger than {max_bytes} bytes")
    data = prepare_xml(raw)
    if not data:
        raise GatewayProtocolError("empty answer")
    if not data.startswith(b"<"):
        raise GatewayProtocolError("answer is plain text, not XML")
    try:
        root = safe_fromstring(data)
    except UnsafeXMLError as exc:
        raise GatewayProtocolError(str(exc)) from None
    except ValueError as exc:
        recoded = _undeclared_8bit(data)
        if recoded is None:
            raise GatewayProtocolError(f"answer is {exc}") from None
        try:
            root = safe_fromstring(recoded)
        except ValueError:
            raise GatewayProtocolError(f"answer is {exc}") from None
    name = _local(root.tag)
    if name != expected:
        raise GatewayProtocolError(f"answer root is <{name[:30]}>, not <{expected}>")
    return root


def parse_answer(raw: bytes, *, max_bytes: int = DEFAULT_MAX_BYTES) -> ParsedAnswer:
    """Parse any answer shape the gateway is known to send.

    Raises GatewayProtocolError (transient) for answers that are too large, not XML,
    carry a DTD/entities, have another root than ``<status>`` (e.g. ``<error>``), lack a
    ``<state>``, or name an unknown status. The reason never quotes the answer.
    """
    root = parse_root(raw, "status", max_bytes=max_bytes)

    ids: list[str | None] = []
    problems: list[str] = []

    def usable_id(value: str | None) -> str | None:
        if value is not None and len(value) > MAX_GATEWAY_ID_LENGTH:
            problems.append(
                f"gateway id of {len(value)} characters refused (at most "
                f"{MAX_GATEWAY_ID_LENGTH}): the message cannot be polled"
            )
            return None
        return value

    attr_id = usable_id(_clean(root.get("id")))
    if attr_id is not None:
        ids.append(attr_id)
    states: list[tuple[GatewayStatus, str | None]] = []
    for child in root:
        child_name = _local(child.tag)
        if child_name == "id":
            raw_child_id = _clean(child.text)
            child_id = usable_id(raw_child_id)
            if child_id is None and raw_child_id is not None:
                ids.append(None)  # keeps ids and states paired
            elif child_id is not None and child_id not in ids:
                ids.append(child_id)
        elif child_name == "state":
            try:
                status = GatewayStatus.parse(child.text or "")
            except ValueError:
                raise GatewayProtocolError("answer has an unknown status word") from None
            states.append((status, _clean(child.get("error"))))
    if not states:
        raise GatewayProtocolError("answer has no <state>")
    if len(states) == 1 and len(ids) > 1:
        # One state for a whole group applies to each of its ids.
        states = states * len(ids)
    if not ids:
        ids = [None] * len(states)
    if len(ids) != len(states):
        raise GatewayProtocolError(f"answer has {len(ids)} ids but {len(states)} states")

    date_raw = root.get("date")
    date = parse_gateway_date(date_raw)
    if date is None and date_raw and date_raw.strip():
        problems.append(f"gateway date {date_raw.strip()[:64]!r} unreadable; time of answer used")
    return ParsedAnswer(
        items=tuple(
            ParsedState(gid, status, error)
            for gid, (status, error) in zip(ids, states, strict=True)
        ),
        date=date,
        date_raw=date_raw,
        group_id=_clean(root.get("groupid")),
        ext_id=_clean(root.get("ext_id")),
        problems=tuple(problems),
    )


def build_answer(
    items: Sequence[ParsedState] | Iterable[ParsedState],
    *,
    date: str,
    group_id: str | None = None,
    ext_id: str | None = None,
) -> bytes:
    """A ``<status>`` answer as the gateway writes it (for the simulator).

    One item with an id puts the id in an attribute; several items are a group answer
    with ``<id>`` children followed by ``<state>`` children.
    """
    items = list(items)
    attrs: dict[str, str] = {}
    group = len(items) > 1
    if group and group_id is not None:
        attrs["groupid"] = group_id
    if not group and items and items[0].gateway_id is not None:
        attrs["id"] = items[0].gateway_id
    attrs["date"] = date
    if ext_id is not None:
        attrs["ext_id"] = check_xml_text(ext_id, "ext_id")
    root = ET.Element("status", attrs)
    if group:
        for item in items:
            if item.gateway_id is not None:
                ET.SubElement(root, "id").text = item.gateway_id
    for item in items:
        state = ET.SubElement(root, "state", {} if item.error is None else {"error": item.error})
        state.text = item.status.value
    return xml_bytes(root)


__all__ = [
    "DEFAULT_MAX_BYTES",
    "FALLBACK_ENCODING",
    "MAX_GATEWAY_ID_LENGTH",
    "ParsedAnswer",
    "ParsedState",
    "RequestParseError",
    "SendRequest",
    "UnsafeXMLError",
    "build_answer",
    "build_send_xml",
    "build_status_xml",
    "check_xml_text",
    "describe_invalid_xml_char",
    "first_invalid_xml_char",
    "format_gateway_date",
    "parse_answer",
    "parse_gateway_date",
    "parse_send_request",
    "parse_status_request",
]

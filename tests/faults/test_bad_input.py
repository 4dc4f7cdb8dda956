"""Bad input, generated: enqueue refuses it cleanly, the parser never lets anything but a
GatewayError escape, and garbage rows of the SQL route end explained in the log."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from sqlalchemy import delete, func, insert, select

from sms_pipeline import InvalidMessage, enqueue_sms
from sms_pipeline.db import session_scope
from sms_pipeline.db.models import MESSAGE_TYPES, SendStatus, SmsLog, SmsQueue
from sms_pipeline.errors import OptedOut
from sms_pipeline.gateway import GatewayError
from sms_pipeline.gateway.codec import parse_answer

FUZZ = settings(
    max_examples=200,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
# Every code point, lone surrogates and NUL included.
any_text = st.text(st.characters(codec=None, exclude_categories=()), max_size=300)
phone_like = st.one_of(
    any_text,
    st.from_regex(r"\A\+?[0-9 ()\-]{0,24}\Z"),
    st.sampled_from(["+380931234567", "380931234567", "+12025550123", "+1", "+"]),
    st.integers(),
    st.none(),
)
optional_text = st.one_of(st.none(), any_text, st.integers(), st.binary(max_size=10))


def _rows() -> int:
    with session_scope() as session:
        return int(session.scalar(select(func.count()).select_from(SmsLog)) or 0)


@pytest.fixture
def no_publish(monkeypatch: pytest.MonkeyPatch) -> None:
    from sms_pipeline.services import outbox

    monkeypatch.setattr(outbox, "publish", lambda dispatches: 0)


@FUZZ
@given(
    phone_number=phone_like,
    body=st.one_of(any_text, st.text(min_size=150, max_size=2000), st.none(), st.integers()),
    message_type=st.one_of(st.sampled_from(MESSAGE_TYPES), any_text, st.none()),
    priority=st.one_of(st.integers(), st.booleans(), st.floats(), st.none(), any_text),
    send_at=st.one_of(
        st.none(),
        st.datetimes(timezones=st.just(dt.UTC)),
        st.datetimes(),
        any_text,
    ),
    sender_id=optional_text,
    ext_id=optional_text,
    customer_id=optional_text,
    cost_centre=optional_text,
    account=st.one_of(st.none(), any_text, st.integers()),
)
def test_enqueue_refuses_bad_input_with_invalid_message_and_stores_nothing(
    db: Any,
    no_publish: None,
    phone_number: Any,
    body: Any,
    message_type: Any,
    priority: Any,
    send_at: Any,
    sender_id: Any,
    ext_id: Any,
    customer_id: Any,
    cost_centre: Any,
    account: Any,
) -> None:
    before = _rows()
    try:
        enqueue_sms(
            phone_number,
            body,
            message_type,
            account=account,
            priority=priority,
            send_at=send_at,
            sender_id=sender_id,
            ext_id=ext_id,
            customer_id=customer_id,
            cost_centre=cost_centre,
        )
    except InvalidMessage:
        assert _rows() == before, "a refused message left a row behind"
    except OptedOut:
        assert _rows() == before + 1  # stored as OPTED OUT by design
    else:
        assert _rows() == before + 1


xml_piece = st.sampled_from(
    [
        "<status",
        "</status>",
        ">",
        ' id="1"',
        " id=''",
        ' date="Fri, 06 Sep 2013 19:11:16 +0300"',
        ' date="garbage"',
        "<state>",
        "</state>",
        '<state error="Invalid abonent number">',
        "Accepted",
        "Rejected",
        "Delivered",
        "Nonsense",
        "<id>",
        "</id>",
        "8072817",
        "<!DOCTYPE status [<!ENTITY a 'x'>]>",
        "&a;",
        "<?xml version='1.0'?>",
        "<error>",
        "\x00",
        "\ufeff",
        "]]>",
        "<![CDATA[",
    ]
)


@FUZZ
@given(
    raw=st.one_of(
        st.binary(max_size=2000),
        st.lists(xml_piece, max_size=30).map(lambda parts: "".join(parts).encode()),
        any_text.map(lambda t: t.encode("utf-8", "surrogatepass")),
    )
)
def test_parse_answer_raises_only_gateway_errors(raw: bytes) -> None:
    try:
        answer = parse_answer(raw)
    except GatewayError:
        return
    assert answer.items  # a parsed answer always has at least one state


# No NUL and no lone surrogates: PostgreSQL text cannot hold them, so no row carries them.
stored_text = st.text(st.characters(codec="utf-8", exclude_characters="\x00"), max_size=400)
GARBAGE_ROWS = [
    ("", "hello", "text", "number invalid"),
    ("not a number", "hello", "text", "number invalid"),
    ("+1", "hello", "text", "number invalid"),
    ("9" * 64, "hello", "text", "number invalid"),
    ("+380931234567", "", "text", "data1 invalid"),
    ("+380931234567", "   \n\t ", "text", "data1 invalid"),
    ("+380931234567", "bell \x07 ring", "text", "data1 invalid"),
    ("+380931234567", "x" * 5000, "text", "data1 invalid"),
    ("+380931234567", "hello", "fax", "data1 invalid"),
    ("+380931234567", "hello", "text", "QUEUED"),
]


def _ingest(rows: list[dict[str, Any]]) -> dict[int, SmsLog]:
    from sms_pipeline.services.accounts import get_or_create_default_account
    from sms_pipeline.services.sql_route import ingest_account_queue

    with session_scope() as session:
        account_id = get_or_create_default_account(session).id
        session.execute(delete(SmsQueue))
        queue_ids = list(
            session.scalars(
                insert(SmsQueue).returning(SmsQueue.id),
                [{"account_id": account_id, **row} for row in rows],
            )
        )
    ingest_account_queue(account_id)
    with session_scope() as session:
        assert session.scalar(select(func.count()).select_from(SmsQueue)) == 0
        found = {
            m.queue_id: m
            for m in session.scalars(select(SmsLog).where(SmsLog.queue_id.in_(queue_ids)))
        }
    assert found.keys() == set(queue_ids), "a queue row vanished"  # ids are unique
    return {queue_id: found[queue_id] for queue_id in queue_ids}


def test_sql_route_garbage_rows_end_as_number_or_data1_invalid(db: Any, no_publish: None) -> None:
    rows = [{"num_to": n, "data1": d, "message_type": t} for n, d, t, _ in GARBAGE_ROWS]
    messages = list(_ingest(rows).values())
    for message, (_, _, _, expected) in zip(messages, GARBAGE_ROWS, strict=True):
        assert message.send_status == expected, (message.send_status, message.last_error)
        if expected != "QUEUED":
            assert message.last_error and message.final_at is not None


@FUZZ
@given(
    rows=st.lists(
        st.fixed_dictionaries(
            {
                "num_to": st.one_of(stored_text.map(lambda t: t[:64]), st.just("+380931234567")),
                "data1": stored_text,
                "message_type": st.sampled_from([*MESSAGE_TYPES, "fax", ""]),
            }
        ),
        min_size=1,
        max_size=5,
    )
)
def test_sql_route_never_loses_or_crashes_on_fuzzed_rows(
    db: Any, no_publish: None, rows: list[dict[str, Any]]
) -> None:
    for message in _ingest(rows).values():
        assert message.send_status in (
            SendStatus.QUEUED.value,
            SendStatus.NUMBER_INVALID.value,
            SendStatus.DATA1_INVALID.value,
            SendStatus.SUPERSEDED.value,  # a newer code to the same number (docs/privacy.md)
        )
        if message.send_status != SendStatus.QUEUED.value:
            assert message.last_error


@FUZZ
@given(
    field=st.sampled_from(
        ["phone_number", "body", "sender_id", "ext_id", "customer_id", "cost_centre", "priority"]
    ),
    value=st.one_of(any_text, st.integers(min_value=-(2**70), max_value=2**70)),
)
def test_enqueue_one_bad_field_among_good_ones_is_refused_cleanly(
    db: Any, no_publish: None, field: str, value: Any
) -> None:
    good: dict[str, Any] = {"phone_number": "+380931234567", "body": "hello"}
    good[field] = value
    before = _rows()
    try:
        enqueue_sms(**good)
    except InvalidMessage:
        assert _rows() == before
    else:
        assert _rows() == before + 1


@FUZZ
@given(
    send_at=st.datetimes(
        timezones=st.builds(
            dt.timezone,
            st.timedeltas(min_value=dt.timedelta(hours=-23), max_value=dt.timedelta(hours=23)),
        ),
    )
)
@example(send_at=dt.datetime(9999, 12, 31, 23, 59, 59, tzinfo=dt.UTC))  # OverflowError once
@example(send_at=dt.datetime(9999, 12, 31, 23, 0, tzinfo=dt.timezone(-dt.timedelta(hours=5))))
@example(send_at=dt.datetime(1, 1, 1, 0, 0, tzinfo=dt.timezone(dt.timedelta(hours=5))))
def test_any_send_at_is_stored_or_refused_with_invalid_message_only(
    db: Any, no_publish: None, send_at: dt.datetime
) -> None:
    # Year 9999 in any offset, year 1, and everything between: only InvalidMessage escapes.
    before = _rows()
    field = None
    try:
        enqueue_sms("+380931234567", "hello", send_at=send_at)
    except InvalidMessage as refused:
        field = refused.field
    assert (field, _rows()) in {(None, before + 1), ("send_at", before)}

"""Inbound side end to end: simulator inbound API, polling, linking, opt-out, opt-in.

Real PostgreSQL and the gateway simulator (with the inbound routes registered); the
Celery worker only where the task itself is under test.
"""

from __future__ import annotations

import argparse
import datetime as dt
from collections.abc import Iterator
from typing import Any

import pytest
import requests
from sqlalchemy import func, select, update

from sms_pipeline import OptedOut, enqueue_sms, record_inbound
from sms_pipeline.db import session_scope
from sms_pipeline.db.models import Account, OptOut, SendStatus, SmsLog, SmsReply, SmsShortcode
from sms_pipeline.gateway import GatewayAuthError, GatewayHTTPError, GatewayProtocolError
from sms_pipeline.gateway.codec import RequestParseError
from sms_pipeline.gateway.inbound import (
    InboundClient,
    InboundItem,
    build_page_answer,
    build_page_request,
    parse_page,
    parse_page_request,
)
from sms_pipeline.services.accounts import get_or_create_default_account
from sms_pipeline.services.inbound import poll as inbound_service
from sms_pipeline.services.masking import mask_phone
from sms_pipeline.simulator import SimulatorConfig
from sms_pipeline.simulator.inbound import register_inbound
from sms_pipeline.simulator.runner import SimulatorServer
from tests.helpers import SimClock, attempt_send
from tests.support import wait_until

NUMBER = "+380931234567"
OTHER = "+380931234568"


class InboundSim:
    def __init__(self, base_url: str, clock: SimClock) -> None:
        self.base_url = base_url
        self.clock = clock
        self.http = requests.Session()

    def post(self, path: str, payload: dict[str, Any]) -> dict[str, Any]:
        answer = self.http.post(self.base_url + path, json=payload, timeout=5)
        answer.raise_for_status()
        result: dict[str, Any] = answer.json()
        return result

    def reply(self, gateway_id: str, text: str) -> int:
        return int(self.post("/_sim/replies", {"gateway_id": gateway_id, "text": text})["id"])

    def shortcode(self, text: str, num_from: str = NUMBER, keyword: str | None = "HEALTH") -> int:
        payload = {"shortcode": "31234", "keyword": keyword, "num_from": num_from, "text": text}
        return int(self.post("/_sim/shortcodes", payload)["id"])


@pytest.fixture
def inbound_sim(settings_env: Any) -> Iterator[InboundSim]:
    """A simulator with the inbound API; every IP2SMS URL points at it."""
    config = SimulatorConfig(
        port=0, enroute_after=0.1, deliver_after=0.2, extra_routes=(register_inbound,)
    )
    with SimulatorServer(config) as server:
        clock = server.state.clock = SimClock()
        base_url = server.base_url
        settings_env(
            IP2SMS_SEND_URL=f"{base_url}/ip2sms/",
            IP2SMS_STATUS_URL=f"{base_url}/ip2sms-request/",
            IP2SMS_INBOUND_URL=f"{base_url}/ip2sms-inbound/",
            IP2SMS_LOGIN="demo",
            IP2SMS_PASSWORD="demo",
        )
        yield InboundSim(base_url, clock)


def set_intervals(replies: int = 1, shortcodes: int = 0) -> int:
    with session_scope() as session:
        account = get_or_create_default_account(session)
        account.get_replies_interval = replies
        account.get_sc_interval = shortcodes
        return account.id


def account_row(account_id: int) -> Account:
    with session_scope() as session:
        account = session.get(Account, account_id)
        assert account is not None
        return account


def make_due(account_id: int) -> None:
    """Pretend the last round was long ago (the next poll is due)."""
    past = dt.datetime.now(dt.UTC) - dt.timedelta(hours=1)
    with session_scope() as session:
        session.execute(
            update(Account)
            .where(Account.id == account_id)
            .values(last_process_replies=past, last_process_sc=past)
        )


def count(model: Any) -> int:
    with session_scope() as session:
        return int(session.scalar(select(func.count()).select_from(model)) or 0)


def sent_message(number: str = NUMBER, customer_id: str | None = None) -> SmsLog:
    """A text really submitted to the simulator (one attempt, run here: no kick is published,
    so a running worker does not drain it first)."""
    from unittest import mock

    from sms_pipeline.services import outbox

    with mock.patch.object(outbox, "publish", return_value=0):
        message_id = enqueue_sms(number, "Your appointment is at 10:00", customer_id=customer_id)
    assert attempt_send(message_id).outcome == "submitted"
    with session_scope() as session:
        row = session.get(SmsLog, message_id)
        assert row is not None and row.gateway_id
        return row


def is_opted_out(number: str) -> bool:
    with session_scope() as session:
        return session.get(OptOut, number) is not None


# --------------------------------------------------------------------------- protocol


def test_page_request_round_trips_and_caps_the_limit() -> None:
    assert parse_page_request(build_page_request("replies", 42, 100)) == ("replies", 42, 100)
    assert parse_page_request(build_page_request("shortcodes", 0, 5000)) == ("shortcodes", 0, 100)
    with pytest.raises(RequestParseError):
        parse_page_request(b"<request after='x'>replies</request>")
    with pytest.raises(RequestParseError):
        parse_page_request(b"<request>status</request>")


def test_page_answer_round_trips_text_exactly_and_drops_ids_not_above_after() -> None:
    items = [
        InboundItem("replies", 7, NUMBER, " </reply> & <b>STOP</b> ", in_reply_to="123"),
        InboundItem("replies", 8, OTHER, "Дякую"),
    ]
    raw = build_page_answer("replies", items, date="Wed, 28 Mar 2007 12:35:00 +0300")
    parsed = parse_page(raw, "replies", after=7).items
    assert [(i.id, i.phone_number, i.text) for i in parsed] == [(8, OTHER, "Дякую")]
    first = parse_page(raw, "replies").items[0]
    assert first.text == " </reply> & <b>STOP</b> " and first.in_reply_to == "123"


@pytest.mark.parametrize(
    "raw",
    [
        b"Request not recognized - xml parse failed",
        b"<error>bad</error>",
        b"<shortcodes/>",
        b'<!DOCTYPE r [<!ENTITY a "aaaa">]><replies><reply id="1" from="+1">&a;</reply></replies>',
    ],
)
def test_answers_that_are_not_a_page_are_protocol_errors(raw: bytes) -> None:
    with pytest.raises(GatewayProtocolError):
        parse_page(raw, "replies")


def test_client_sorts_gateway_failures_into_gateway_errors(inbound_sim: InboundSim) -> None:
    bad_password = InboundClient(f"{inbound_sim.base_url}/ip2sms-inbound/", "demo", "wrong")
    with pytest.raises(GatewayAuthError) as auth:
        bad_password.replies(0)
    assert auth.value.permanent
    # A misconfigured IP2SMS_INBOUND_URL: the gateway has no such page.
    wrong_url = InboundClient(f"{inbound_sim.base_url}/nowhere/", "demo", "demo")
    with pytest.raises(GatewayHTTPError) as missing:
        wrong_url.fetch("replies", 0)
    assert missing.value.status_code == 404
    assert "wrong" not in repr(bad_password)


def test_simulator_refuses_a_reply_to_an_unknown_message(inbound_sim: InboundSim) -> None:
    answer = inbound_sim.http.post(
        inbound_sim.base_url + "/_sim/replies",
        json={"gateway_id": "999", "text": "hi"},
        timeout=5,
    )
    assert answer.status_code == 404


# --------------------------------------------------------------------------- polling


def test_reply_is_linked_to_its_message_and_inherits_customer_id(
    db: Any, redis_url: str, inbound_sim: InboundSim
) -> None:
    account_id = set_intervals(replies=1)
    message = sent_message(customer_id="patient-42")
    inbound_sim.reply(message.gateway_id or "", "Thanks, see you")

    result = inbound_service.poll_inbound()

    assert (result.polled, result.pages, result.stored) == (1, 1, 1)
    with session_scope() as session:
        reply = session.scalars(select(SmsReply)).one()
        assert reply.message_id == message.id
        assert reply.customer_id == "patient-42"
        assert reply.phone_number == NUMBER
        assert reply.received_data == "Thanks, see you"
        assert reply.gateway_reply_id == 1
        assert not reply.opt_out and not reply.opt_in
    account = account_row(account_id)
    assert account.max_replies_id == 1
    assert account.last_process_replies is not None
    assert not is_opted_out(NUMBER)


def test_full_pages_are_fetched_again_at_once(
    db: Any, redis_url: str, inbound_sim: InboundSim
) -> None:
    account_id = set_intervals(replies=1)
    message = sent_message()
    for n in range(250):
        inbound_sim.reply(message.gateway_id or "", f"reply {n}")

    result = inbound_service.poll_inbound()

    assert (result.pages, result.fetched, result.stored) == (3, 250, 250)
    assert count(SmsReply) == 250
    assert account_row(account_id).max_replies_id == 250
    # Next round: one empty page, nothing new.
    make_due(account_id)
    again = inbound_service.poll_inbound()
    assert (again.pages, again.stored) == (1, 0)


def test_crash_between_fetch_and_commit_refetches_without_duplicates(
    db: Any, redis_url: str, inbound_sim: InboundSim, monkeypatch: pytest.MonkeyPatch
) -> None:
    account_id = set_intervals(replies=1)
    message = sent_message()
    for n in range(150):
        inbound_sim.reply(message.gateway_id or "", f"reply {n}")
    real_advance = inbound_service._advance_mark
    calls = []

    def crash_on_second_page(session: Any, acct: int, kind: Any, to: int, key: str) -> None:
        calls.append(to)
        real_advance(session, acct, kind, to, key)  # rows and mark written, not yet committed
        if len(calls) == 2:
            raise RuntimeError("worker killed before commit")

    monkeypatch.setattr(inbound_service, "_advance_mark", crash_on_second_page)
    with pytest.raises(RuntimeError):
        inbound_service.poll_account(account_id, "replies")
    # The first page committed with its mark; the second rolled back, rows and mark.
    assert count(SmsReply) == 100
    assert account_row(account_id).max_replies_id == 100

    monkeypatch.setattr(inbound_service, "_advance_mark", real_advance)
    result = inbound_service.poll_account(account_id, "replies")
    assert result.stored == 50
    assert count(SmsReply) == 150
    assert account_row(account_id).max_replies_id == 150

    # Even a mark lost altogether stores nothing twice: the gateway id is unique.
    with session_scope() as session:
        session.execute(update(Account).where(Account.id == account_id).values(max_replies_id=0))
    replay = inbound_service.poll_account(account_id, "replies")
    assert (replay.fetched, replay.stored) == (150, 0)
    assert count(SmsReply) == 150
    assert account_row(account_id).max_replies_id == 150


def test_interval_zero_disables_polling_and_intervals_are_respected(
    db: Any, redis_url: str, inbound_sim: InboundSim
) -> None:
    account_id = set_intervals(replies=0, shortcodes=0)
    message = sent_message()
    inbound_sim.reply(message.gateway_id or "", "hello")
    inbound_sim.shortcode("HEALTH yes")

    assert inbound_service.poll_inbound().polled == 0
    assert count(SmsReply) == 0 and count(SmsShortcode) == 0
    assert account_row(account_id).last_process_replies is None

    set_intervals(replies=5, shortcodes=0)
    assert inbound_service.poll_inbound().stored == 1
    # Polled a moment ago, interval 5 minutes: not due.
    assert inbound_service.poll_inbound().polled == 0
    make_due(account_id)
    assert inbound_service.poll_inbound().polled == 1
    assert count(SmsShortcode) == 0  # shortcodes still off


def test_shortcode_messages_are_stored_and_stop_opts_out(
    db: Any, redis_url: str, inbound_sim: InboundSim
) -> None:
    account_id = set_intervals(replies=0, shortcodes=1)
    inbound_sim.shortcode("HEALTH yes")
    inbound_sim.shortcode("Stop!", num_from=OTHER, keyword=None)

    result = inbound_service.poll_inbound()

    assert (result.stored, result.opt_outs) == (2, 1)
    with session_scope() as session:
        rows = session.scalars(select(SmsShortcode).order_by(SmsShortcode.gateway_sc_id)).all()
        assert [(r.shortcode, r.keyword, r.num_from, r.data, r.opt_out) for r in rows] == [
            ("31234", "HEALTH", NUMBER, "HEALTH yes", False),
            ("31234", None, OTHER, "Stop!", True),
        ]
        opt_out = session.get(OptOut, OTHER)
        assert opt_out is not None and opt_out.source == "shortcode" and opt_out.keyword == "stop"
    assert account_row(account_id).max_sc_id == 2
    assert not is_opted_out(NUMBER)


def test_inbound_poll_task_runs_on_the_worker(worker: Any, inbound_sim: InboundSim) -> None:
    from sms_pipeline.broker.app import INBOUND_POLL_TASK, app

    set_intervals(replies=1)
    message = sent_message()
    inbound_sim.reply(message.gateway_id or "", "СТОП")
    app.send_task(INBOUND_POLL_TASK)
    wait_until(lambda: count(SmsReply) > 0, 60, "the worker to store the reply", 0.1)
    assert is_opted_out(NUMBER)


def test_simulator_auto_replies_to_delivered_messages(
    db: Any, redis_url: str, inbound_sim: InboundSim
) -> None:
    inbound_sim.post(
        "/_sim/inbound/config",
        {"auto_reply_probability": 1.0, "auto_reply_texts": ["STOP"], "seed": 1},
    )
    set_intervals(replies=1)
    message = sent_message()
    inbound_sim.clock.advance(0.3)  # past the simulator's deliver_after
    result = inbound_service.poll_inbound()
    assert (result.stored, result.opt_outs) == (1, 1)
    with session_scope() as session:
        reply = session.scalars(select(SmsReply)).one()
        assert reply.message_id == message.id and reply.opt_out


# --------------------------------------------------------------------------- opt-out


@pytest.mark.parametrize("word", [" stop ", "Stop!", "стоп", "ВІДПИСКА", "STOP ALL"])
def test_opt_out_words_mark_the_number(db: Any, word: str) -> None:
    row_id = record_inbound(NUMBER, word)
    assert is_opted_out(NUMBER)
    with session_scope() as session:
        reply = session.get(SmsReply, row_id)
        assert reply is not None and reply.opt_out and not reply.opt_in


def test_an_ordinary_reply_changes_nothing(db: Any) -> None:
    record_inbound(NUMBER, "Stop sending me reminders please, I moved")
    assert not is_opted_out(NUMBER)


@pytest.mark.parametrize("word", ["start", "СТАРТ", " Start! "])
def test_opt_in_words_reverse_an_opt_out(db: Any, word: str) -> None:
    record_inbound(NUMBER, "STOP")
    assert is_opted_out(NUMBER)
    row_id = record_inbound(NUMBER, word)
    assert not is_opted_out(NUMBER)
    with session_scope() as session:
        reply = session.get(SmsReply, row_id)
        assert reply is not None and reply.opt_in and not reply.opt_out


def test_opted_out_number_gets_no_text_but_still_gets_essential_messages(
    db: Any, redis_url: str
) -> None:
    record_inbound(NUMBER, "СТОП")

    with pytest.raises(OptedOut) as refused:
        enqueue_sms(NUMBER, "Our clinic has new hours", "text")
    for essential in ("verification", "2FA", "medication_request"):
        enqueue_sms(NUMBER, "Your code is 123456", essential)
    enqueue_sms(OTHER, "Our clinic has new hours", "text")  # other numbers unaffected

    with session_scope() as session:
        text_row = session.get(SmsLog, refused.value.message_id)
        assert text_row is not None
        assert text_row.send_status == SendStatus.OPTED_OUT.value
        assert text_row.final_at is not None and text_row.dispatched_at is None
        rows = session.execute(
            select(SmsLog.type, SmsLog.send_status).where(SmsLog.phone_number == NUMBER)
        ).all()
        statuses = {row.type: row.send_status for row in rows}
    assert statuses == {
        "text": "OPTED OUT",
        "verification": "QUEUED",
        "2FA": "QUEUED",
        "medication_request": "QUEUED",
    }

    record_inbound(NUMBER, "start")
    enqueue_sms(NUMBER, "Our clinic has new hours", "text")  # no longer refused


def test_queued_text_is_not_sent_when_the_number_opts_out_before_sending(
    db: Any, redis_url: str, inbound_sim: InboundSim
) -> None:
    text_id = enqueue_sms(NUMBER, "Our clinic has new hours", "text")
    code_id = enqueue_sms(NUMBER, "Your code is 123456", "verification")
    record_inbound(NUMBER, "Stop!")

    assert attempt_send(text_id).outcome == "opted_out"
    assert attempt_send(code_id).outcome == "submitted"
    assert attempt_send(text_id).outcome == "skipped"  # a second delivery of the task

    with session_scope() as session:
        text_row = session.get(SmsLog, text_id)
        assert text_row is not None
        assert text_row.send_status == SendStatus.OPTED_OUT.value
        assert text_row.final_at is not None and text_row.attempts == 0
        assert text_row.gateway_id is None
    submissions = inbound_sim.http.get(
        inbound_sim.base_url + "/_sim/submissions", params={"uniq_key": text_id.hex}, timeout=5
    ).json()
    assert submissions["submissions"] == 0


# --------------------------------------------------------------------------- push API


def test_record_inbound_stores_a_pushed_reply_once_and_links_it(
    db: Any, redis_url: str, inbound_sim: InboundSim
) -> None:
    message = sent_message(customer_id="c-7")
    when = dt.datetime(2030, 1, 1, 12, 0, tzinfo=dt.UTC)
    first = record_inbound(
        "380931234567",
        "ok",
        gateway_reply_id=555,
        in_reply_to_gateway_id=message.gateway_id,
        received_at=when,
    )
    again = record_inbound(
        NUMBER, "ok", gateway_reply_id=555, in_reply_to_gateway_id=message.gateway_id
    )
    assert first == again
    with session_scope() as session:
        reply = session.scalars(select(SmsReply)).one()
        assert reply.id == first and reply.message_id == message.id
        assert reply.customer_id == "c-7" and reply.received_at == when
        assert reply.phone_number == NUMBER  # normalised to E.164


def test_record_inbound_stores_shortcode_messages_and_joins_a_session(db: Any) -> None:
    with session_scope() as session:
        row_id = record_inbound(
            NUMBER, "", shortcode="31234", keyword="STOP", gateway_reply_id=9, session=session
        )
    with session_scope() as session:
        row = session.get(SmsShortcode, row_id)
        assert row is not None and row.gateway_sc_id == 9 and row.opt_out
    assert is_opted_out(NUMBER)  # keyword-routed STOP with no text


@pytest.mark.parametrize(
    ("args", "kwargs"),
    [
        (("", "hi"), {}),
        ((NUMBER, None), {}),
        ((NUMBER, "hi"), {"gateway_reply_id": 0}),
        ((NUMBER, "hi"), {"received_at": dt.datetime(2030, 1, 1)}),
        ((NUMBER, "hi"), {"account": "no-such-account"}),
    ],
)
def test_record_inbound_refuses_bad_arguments(db: Any, args: Any, kwargs: Any) -> None:
    from sms_pipeline import InvalidMessage

    with pytest.raises(InvalidMessage):
        record_inbound(*args, **kwargs)
    assert count(SmsReply) == 0


# --------------------------------------------------------------------------- CLI


def test_inbound_list_masks_numbers_and_hides_texts_by_default(
    db: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    from sms_pipeline.cli import inbound as cli

    record_inbound(NUMBER, "my secret answer")
    record_inbound(OTHER, "STOP", shortcode="31234", keyword="HEALTH")
    parser = argparse.ArgumentParser()
    cli.register(parser.add_subparsers())

    args = parser.parse_args(["inbound", "list", "--since", "1h"])
    assert args.func(args) == 0
    out = capsys.readouterr().out
    assert NUMBER not in out and OTHER not in out
    assert mask_phone(NUMBER) in out and "my secret answer" not in out
    assert "OPT-OUT" in out and "31234 HEALTH" in out

    args = parser.parse_args(["inbound", "list", "--text", "--limit", "1"])
    assert args.func(args) == 0
    out = capsys.readouterr().out
    assert out.count("\n") == 1 and "STOP" in out  # newest first


def test_parse_since_accepts_durations_and_zoned_times() -> None:
    from sms_pipeline.cli.inbound import parse_since

    now = dt.datetime(2030, 1, 2, tzinfo=dt.UTC)
    assert parse_since("24h", now) == now - dt.timedelta(hours=24)
    assert parse_since("30m", now) == now - dt.timedelta(minutes=30)
    assert parse_since("2030-01-01T00:00+00:00", now) == dt.datetime(2030, 1, 1, tzinfo=dt.UTC)
    with pytest.raises(argparse.ArgumentTypeError):
        parse_since("yesterday", now)
    with pytest.raises(argparse.ArgumentTypeError):
        parse_since("2030-01-01T00:00", now)


# --------------------------------------------------------------------------- per gateway


def add_gateway(name: str, server: SimulatorServer, password_ref: str, active: bool) -> None:
    from sqlalchemy import text

    from sms_pipeline.db import get_engine

    with get_engine().begin() as conn:
        conn.execute(
            text(
                "INSERT INTO verification.gateways (name, send_url, status_url, inbound_url, "
                "login, password_ref, active) VALUES (:n, :s, :t, :i, :l, :p, :a)"
            ),
            {
                "n": name, "s": server.send_url, "t": server.status_url,
                "i": server.base_url + "/ip2sms-inbound/", "l": server.config.login,
                "p": password_ref, "a": active,
            },
        )  # fmt: skip


@pytest.fixture
def fresh_gateways() -> Iterator[None]:
    """No process-wide copy of the gateways table from another test, before or after."""
    from sms_pipeline.services import gateways as registry

    registry.forget()
    yield
    registry.forget()


def set_active(name: str, active: bool) -> None:
    from sqlalchemy import text

    from sms_pipeline.db import get_engine
    from sms_pipeline.services import gateways as registry

    with get_engine().begin() as conn:
        conn.execute(
            text("UPDATE verification.gateways SET active = :a WHERE name = :n"),
            {"a": active, "n": name},
        )
    registry.forget()


def test_each_gateway_is_polled_with_its_login_and_its_own_mark(
    db: Any, redis_url: str, settings_env: Any, fresh_gateways: None
) -> None:
    """Two gateways number their replies independently (both start at 1): each is polled
    with its own login, both sets stored, none mistaken for the other's, a second poll
    stores nothing twice, and each gateway's mark moves on its own."""
    from sqlalchemy import text

    from sms_pipeline.db import get_engine
    from sms_pipeline.services import gateways as registry

    configs = {
        name: SimulatorConfig(
            port=0, login=f"gw-{name}", password=f"p{name}", enroute_after=0.1,
            deliver_after=0.2, extra_routes=(register_inbound,),
        )
        for name in ("a", "b")
    }  # fmt: skip
    with SimulatorServer(configs["a"]) as sim_a, SimulatorServer(configs["b"]) as sim_b:
        settings_env(GW_A_PW="pa", GW_B_PW="pb", IP2SMS_LOGIN="nobody", IP2SMS_PASSWORD="no")
        registry.forget()
        add_gateway("a", sim_a, "GW_A_PW", active=True)
        add_gateway("b", sim_b, "GW_B_PW", active=False)
        registry.forget()
        to_a = sent_message(NUMBER)
        set_active("a", False)
        set_active("b", True)
        to_b = sent_message(OTHER)
        set_active("a", True)
        assert (to_a.gateway, to_b.gateway) == ("a", "b")
        sims = {
            name: InboundSim(server.base_url, SimClock())
            for name, server in (("a", sim_a), ("b", sim_b))
        }
        ids_a = [sims["a"].reply(to_a.gateway_id or "", t) for t in ("yes", "thanks", "STOP")]
        ids_b = [sims["b"].reply(to_b.gateway_id or "", t) for t in ("no", "later")]
        assert ids_a[:2] == ids_b == [1, 2]  # the ids collide across gateways
        account_id = set_intervals(replies=1)

        first = inbound_service.poll_inbound()

        assert (first.polled, first.stored, first.errors) == (2, 5, 0), first.details
        with get_engine().connect() as conn:
            rows = conn.execute(
                text(
                    "SELECT gateway, gateway_reply_id, message_id, received_data "
                    "FROM verification.sms_replies ORDER BY gateway, gateway_reply_id"
                )
            ).all()
            marks: dict[str, int] = dict(
                conn.execute(
                    text(
                        "SELECT gateway, max_id FROM verification.inbound_marks "
                        "WHERE account_id = :a AND kind = 'replies'"
                    ),
                    {"a": account_id},
                ).all()
            )
        assert [(r[0], r[1], r[3]) for r in rows] == [
            ("a", 1, "yes"), ("a", 2, "thanks"), ("a", 3, "STOP"),
            ("b", 1, "no"), ("b", 2, "later"),
        ]  # fmt: skip
        # Each reply is linked to the message the gateway it came from carried.
        assert {str(r[2]) for r in rows if r[0] == "a"} == {str(to_a.id)}
        assert {str(r[2]) for r in rows if r[0] == "b"} == {str(to_b.id)}
        assert marks == {"a": 3, "b": 2}
        assert account_row(account_id).max_replies_id == 0  # the settings' API was not read
        assert is_opted_out(NUMBER) and not is_opted_out(OTHER)
        # Every inbound request carried that gateway's login: none refused.
        assert sim_a.state.stats["auth_failures"] == sim_b.state.stats["auth_failures"] == 0

        make_due(account_id)
        again = inbound_service.poll_inbound()
        assert (again.polled, again.fetched, again.stored) == (2, 0, 0)
        sims["b"].reply(to_b.gateway_id or "", "ok now")
        make_due(account_id)
        third = inbound_service.poll_inbound()
        assert (third.fetched, third.stored) == (1, 1)
        assert count(SmsReply) == 6

        # A mark lost altogether still stores nothing twice: the key holds the gateway.
        with get_engine().begin() as conn:
            conn.execute(text("UPDATE verification.inbound_marks SET max_id = 0"))
        make_due(account_id)
        replay = inbound_service.poll_inbound()
        assert (replay.fetched, replay.stored) == (6, 0)
        assert count(SmsReply) == 6


def test_a_gateway_row_for_the_settings_inbound_api_keeps_the_accounts_mark(
    db: Any, redis_url: str, inbound_sim: InboundSim, fresh_gateways: None
) -> None:
    """Adding the existing gateway as a row re-reads nothing: its inbound URL is the
    settings' own, so the account's mark and rows carry on."""
    from sqlalchemy import text

    from sms_pipeline.db import get_engine
    from sms_pipeline.services import gateways as registry

    account_id = set_intervals(replies=1)
    message = sent_message()
    inbound_sim.reply(message.gateway_id or "", "first")
    assert inbound_service.poll_inbound().stored == 1

    with get_engine().begin() as conn:
        conn.execute(
            text(
                "INSERT INTO verification.gateways (name, send_url, inbound_url, login, "
                "password_ref) VALUES ('main', :s, :i, 'demo', 'IP2SMS_PASSWORD')"
            ),
            {
                "s": inbound_sim.base_url + "/ip2sms/",
                "i": inbound_sim.base_url + "/ip2sms-inbound/",
            },
        )
    registry.forget()
    inbound_sim.reply(message.gateway_id or "", "second")
    make_due(account_id)

    result = inbound_service.poll_inbound()

    assert (result.fetched, result.stored) == (1, 1)
    assert account_row(account_id).max_replies_id == 2
    with session_scope() as session:
        assert sorted(session.scalars(select(SmsReply.gateway))) == ["", ""]

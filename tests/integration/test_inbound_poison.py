"""Inbound polling survives bad items and bad accounts, on PostgreSQL and SQLite.

A page is parsed by the real parser from the bytes a hostile or buggy gateway could send;
the client that returns it is a stand-in (no HTTP needed to show the service's rules).
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.exc import DataError

from sms_pipeline.db import session_scope
from sms_pipeline.db.models import Account, OptOut, SmsReply
from sms_pipeline.gateway.inbound import InboundPage, Kind, parse_page
from sms_pipeline.metrics import catalogue as c
from sms_pipeline.metrics.store import get_store
from sms_pipeline.services.inbound import poll as inbound_service
from sms_pipeline.services.inbound.store import store_inbound
from tests import factories
from tests.backends import backend  # noqa: F401  (the fixture, used by name)

pytestmark = pytest.mark.usefixtures("backend")

NUMBER = "+380931234567"
OTHER = "+380931234568"


def reply(item_id: int | str, text: str, number: str | None = NUMBER) -> str:
    sender = f' from="{number}"' if number is not None else ""
    return f'<reply id="{item_id}"{sender}>{text}</reply>'


class PagedGateway:
    """Serves fixed raw pages per account name; counts fetches; may fail for an account."""

    def __init__(self) -> None:
        self.pages: dict[int, bytes] = {}
        self.fetches: list[tuple[int, int]] = []
        self.broken: set[int] = set()
        self.account_of_next: int = 0

    def fetch_page(self, kind: Kind, after: int, limit: int = 100) -> InboundPage:
        account_id = self.account_of_next
        self.fetches.append((account_id, after))
        if account_id in self.broken:
            raise RuntimeError("a bug, not a gateway error")
        raw = self.pages.get(account_id, b"<replies/>")
        return parse_page(raw, kind, after=after)


def make_account(name: str) -> int:
    return factories.make_account(name, get_replies_interval=1)


def opted_out(number: str) -> bool:
    with session_scope() as session:
        return session.get(OptOut, number) is not None


def skipped_metric() -> float:
    store = get_store()
    store.flush()
    return store.value(c.INBOUND_SKIPPED_TOTAL, {"kind": "replies"})


def test_a_poison_id_next_to_a_stop_cannot_block_the_stop(settings_env: Any) -> None:
    account_id = make_account("poison")
    gateway = PagedGateway()
    gateway.account_of_next = account_id
    gateway.pages[account_id] = (
        "<replies>"
        + reply(2**63, "hi")  # does not fit a BIGINT (nor the mark)
        + reply("x", "hi")  # no numeric id
        + reply(5, "hi", number=None)  # no number
        + reply(7, "STOP")
        + "</replies>"
    ).encode()
    before = skipped_metric()
    result = inbound_service.poll_account(account_id, "replies", client=gateway)  # type: ignore[arg-type]
    assert (result.stored, result.opt_outs, result.skipped) == (1, 1, 3)
    assert opted_out(NUMBER)
    assert skipped_metric() - before == 3
    with session_scope() as session:
        mark = session.scalar(select(Account.max_replies_id).where(Account.id == account_id))
    assert mark == 7  # past every storable id; the poison id stays beyond any mark
    again = inbound_service.poll_account(account_id, "replies", client=gateway)  # type: ignore[arg-type]
    assert (again.stored, again.pages) == (0, 1)


def test_an_item_the_database_refuses_is_skipped_and_the_rest_of_the_page_stored(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    account_id = make_account("refused")
    gateway = PagedGateway()
    gateway.account_of_next = account_id
    gateway.pages[account_id] = (
        "<replies>" + reply(1, "hello") + reply(2, "bad") + reply(3, "STOP") + "</replies>"
    ).encode()
    real_store = store_inbound

    def refusing(session: Any, account: int, item: Any, **kwargs: Any) -> Any:
        if item.id == 2:
            raise DataError("INSERT", {}, Exception("value out of range"))
        return real_store(session, account, item, **kwargs)

    monkeypatch.setattr(inbound_service, "store_inbound", refusing)
    result = inbound_service.poll_account(account_id, "replies", client=gateway)  # type: ignore[arg-type]
    assert (result.stored, result.skipped, result.opt_outs) == (2, 1, 1)
    with session_scope() as session:
        ids = list(
            session.scalars(select(SmsReply.gateway_reply_id).order_by(SmsReply.gateway_reply_id))
        )
    assert ids == [1, 3]
    assert opted_out(NUMBER)


def test_one_accounts_failure_never_stops_the_others(monkeypatch: pytest.MonkeyPatch) -> None:
    broken = make_account("broken")
    healthy = make_account("healthy")
    gateway = PagedGateway()
    gateway.broken.add(broken)
    gateway.pages[healthy] = ("<replies>" + reply(1, "STOP", OTHER) + "</replies>").encode()
    real_poll = inbound_service.poll_account

    def poll(account_id: int, kind: Kind, **kwargs: Any) -> Any:
        gateway.account_of_next = account_id
        return real_poll(account_id, kind, **kwargs)

    monkeypatch.setattr(inbound_service, "poll_account", poll)
    result = inbound_service.poll_inbound(client=gateway, now=dt.datetime.now(dt.UTC))  # type: ignore[arg-type]
    assert result.errors == 1 and result.stored == 1
    assert any("broken" not in d and str(broken) in d for d in result.details)
    assert opted_out(OTHER)

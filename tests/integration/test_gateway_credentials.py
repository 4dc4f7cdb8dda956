"""Each account's own login on each gateway (issue 30): two loopback simulators that accept
only their own logins; an account whose password cannot be found waits, named, and never
sends with another login; status checks go to the gateway that accepted, with the same login."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import select, text

from sms_pipeline import enqueue_many
from sms_pipeline.db import get_engine, session_scope
from sms_pipeline.db.models import SmsLog
from sms_pipeline.services import gateways as registry
from sms_pipeline.services import sending
from sms_pipeline.services.status.checks import check_many
from sms_pipeline.simulator import SimulatorConfig
from sms_pipeline.simulator.runner import SimulatorServer

SEND = "/ip2sms/ "
STATUS = "/ip2sms-request/ "


def simulator(login: str, password: str, logins: tuple[tuple[str, str], ...]) -> SimulatorServer:
    server = SimulatorServer(
        SimulatorConfig(
            host="127.0.0.1", port=0, login=login, password=password, logins=logins, rules=(),
            enroute_after=0.05, deliver_after=0.1,
        )
    )  # fmt: skip
    server.start()
    return server


@pytest.fixture
def two() -> Iterator[tuple[SimulatorServer, SimulatorServer]]:
    a = simulator("gw-a", "pa", (("north-a", "na"), ("south", "sp")))
    b = simulator("gw-b", "pb", (("north-b", "nb"), ("south", "sp")))
    try:
        yield a, b
    finally:
        a.stop()
        b.stop()


def add_gateways(a: SimulatorServer, b: SimulatorServer) -> None:
    with get_engine().begin() as conn:
        for name, server, login, ref in (("a", a, "gw-a", "GW_A_PW"), ("b", b, "gw-b", "GW_B_PW")):
            conn.execute(
                text(
                    "INSERT INTO verification.gateways (name, send_url, status_url, login, "
                    "password_ref) VALUES (:n, :s, :t, :l, :p)"
                ),
                {"n": name, "s": server.send_url, "t": server.status_url, "l": login, "p": ref},
            )
    registry.forget()


def drain(ids: list[Any]) -> None:
    for _ in range(5):
        sending.send_batch(ids=ids)


def test_each_account_sends_with_its_own_login_and_a_missing_password_waits(
    db: Any, settings_env: Any, no_dispatch: list[Any], two: tuple[SimulatorServer, ...]
) -> None:
    a, b = two
    settings_env(
        GW_A_PW="pa", GW_B_PW="pb", NORTH_A="na", NORTH_B="nb", SOUTH_PW="sp",
        IP2SMS_LOGIN="nobody", IP2SMS_PASSWORD="nothing",
    )  # fmt: skip
    add_gateways(a, b)
    with get_engine().begin() as conn:
        conn.execute(
            text(
                "INSERT INTO verification.accounts (name, username, password_ref) VALUES "
                "('north', 'north', NULL), ('south', 'south', 'SOUTH_PW'), "
                "('plain', 'ignored', ''), ('broken', 'broken', 'NO_SUCH_VAR_30')"
            )
        )
        # north names its gateways in order, with a login on each.
        conn.execute(
            text(
                "INSERT INTO verification.account_gateways "
                "(account_id, gateway_id, position, login, password_ref) "
                "SELECT a.id, g.id, CASE g.name WHEN 'a' THEN 0 ELSE 1 END, "
                "'north-' || g.name, CASE g.name WHEN 'a' THEN 'NORTH_A' ELSE 'NORTH_B' END "
                "FROM verification.accounts a, verification.gateways g WHERE a.name = 'north'"
            )
        )
    ids: dict[str, list[Any]] = {}
    for n, account in enumerate(("north", "south", "plain", "broken")):
        ids[account] = enqueue_many(
            [{"phone_number": f"+3809312{n}{i:04d}", "body": f"{account} {i}"} for i in range(20)],
            account=account,
        )
    drain([i for group in ids.values() for i in group])
    # north's first gateway is in rotation: all 20 went there, as north-a.
    login_of = {**a.state.accepted_login, **b.state.accepted_login}
    with session_scope() as session:
        rows = {r.id: r for r in session.scalars(select(SmsLog))}
    expected = {"north": {"north-a"}, "south": {"south"}, "plain": {"gw-a", "gw-b"}}
    for account, logins in expected.items():
        for message_id in ids[account]:
            row = rows[message_id]
            assert row.send_status == "SUBMITTED", (account, row.last_error)
            assert login_of[str(row.uniq_key)] in logins, account
            owner = a if row.uniq_key in a.state.accepted_login else b
            assert row.gateway == ("a" if owner is a else "b")
    # The account whose password cannot be found: nothing sent, waiting, the reason named.
    for message_id in ids["broken"]:
        row = rows[message_id]
        assert row.send_status == "QUEUED" and row.attempts == 0 and row.gateway is None
        assert "password_ref 'NO_SUCH_VAR_30'" in (row.last_error or "")
        assert "never sent with another login" in (row.last_error or "")
    for server in (a, b):
        assert server.state.stats["auth_failures"] == 0
        assert not any("broken" in key for key in server.state.by_login)
    with get_engine().connect() as conn:
        problems = registry.credential_problems(conn, settings_env())
    assert any(p.startswith("account broken: password_ref 'NO_SUCH_VAR_30'") for p in problems)
    # Its first gateway out of rotation: north goes to its second, with its login there.
    with get_engine().begin() as conn:
        conn.execute(text("UPDATE verification.gateways SET active = false WHERE name = 'a'"))
    registry.forget()
    more = enqueue_many(
        [{"phone_number": f"+38093199{i:04d}", "body": f"later {i}"} for i in range(5)],
        account="north",
    )
    drain(more)
    with session_scope() as session:
        later = list(session.scalars(select(SmsLog).where(SmsLog.id.in_(more))))
    assert {r.gateway for r in later} == {"b"}
    assert {b.state.accepted_login[str(r.uniq_key)] for r in later} == {"north-b"}
    # Status checks: each message asked where it was accepted, with its own login there.
    sent = [i for account in ("north", "south", "plain") for i in ids[account]] + more
    check_many(sent)
    for server in (a, b):
        assert server.state.stats["status_unknown"] == 0
        assert server.state.stats["auth_failures"] == 0
    assert a.state.by_login[STATUS + "north-a"] == 20
    assert b.state.by_login[STATUS + "north-b"] == 5
    assert b.state.by_login.get(STATUS + "north-a", 0) == 0


def test_a_gateway_at_its_max_per_second_sends_the_rest_elsewhere(
    db: Any, redis_url: str, settings_env: Any, no_dispatch: list[Any],
    two: tuple[SimulatorServer, ...],
) -> None:  # fmt: skip
    a, b = two
    settings_env(GW_A_PW="pa", GW_B_PW="pb")
    add_gateways(a, b)
    # a: weighted, at most 5 requests a second; b: standby (weight 0).
    with get_engine().begin() as conn:
        conn.execute(text("UPDATE verification.gateways SET max_per_second = 5 WHERE name = 'a'"))
        conn.execute(text("UPDATE verification.gateways SET weight = 0 WHERE name = 'b'"))
    registry.forget()
    ids = enqueue_many(
        [{"phone_number": f"+38093177{i:04d}", "body": f"rate {i}"} for i in range(40)]
    )
    result = sending.send_batch(ids=ids)
    assert result.counts() == {"submitted": 40}
    with session_scope() as session:
        by_gateway = [r.gateway for r in session.scalars(select(SmsLog).where(SmsLog.id.in_(ids)))]
    # One batch takes well under a second: a took its 5 (10 if the batch straddles a
    # second), the standby took the rest instead of the messages waiting.
    assert 5 <= by_gateway.count("a") <= 10, by_gateway.count("a")
    assert by_gateway.count("b") == 40 - by_gateway.count("a")
    assert a.state.stats["accepted"] == by_gateway.count("a")
